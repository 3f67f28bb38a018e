"""LLMClient control flow against an in-test fake provider (no model, no network)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tiny_dsl.runtime.cache import LLMCache, cache_key
from tiny_dsl.runtime.client import (
    BudgetExceeded,
    CallLimitExceeded,
    ClientEvent,
    LLMClient,
    ReplayMiss,
)
from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    InvalidOutput,
    Message,
    ProviderError,
)


class FakeProvider:
    """Answers ``echo:<last message>`` after ``delay`` seconds, first raising ``failures``."""

    name = "fake"
    model = "fake-1"
    supports_json_schema = True

    def __init__(
        self,
        failures: list[Exception] | None = None,
        delay: float | Callable[[ChatRequest], float] = 0.0,
    ) -> None:
        self.failures = list(failures or [])
        self.delay = delay
        self.requests: list[ChatRequest] = []
        self.in_flight = 0
        self.in_flight_at_start: list[int] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        self.in_flight += 1
        self.in_flight_at_start.append(self.in_flight)
        try:
            await asyncio.sleep(self.delay(request) if callable(self.delay) else self.delay)
            if self.failures:
                raise self.failures.pop(0)
            content = request.messages[-1].content
            return ChatResponse(
                text=f"echo:{content}",
                data=None,
                input_tokens=10,
                output_tokens=5,
                provider=self.name,
                model="fake-1-2025",
            )
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        """Nothing to release."""


def ask(content: str, **changes: Any) -> ChatRequest:
    request = ChatRequest(messages=(Message("user", content),), temperature=0.5, max_tokens=10)
    return dataclasses.replace(request, **changes)


def busy(retry_after: float | None = None, status: int = 503) -> ProviderError:
    return ProviderError("busy", retryable=True, status=status, retry_after=retry_after)


def invalid(text: str = "{oops") -> InvalidOutput:
    return InvalidOutput(
        "bad json", text=text, errors=["$: not valid JSON"], input_tokens=3, output_tokens=2
    )


def fast_client(provider: FakeProvider, cache: LLMCache | None = None, **options: Any) -> LLMClient:
    """A client whose default backoff is milliseconds, so retry tests stay fast."""
    return LLMClient(provider, cache, **{"backoff_base_s": 0.001, "backoff_max_s": 1.0, **options})


def test_cache_hit_skips_the_provider(tmp_path: Path) -> None:
    provider = FakeProvider()
    with LLMCache(tmp_path / "c.db") as cache:
        client = fast_client(provider, cache)

        async def run() -> tuple[ChatResponse, ChatResponse]:
            return await client.complete(ask("hi")), await client.complete(ask("hi"))

        first, second = asyncio.run(run())
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text == "echo:hi"
    assert len(provider.requests) == 1
    assert (client.stats.model_calls, client.stats.cache_hits) == (1, 1)
    assert (client.stats.input_tokens, client.stats.output_tokens) == (10, 5)
    assert client.answered_by == {("fake", "fake-1-2025")}


def test_retry_after_is_honoured() -> None:
    provider = FakeProvider(failures=[busy(retry_after=0.05)])
    events: list[ClientEvent] = []
    client = fast_client(provider, on_event=events.append)
    started = time.perf_counter()
    response = asyncio.run(client.complete(ask("hi")))
    elapsed = time.perf_counter() - started
    assert response.text == "echo:hi"
    retries = [e for e in events if e.kind == "retry"]
    assert len(retries) == 1 and 0.05 <= retries[0].delay_s <= 0.05 * 1.25
    assert elapsed >= 0.05
    assert (client.stats.model_calls, client.stats.retries, client.stats.failures) == (2, 1, 0)
    assert [e.kind for e in events] == ["call_started", "retry", "call_finished"]


def test_backoff_is_exponential_jittered_and_deterministic() -> None:
    def delays(content: str) -> list[float]:
        provider = FakeProvider(failures=[busy() for _ in range(4)])
        events: list[ClientEvent] = []
        client = fast_client(provider, on_event=events.append, backoff_base_s=0.002)
        asyncio.run(client.complete(ask(content)))
        return [e.delay_s for e in events if e.kind == "retry"]

    first = delays("hi")
    assert len(first) == 4
    for attempt, delay in enumerate(first, start=1):
        nominal = 0.002 * 2 ** (attempt - 1)
        assert 0.5 * nominal <= delay <= 1.5 * nominal
    assert delays("hi") == first  # jitter is seeded by the request's cache key


def test_retries_stop_after_max_attempts() -> None:
    provider = FakeProvider(failures=[busy() for _ in range(10)])
    client = fast_client(provider, max_attempts=3)
    with pytest.raises(ProviderError, match="busy"):
        asyncio.run(client.complete(ask("hi")))
    assert (client.stats.model_calls, client.stats.retries, client.stats.failures) == (3, 2, 1)


def test_non_retryable_error_is_raised_at_once() -> None:
    provider = FakeProvider(failures=[ProviderError("bad request", status=400)])
    client = fast_client(provider)
    with pytest.raises(ProviderError, match="bad request"):
        asyncio.run(client.complete(ask("hi")))
    assert client.stats.model_calls == 1 and client.stats.retries == 0


def test_overlong_retry_after_fails_instead_of_waiting() -> None:
    provider = FakeProvider(failures=[busy(retry_after=3600, status=429)])
    client = fast_client(provider, backoff_max_s=1.0)
    with pytest.raises(ProviderError, match="retry after 3600 s"):
        asyncio.run(client.complete(ask("hi")))
    assert len(provider.requests) == 1


def test_attempt_timeout_is_retried() -> None:
    first_is_slow = iter([0.3])
    provider = FakeProvider(delay=lambda request: next(first_is_slow, 0.0))
    client = fast_client(provider, attempt_timeout_s=0.05)
    response = asyncio.run(client.complete(ask("hi")))
    assert response.text == "echo:hi"
    assert (client.stats.model_calls, client.stats.retries) == (2, 1)


def test_rate_limiting_halves_concurrency_once_per_burst_then_recovers() -> None:
    provider = FakeProvider(failures=[busy(0.01, 429) for _ in range(8)], delay=0.02)
    limits_at_retry: list[int] = []
    client: LLMClient

    def on_event(event: ClientEvent) -> None:
        if event.kind == "retry":
            limits_at_retry.append(client.concurrency_limit)

    client = fast_client(provider, max_concurrency=8, on_event=on_event)

    async def run() -> list[ChatResponse]:
        return await asyncio.gather(*(client.complete(ask(f"q{i}")) for i in range(16)))

    asyncio.run(run())
    # Eight 429s from calls started under the same limit halve it once, not to 1.
    assert limits_at_retry == [4] * 8
    assert provider.in_flight_at_start[:8] == list(range(1, 9))
    assert max(provider.in_flight_at_start[8:]) < 8
    # Additive increase afterwards, bounded by max_concurrency.
    assert 4 < client.concurrency_limit <= 8


def test_repeated_rate_limiting_never_goes_below_one() -> None:
    provider = FakeProvider(failures=[busy(0.001, 429) for _ in range(5)])
    limits_at_retry: list[int] = []
    client: LLMClient

    def on_event(event: ClientEvent) -> None:
        if event.kind == "retry":
            limits_at_retry.append(client.concurrency_limit)

    client = fast_client(provider, max_concurrency=8, on_event=on_event)
    asyncio.run(client.complete(ask("hi")))
    assert limits_at_retry == [4, 2, 1, 1, 1]
    assert client.concurrency_limit == 2  # one success at limit 1 earns +1


def test_concurrency_never_exceeds_the_limit() -> None:
    provider = FakeProvider(delay=0.005)
    client = fast_client(provider, max_concurrency=3)

    async def run() -> None:
        await asyncio.gather(*(client.complete(ask(f"q{i}")) for i in range(20)))

    asyncio.run(run())
    assert max(provider.in_flight_at_start) == 3


def test_concurrency_respects_the_providers_own_limit() -> None:
    provider = FakeProvider(delay=0.005)
    provider.max_parallel_calls = 2  # type: ignore[attr-defined]
    client = fast_client(provider, max_concurrency=8)

    async def run() -> None:
        await asyncio.gather(*(client.complete(ask(f"q{i}")) for i in range(10)))

    asyncio.run(run())
    assert client.concurrency_limit == 2
    assert max(provider.in_flight_at_start) == 2


def test_answer_room_comes_from_the_provider_when_it_knows() -> None:
    class SmallContext(FakeProvider):
        async def answer_room(self, messages: tuple[Message, ...]) -> int:
            return 100 - sum(len(m.content) for m in messages)

    messages = (Message("user", "twelve chars"),)

    async def rooms() -> tuple[int | None, int | None]:
        return (
            await fast_client(FakeProvider()).answer_room(messages),
            await fast_client(SmallContext()).answer_room(messages),
        )

    assert asyncio.run(rooms()) == (None, 88)


def test_replay_miss_raises_without_calling_the_provider(tmp_path: Path) -> None:
    provider = FakeProvider()
    with LLMCache(tmp_path / "c.db") as cache:
        asyncio.run(fast_client(provider, cache).complete(ask("recorded")))
        replay = fast_client(provider, cache, mode="replay")
        assert asyncio.run(replay.complete(ask("recorded"))).cached
        with pytest.raises(ReplayMiss, match="no recorded answer"):
            asyncio.run(replay.complete(ask("never seen", purpose="act")))
    assert len(provider.requests) == 1
    assert replay.stats.model_calls == 0


def test_replay_requires_a_cache() -> None:
    with pytest.raises(ValueError, match="replay"):
        LLMClient(FakeProvider(), None, mode="replay")


def test_fresh_mode_ignores_recorded_answers_but_stays_consistent(tmp_path: Path) -> None:
    provider = FakeProvider()
    request = ask("hi")
    key = cache_key(provider.name, provider.model, request)
    with LLMCache(tmp_path / "c.db") as cache:
        stale = ChatResponse("stale", None, 1, 1, "fake", "old-model")
        cache.put(key, request, stale)
        client = fast_client(provider, cache, mode="fresh")

        async def run() -> tuple[ChatResponse, ChatResponse]:
            return await client.complete(request), await client.complete(request)

        first, again = asyncio.run(run())
        assert first.text == "echo:hi" and not first.cached
        assert again.text == "echo:hi" and again.cached  # same run: same answer
        stored = cache.get(key)
    assert stored is not None and stored.text == "echo:hi"
    assert len(provider.requests) == 1


def test_budget_stops_before_the_call() -> None:
    # $1 per token: a 40-character prompt (~10 tokens) + max_tokens 10 is estimated at $20.
    prompt = "x" * 40
    provider = FakeProvider()
    client = fast_client(provider, budget_usd=15.0, price=(1e6, 1e6))
    with pytest.raises(BudgetExceeded, match="budget"):
        asyncio.run(client.complete(ask(prompt)))
    assert provider.requests == []

    client = fast_client(provider, budget_usd=25.0, price=(1e6, 1e6))
    asyncio.run(client.complete(ask(prompt)))
    assert client.stats.cost_usd == pytest.approx(15.0)  # 10 input + 5 output tokens
    with pytest.raises(BudgetExceeded):
        asyncio.run(client.complete(ask(prompt + "y")))
    assert len(provider.requests) == 1


def test_budget_accounts_for_calls_in_flight() -> None:
    provider = FakeProvider(delay=0.02)
    client = fast_client(provider, budget_usd=45.0, price=(1e6, 1e6))

    async def run() -> list[ChatResponse | BaseException]:
        calls = (client.complete(ask("x" * 40 + str(i))) for i in range(3))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    assert [type(r).__name__ for r in results] == ["ChatResponse", "ChatResponse", "BudgetExceeded"]


def test_call_limit() -> None:
    provider = FakeProvider()
    client = fast_client(provider, max_calls=2)

    async def run() -> None:
        await client.complete(ask("a"))
        await client.complete(ask("b"))
        await client.complete(ask("c"))

    with pytest.raises(CallLimitExceeded, match="max_calls=2"):
        asyncio.run(run())
    assert len(provider.requests) == 2


def test_repair_loop_is_bounded() -> None:
    provider = FakeProvider(failures=[invalid() for _ in range(5)])
    client = fast_client(provider)
    with pytest.raises(InvalidOutput):
        asyncio.run(client.complete(ask("hi")))
    assert len(provider.requests) == 3  # the original and two repairs
    assert client.stats.repairs == 2 and client.stats.failures == 1
    assert (client.stats.input_tokens, client.stats.output_tokens) == (9, 6)
    repair = provider.requests[1]
    assert repair.messages[0] == Message("user", "hi")
    assert repair.messages[1] == Message("assistant", "{oops")
    assert "$: not valid JSON" in repair.messages[2].content
    # Repairs restart from the original conversation rather than piling up.
    assert len(provider.requests[2].messages) == 3


def test_a_repair_that_would_overflow_the_context_asks_afresh() -> None:
    class SmallContext(FakeProvider):
        """Room for the question and its answer, not for a quoted rejected answer too."""

        async def answer_room(self, messages: tuple[Message, ...]) -> int:
            return 30 - sum(len(m.content) for m in messages)

    provider = SmallContext(failures=[invalid("{" + "x" * 40), invalid()])
    request = ask("hi", seed=7)
    response = asyncio.run(fast_client(provider).complete(request))
    assert [r.messages for r in provider.requests] == [request.messages] * 3
    assert [r.seed for r in provider.requests] == [7, 8, 9]
    assert response.text == "echo:hi"


def test_repaired_answer_is_cached_under_the_original_request(tmp_path: Path) -> None:
    provider = FakeProvider(failures=[invalid()])
    request = ask("hi")
    with LLMCache(tmp_path / "c.db") as cache:
        response = asyncio.run(fast_client(provider, cache).complete(request))
        stored = cache.get(cache_key(provider.name, provider.model, request))
    assert stored is not None and stored.text == response.text
    assert response.text.startswith("echo:Your previous reply was rejected")


class RecordingCache(LLMCache):
    """Notes what the client's stats looked like at the moment an answer was stored."""

    client: LLMClient
    seen: list[tuple[str, int]]

    async def aput(self, key: str, request: ChatRequest, response: ChatResponse) -> None:
        await super().aput(key, request, response)
        self.seen.append((response.text, self.client.stats.output_tokens))


