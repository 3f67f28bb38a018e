"""The single entry point the engine uses for model calls.

:class:`LLMClient` layers, in order: cache lookup (or replay-only), joining of identical
in-flight requests, an adaptive concurrency limit, budget and call-count guards, per-
attempt timeouts, retries with deterministic jittered backoff, and bounded repair of
answers that do not match their JSON schema.  Every answer is written to the cache
before it is returned, so whatever the engine acts on has been recorded.

Results never depend on completion order: an answer is a function of its request (and
the cache), identical concurrent requests share one answer, and backoff jitter comes
from a generator seeded by the request's cache key.  Callers that issue many calls at
once should use ``asyncio.gather``, which returns results in input order.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from tiny_dsl.runtime.cache import LLMCache, cache_key
from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    InvalidOutput,
    Message,
    Provider,
    ProviderError,
)

__all__ = [
    "BudgetExceeded",
    "CallLimitExceeded",
    "ClientError",
    "ClientEvent",
    "ClientStats",
    "LLMClient",
    "ReplayMiss",
]

Mode = Literal["normal", "replay", "fresh"]
EventKind = Literal["call_started", "call_finished", "call_failed", "retry"]

MAX_REPAIRS = 2
# Characters per token used to estimate prompt size before a call (for the budget guard).
_CHARS_PER_TOKEN = 4
# How much of a rejected answer is quoted back in a repair prompt.
_REPAIR_QUOTE_CHARS = 4000
# Seeds stay within 31 bits, which every provider's seed parameter accepts.
_SEED_MASK = 0x7FFFFFFF


class ClientError(Exception):
    """A call the client refused to make (replay miss, budget, call limit)."""


class ReplayMiss(ClientError):
    """Replay mode found no recorded answer for a request."""


class BudgetExceeded(ClientError):
    """Making the call could push spending past ``budget_usd``."""


class CallLimitExceeded(ClientError):
    """``max_calls`` calls have already been sent to the provider."""


@dataclass(frozen=True)
class ClientEvent:
    """Progress notification.

    ``call_started``/``call_finished``/``call_failed`` come once per requested call
    (``cached`` marks answers that needed no model call); ``retry`` comes before each
    re-send, with the reason and the delay about to be waited.
    """

    kind: EventKind
    key: str
    purpose: str
    cached: bool = False
    reason: str = ""
    delay_s: float = 0.0


@dataclass
class ClientStats:
    """Counters for the run report.

    ``model_calls`` counts requests sent to the provider, including retries and repairs;
    ``cache_hits`` counts answers obtained without a call (from the cache, or by joining
    an identical request already in flight).  Tokens and cost include answers that
    failed validation, since those were paid for too.
    """

    model_calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    repairs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    failures: int = 0


class _AdaptiveLimit:
    """Concurrency limit that halves on rate limiting and creeps back up (AIMD).

    A burst of 429s from calls started under the same limit halves it only once: each
    slot remembers the "epoch" it was granted in, and only a 429 from the current epoch
    counts.  After ``limit`` successes in a row the limit grows by one, up to the maximum.
    Waiters are served first-come first-served.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self._in_flight = 0
        self._epoch = 0
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch to pass to :meth:`rate_limited`."""
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return self._epoch
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.release()
            raise
        return self._epoch

    def release(self) -> None:
        self._in_flight -= 1
        self._grant()

    def succeeded(self) -> None:
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.maximum:
            self.limit += 1
            self._successes = 0
            self._grant()

    def rate_limited(self, epoch: int) -> None:
        if epoch == self._epoch:
            self.limit = max(1, self.limit // 2)
            self._epoch += 1
            self._successes = 0

    def _grant(self) -> None:
        # Slots are handed over (counted here) so a newcomer cannot overtake a waiter.
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)


class LLMClient:
    """Cached, rate-adaptive, budget-aware access to one provider.

    ``mode`` is ``"normal"`` (use the cache, call the model on a miss), ``"replay"``
    (cache only; a miss raises :class:`ReplayMiss`) or ``"fresh"`` (ignore recorded
    answers, call the model, record the new answers).  ``price`` is USD per million
    input and output tokens.  ``backoff_base_s``/``backoff_max_s`` shape the retry delays;
    a server asking to wait longer than ``backoff_max_s`` fails the call instead.
    Concurrency never exceeds the provider's optional ``max_parallel_calls``.
    """

    def __init__(
        self,
        provider: Provider,
        cache: LLMCache | None,
        *,
        mode: Mode = "normal",
        max_concurrency: int = 8,
        max_attempts: int = 6,
        attempt_timeout_s: float = 120.0,
        budget_usd: float | None = None,
        price: tuple[float, float] = (0.0, 0.0),
        max_calls: int | None = None,
        on_event: Callable[[ClientEvent], None] | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        if mode == "replay" and cache is None:
            raise ValueError("replay mode needs a cache to replay from")
        if max_concurrency < 1 or max_attempts < 1:
            raise ValueError("max_concurrency and max_attempts must be at least 1")
        self.provider = provider
        self.cache = cache
        self.mode: Mode = mode
        self.stats = ClientStats()
        self.answered_by: set[tuple[str, str]] = set()
        # Calls asked for (answered from the cache or not) by the model they were for.
        self.calls_by_model: collections.Counter[str] = collections.Counter()
        # A provider that can only run a few calls at once (the embedded model runs one)
        # says so; queueing more inside it would only make calls time out while waiting.
        provider_cap: int | None = getattr(provider, "max_parallel_calls", None)
        self._limit = _AdaptiveLimit(min(max_concurrency, provider_cap or max_concurrency))
        self._max_attempts = max_attempts
        self._attempt_timeout_s = attempt_timeout_s
        self._budget_usd = budget_usd
        self._price_in, self._price_out = price
        self._max_calls = max_calls
        self._on_event = on_event
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._reserved_usd = 0.0
        self._pending: dict[str, asyncio.Task[ChatResponse]] = {}
        # Keys answered by the provider during this client's life.  Fresh mode ignores
        # answers recorded by earlier runs, but not these: within one run, identical
        # requests must keep getting the same answer.
        self._answered: set[str] = set()

    @property
    def concurrency_limit(self) -> int:
        """Current adaptive limit on simultaneous provider calls."""
        return self._limit.limit

    async def answer_room(self, messages: tuple[Message, ...]) -> int | None:
        """Tokens the model's context leaves for an answer after ``messages`` (None: no limit)."""
        measure = getattr(self.provider, "answer_room", None)
        return None if measure is None else int(await measure(messages))

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer ``request`` from the cache or the provider (see the class docstring)."""
        identity = getattr(self.provider, "cache_identity", self.provider.name)
        # An agent's own model replaces the provider's in the key; None keeps v1 keys.
        model = request.model or self.provider.model
        self.calls_by_model[model] += 1
        key = cache_key(identity, model, request)
        if self.cache is not None and (self.mode != "fresh" or key in self._answered):
            hit = self.cache.get(key)
            if hit is not None:
                self._record_hit(key, request, hit)
                return hit
        if self.mode == "replay":
            raise ReplayMiss(
                f"replay: no recorded answer for this call (purpose "
                f"{request.purpose or 'unspecified'}, key {key[:16]}) in "
                f"{self.cache.path if self.cache else 'the cache'}; the "
                "scenario, prompts or model settings changed since the recorded run; "
                "run without replay to call the model"
            )
        pending = self._pending.get(key)
        if pending is not None:
            shared = replace(await asyncio.shield(pending), cached=True)
            self._record_hit(key, request, shared)
            return shared
        task = asyncio.ensure_future(self._produce(key, request))
        self._pending[key] = task
        task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[ChatResponse]) -> None:
        del self._pending[key]
        # Mark the outcome as seen: if every caller was cancelled nobody else will.
        if not task.cancelled():
            task.exception()

    async def _produce(self, key: str, request: ChatRequest) -> ChatResponse:
        self._emit(ClientEvent("call_started", key, request.purpose))
        try:
            response = await self._answer(key, request)
            await self._record(key, request, response)
        except Exception as exc:
            self.stats.failures += 1
            self._emit(ClientEvent("call_failed", key, request.purpose, reason=str(exc)))
            raise
        self.answered_by.add((response.provider, response.model))
        self._emit(ClientEvent("call_finished", key, request.purpose))
        return response

    async def _answer(self, key: str, request: ChatRequest) -> ChatResponse:
        """A schema-valid answer, re-asking at most ``MAX_REPAIRS`` times with the errors."""
        rng = random.Random(key)
        attempt = request
        repairs = 0
        while True:
            try:
                return await self._send_with_retries(key, attempt, rng)
            except InvalidOutput as exc:
                self._add_usage(exc.input_tokens, exc.output_tokens)
                if repairs == MAX_REPAIRS:
                    raise
                repairs += 1
                self.stats.repairs += 1
                self._emit(ClientEvent("retry", key, request.purpose, reason=str(exc)))
                attempt = _repair_request(request, exc)
                room = await self.answer_room(attempt.messages)
                if room is not None and room < attempt.max_tokens:
                    # Quoting the rejected answer would overflow the model's context (a
                    # long prompt on the embedded model): ask afresh with another seed.
                    attempt = replace(request, seed=(request.seed + repairs) & _SEED_MASK)

    async def _record(self, key: str, request: ChatRequest, response: ChatResponse) -> None:
        """Write the answer to the cache first, then count it.

        Nothing may act on an answer that is not recorded.  While the write is being
        flushed the answer's cost counts as in flight, so the budget guard never
        overlooks it; the tokens are counted even if the write fails, as they were paid.
        """
        cost = self._cost(response.input_tokens, response.output_tokens)
        self._reserved_usd += cost
        try:
            if self.cache is not None:
                await self.cache.aput(key, request, response)
            self._answered.add(key)
        finally:
            self._reserved_usd -= cost
            self._add_usage(response.input_tokens, response.output_tokens)

    async def _send_with_retries(
        self, key: str, request: ChatRequest, rng: random.Random
    ) -> ChatResponse:
        attempt = 0
        while True:
            attempt += 1
            epoch = await self._limit.acquire()
            try:
                reserved = self._admit(request)
                self.stats.model_calls += 1
                try:
                    response = await asyncio.wait_for(
                        self.provider.complete(request), self._attempt_timeout_s
                    )
                except InvalidOutput:
                    self._limit.succeeded()
                    raise
                except TimeoutError:
                    error = ProviderError(
                        f"{self.provider.name}: no answer within {self._attempt_timeout_s:g} s",
                        retryable=True,
                    )
                except ProviderError as exc:
                    error = exc
                else:
                    self._limit.succeeded()
                    return response
                finally:
                    self._reserved_usd -= reserved
            finally:
                self._limit.release()
            if error.status == 429:
                self._limit.rate_limited(epoch)
            if not error.retryable or attempt >= self._max_attempts:
                raise error
            if error.retry_after is not None and error.retry_after > self._backoff_max_s:
                raise ProviderError(
                    f"{error} (the server asks to retry after {error.retry_after:g} s, longer "
                    f"than the {self._backoff_max_s:g} s this client waits)",
                    status=error.status,
                    retry_after=error.retry_after,
                ) from error
            delay = self._backoff(attempt, error, rng)
            self.stats.retries += 1
            self._emit(ClientEvent("retry", key, request.purpose, reason=str(error), delay_s=delay))
            await asyncio.sleep(delay)

    def _admit(self, request: ChatRequest) -> float:
        """Refuse a call that could break the call or spending limits; reserve its cost."""
        if self._max_calls is not None and self.stats.model_calls >= self._max_calls:
            raise CallLimitExceeded(
                f"call limit reached: {self.stats.model_calls} model calls already sent "
                f"(max_calls={self._max_calls})"
            )
        prompt_chars = sum(len(m.content) for m in request.messages)
        estimate = self._cost(prompt_chars / _CHARS_PER_TOKEN, request.max_tokens)
        if self._budget_usd is not None:
            committed = self.stats.cost_usd + self._reserved_usd
            if committed + estimate > self._budget_usd:
                raise BudgetExceeded(
                    f"budget of ${self._budget_usd:.4f} would be exceeded: "
                    f"${self.stats.cost_usd:.4f} spent, ${self._reserved_usd:.4f} in flight, "
                    f"next call estimated at up to ${estimate:.4f}"
                )
        self._reserved_usd += estimate
        return estimate

    def _backoff(self, attempt: int, error: ProviderError, rng: random.Random) -> float:
        jitter = rng.random()
        if error.retry_after is not None:
            # Never earlier than the server asked; the jitter spreads out a burst of callers.
            return error.retry_after * (1.0 + 0.25 * jitter)
        exponential = min(self._backoff_max_s, self._backoff_base_s * 2 ** (attempt - 1))
        return exponential * (0.5 + jitter)

    def _cost(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self._price_in + output_tokens * self._price_out) / 1_000_000

    def _add_usage(self, input_tokens: int, output_tokens: int) -> None:
        self.stats.input_tokens += input_tokens
        self.stats.output_tokens += output_tokens
        self.stats.cost_usd += self._cost(input_tokens, output_tokens)

    def _record_hit(self, key: str, request: ChatRequest, response: ChatResponse) -> None:
        self.stats.cache_hits += 1
        self.answered_by.add((response.provider, response.model))
        self._emit(ClientEvent("call_finished", key, request.purpose, cached=True))

    def _emit(self, event: ClientEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)


def _repair_request(original: ChatRequest, failure: InvalidOutput) -> ChatRequest:
    """The original request plus the rejected answer and what was wrong with it."""
    problems = "\n".join(f"- {error}" for error in failure.errors[:10])
    feedback = (
        "Your previous reply was rejected because it does not match the required JSON "
        f"schema:\n{problems}\nReply again with only the corrected JSON."
    )
    return replace(
        original,
        messages=(
            *original.messages,
            Message("assistant", failure.text[:_REPAIR_QUOTE_CHARS]),
            Message("user", feedback),
        ),
    )