def test_answer_is_cached_before_it_is_returned(tmp_path: Path) -> None:
    provider = FakeProvider()
    cache = RecordingCache(tmp_path / "c.db")
    cache.seen = []
    client = fast_client(provider, cache)
    cache.client = client
    response = asyncio.run(client.complete(ask("hi")))
    # The write finished before the stats were updated and before complete() returned.
    assert cache.seen == [("echo:hi", 0)]
    assert client.stats.output_tokens == 5 and response.text == "echo:hi"
    cache.close()


def test_failed_cache_write_means_no_answer(tmp_path: Path) -> None:
    class FullDisk(LLMCache):
        async def aput(self, key: str, request: ChatRequest, response: ChatResponse) -> None:
            raise OSError("disk full")

    with FullDisk(tmp_path / "c.db") as cache:
        client = fast_client(FakeProvider(), cache)
        with pytest.raises(OSError, match="disk full"):
            asyncio.run(client.complete(ask("hi")))
    assert client.stats.failures == 1
    assert client.stats.output_tokens == 5  # paid for, so counted, though not recorded


def test_results_do_not_depend_on_completion_order() -> None:
    prompts = [f"q{i % 7}" for i in range(30)]  # includes identical requests

    def run(seed: int) -> tuple[list[str], FakeProvider]:
        delays = random.Random(seed)
        provider = FakeProvider(delay=lambda request: delays.random() / 100)
        client = fast_client(provider, max_concurrency=5)

        async def go() -> list[ChatResponse]:
            return await asyncio.gather(*(client.complete(ask(p)) for p in prompts))

        return [r.text for r in asyncio.run(go())], provider

    first, first_provider = run(1)
    second, _ = run(2)
    assert first == second == [f"echo:{p}" for p in prompts]
    # Identical in-flight requests share one provider call.
    assert len(first_provider.requests) == 7


def test_identical_concurrent_requests_share_one_call(tmp_path: Path) -> None:
    provider = FakeProvider(delay=0.01)
    with LLMCache(tmp_path / "c.db") as cache:
        client = fast_client(provider, cache)

        async def run() -> list[ChatResponse]:
            return await asyncio.gather(*(client.complete(ask("same")) for _ in range(4)))

        results = asyncio.run(run())
    assert [r.cached for r in results] == [False, True, True, True]
    assert {r.text for r in results} == {"echo:same"}
    assert (client.stats.model_calls, client.stats.cache_hits) == (1, 3)


def test_replicates_are_separate_calls() -> None:
    provider = FakeProvider()
    client = fast_client(provider)

    async def run() -> None:
        await asyncio.gather(*(client.complete(ask("same", replicate=i)) for i in range(3)))

    asyncio.run(run())
    assert len(provider.requests) == 3


def test_cancelled_caller_does_not_break_a_shared_call() -> None:
    provider = FakeProvider(delay=0.03)
    client = fast_client(provider)

    async def run() -> ChatResponse:
        first = asyncio.ensure_future(client.complete(ask("same")))
        second = asyncio.ensure_future(client.complete(ask("same")))
        await asyncio.sleep(0.005)
        first.cancel()
        return await second

    assert asyncio.run(run()).text == "echo:same"
    assert len(provider.requests) == 1
