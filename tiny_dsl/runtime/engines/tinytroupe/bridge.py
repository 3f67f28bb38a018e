"""TinyTroupe's model calls, routed through tiny_dsl's `LLMClient`.

TinyTroupe asks its client registry for a client and calls
`send_message(messages, ..., response_format=...)` synchronously, from whatever
thread the agent is acting in. `TinyDslClient` is registered as that client
(API type `tiny_dsl`). It turns each call into a `ChatRequest` and runs
`LLMClient.complete` on the event loop the engine's step was awaited on, with
`asyncio.run_coroutine_threadsafe`; the calling thread blocks until the answer
arrives, while the loop stays free to run every other call. So TinyTroupe gets
our providers (embedded model, OpenAI-compatible servers, OpenAI, Azure), our
cache, retries, budget, call limit and cost accounting.

Mapping a call:

* `response_format` as a pydantic model class (TinyTroupe's
  `CognitiveActionsModel` for an agent turn) becomes a JSON schema with every
  string and list bounded (the bounds of the built-in engine's turn schema:
  grammar-constrained small models otherwise ramble until the JSON never
  closes) and action types restricted to TALK, THINK and DONE; `max_tokens`
  covers the longest schema-valid answer. When the model's context cannot
  hold that answer after the prompt (the embedded model's 8k window, a
  persona long enough), the turn is allowed fewer and shorter actions
  (`_SHORTER_ANSWERS`) instead of being refused; the attached session counts
  such turns for the run's notes. The validated answer goes back as JSON
  text, or as the pydantic object when TinyTroupe asks for one.
* Calls TinyTroupe makes without a schema (the `ResultsExtractor`) take the
  schema, temperature and token limit from the `CallContext` the engine set on
  the calling thread, so extraction is schema-constrained too.
* Seeds come from the plan seed and what the context says the call is (step,
  agent, and the number of calls that agent made in the step), never from
  timing; TinyTroupe's own `temperature` is used only when the context sets none
  and TinyTroupe passed one, else the scenario's temperature.

TinyTroupe's `max_completion_tokens`, `timeout`, `max_attempts`, `waiting_time`
and backoff arguments are ignored: limits, timeouts and retries are the
`LLMClient`'s job. Errors propagate as exceptions instead of TinyTroupe's
`None` (which its callers turn into confusing `TypeError`s).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import copy
import dataclasses
import functools
import json
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tiny_dsl.runtime.client import ClientStats
from tiny_dsl.runtime.engines.prompts import derive_seed
from tiny_dsl.runtime.engines.turns import (
    ACTION_TYPES,
    CONTENT_MAX_CHARS,
    MAX_ACTIONS,
    STATE_MAX_CHARS,
    TARGET_MAX_CHARS,
)
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, Message
from tiny_dsl.runtime.quality import ECHO_WINDOW, turn_flags

__all__ = [
    "ACTION_TYPES",
    "FULL_ANSWER",
    "AgentSettings",
    "AnswerLimits",
    "CallContext",
    "TinyDslClient",
    "call_context",
    "schema_for_model",
    "with_answer_limits",
    "worst_case_tokens",
]

# TinyTroupe's REACH_OUT is left out of `ACTION_TYPES`: who can reach whom is fixed by
# the world's mode.

# Bounds for strings and lists a pydantic model leaves open.
DEFAULT_STRING_CHARS = 400
DEFAULT_ARRAY_ITEMS = 8
# `max_tokens` for a call with no schema (free text, e.g. TinyTroupe's LLMChat).
TEXT_MAX_TOKENS = 1024
# How often a thread waiting for an answer checks that the event loop is still alive.
_POLL_S = 1.0

# Per-property bounds for TinyTroupe's agent-turn models, keyed `Model.property`
# (`[]` addresses a list's items). They match the built-in engine's turn schema.
_OVERRIDES: dict[str, dict[str, Any]] = {
    "Action.type": {"enum": list(ACTION_TYPES)},
    "Action.content": {"maxLength": CONTENT_MAX_CHARS},
    "Action.target": {"maxLength": TARGET_MAX_CHARS},  # unless restricted to names present
    "CognitiveActionsModel.actions": {"maxItems": MAX_ACTIONS},
    "CognitiveActionsModelWithReasoning.actions": {"maxItems": MAX_ACTIONS},
    "CognitiveState.goals": {"maxLength": STATE_MAX_CHARS},
    "CognitiveState.attention": {"maxLength": STATE_MAX_CHARS},
    "CognitiveState.emotions": {"maxLength": STATE_MAX_CHARS},
    "CognitiveState.context": {"maxItems": 3},
    "CognitiveState.context[]": {"maxLength": STATE_MAX_CHARS},
}


class CompletingClient(Protocol):
    """The part of `LLMClient` the bridge needs."""

    stats: ClientStats

    async def answer_room(self, messages: tuple[Message, ...]) -> int | None: ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


@dataclass(frozen=True, order=True)
class AnswerLimits:
    """An agent turn's answer limits: at most `actions` actions of `content_chars` each."""

    actions: int
    content_chars: int

    def __str__(self) -> str:
        actions = "1 action" if self.actions == 1 else f"{self.actions} actions"
        return f"{actions} of at most {self.content_chars} characters"


FULL_ANSWER = AnswerLimits(MAX_ACTIONS, CONTENT_MAX_CHARS)
# The limits an agent turn falls back to, in order, when the model's context cannot
# hold its longest full answer. Fewer actions go first: TinyTroupe asks again when a
# turn ends without DONE, where a shorter TALK loses what the person says.
_SHORTER_ANSWERS = tuple(
    AnswerLimits(actions, content_chars)
    for actions, content_chars in (
        (3, CONTENT_MAX_CHARS),
        (2, CONTENT_MAX_CHARS),
        (2, 240),
        (1, 240),
        (1, 120),
    )
)


@dataclass
class CallContext:
    """What the engine knows about the calls about to be made on this thread.

    `seed_parts` identify the calls (step id, agent id); `calls` counts the
    calls made so far under this context, so retries and successive turns get
    distinct but reproducible seeds. `targets`, when set, are the names an
    agent's TALK may address (besides "" for everyone present), as in the
    built-in engine: a closed list means speech always reaches someone who is
    there, and a small model cannot misspell a name. `json_schema` applies to
    calls TinyTroupe makes without a schema (its `ResultsExtractor`);
    `max_tokens` and `temperature`, when set, override what the schema and
    TinyTroupe would give.
    """

    purpose: str
    seed_parts: tuple[str | int, ...]
    targets: tuple[str, ...] | None = None
    json_schema: dict[str, Any] | None = None
    schema_name: str = "response"
    max_tokens: int | None = None
    temperature: float | None = None
    calls: int = 0
    # The agent the calls are for: its own model and temperature (`AgentSettings`)
    # apply, the context's `temperature` still winning (an extraction reads at 0).
    agent: str | None = None


@dataclass(frozen=True)
class AgentSettings:
    """An agent's own `model` / `temperature` (None: the scenario's)."""

    model: str | None
    temperature: float | None


_local = threading.local()
T = TypeVar("T")


@contextlib.contextmanager
def call_context(context: CallContext) -> Iterator[CallContext]:
    """Make `context` apply to TinyTroupe calls from this thread for the `with` body."""
    previous = getattr(_local, "context", None)
    _local.context = context
    try:
        yield context
    finally:
        _local.context = previous


@dataclass(frozen=True)
class _Session:
    client: CompletingClient
    loop: asyncio.AbstractEventLoop
    seed: int
    temperature: float
    agents: Mapping[str, AgentSettings]
    # Agent turns given shorter answer limits to fit the context, by limits.
    shortened: collections.Counter[AnswerLimits] = field(default_factory=collections.Counter)
    # `quality { regenerate N }`, and the actions asked again / still flagged after it.
    regenerate: int = 0
    regenerated: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TinyDslClient:
    """The client TinyTroupe's registry hands out (see the module docstring).

    One instance serves the process; the engine attaches its `LLMClient` and
    event loop for the duration of each step (engines take turns, see
    `tiny_dsl.runtime.engines.tinytroupe.engine`).
    """

    def __init__(self, dedent: Any) -> None:
        self._dedent = dedent  # tinytroupe.utils.dedent, applied as TinyTroupe's client does
        self._session: _Session | None = None

    @contextlib.contextmanager
    def attached(
        self,
        client: CompletingClient,
        loop: asyncio.AbstractEventLoop,
        *,
        seed: int,
        temperature: float,
        agents: Mapping[str, AgentSettings] | None = None,
        regenerate: int = 0,
    ) -> Iterator[_Session]:
        """Route calls to `client` on `loop` inside the `with` body.

        `agents`: the agents with their own model or temperature, by id;
        `regenerate`: how many times a flagged action is asked again. Yields the
        session, whose counters (`shortened`: agent turns that got shorter answer
        limits to fit the model's context, by limits; `regenerated`) are final
        once the body is done.
        """
        self._session = _Session(
            client, loop, seed, temperature, dict(agents or {}), regenerate=regenerate
        )
        try:
            yield self._session
        finally:
            self._session = None

    def send_message(
        self,
        current_messages: list[dict[str, Any]],
        dedent_messages: bool = True,
        model: str | None = None,
        temperature: float | None = None,
        max_completion_tokens: int | None = None,
        top_p: float | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        stop: Any = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        waiting_time: float | None = None,
        exponential_backoff_factor: float | None = None,
        n: int = 1,
        response_format: Any = None,
        enable_pydantic_model_return: bool = False,
        echo: bool = False,
    ) -> Any:
        """TinyTroupe's `OpenAIClient.send_message` signature; see the module docstring."""
        session = self._session
        if session is None:
            raise RuntimeError(
                "TinyTroupe made a model call outside a tiny_dsl engine step; "
                "only TinyTroupeEngine may drive TinyTroupe in this process"
            )
        request = self._request(session, current_messages, temperature, response_format)
        response = self._await(session, functools.partial(session.client.complete, request))
        if session.regenerate and _is_action(request):
            response = self._regenerate(session, request, response)
        if request.json_schema is None:
            return {"role": "assistant", "content": response.text}
        if enable_pydantic_model_return and _is_model_class(response_format):
            return response_format.model_validate(response.data)
        return {"role": "assistant", "content": json.dumps(response.data, ensure_ascii=False)}

    def set_api_cache(self, cache_api_calls: bool, cache_file_name: str | None = None) -> None:
        """Accepted and ignored: every answer is cached by tiny_dsl's LLM cache."""

    def get_cost_stats(self) -> dict[str, int]:
        """TinyTroupe's cost-stats shape, from the attached `LLMClient`'s counters."""
        session = self._session
        stats = session.client.stats if session is not None else ClientStats()
        return {
            "input_tokens": stats.input_tokens,
            "output_tokens": stats.output_tokens,
            "total_tokens": stats.input_tokens + stats.output_tokens,
            "model_calls": stats.model_calls,
            "cached_calls": stats.cache_hits,
        }

    def get_embedding(self, text: str, model: str | None = None) -> list[float]:
        """Embeddings are not routed: semantic memory and grounding stay disabled."""
        raise NotImplementedError(
            "tiny_dsl does not provide embeddings to TinyTroupe (semantic memory is disabled)"
        )

    # -- internals ------------------------------------------------------------------

    def _regenerate(
        self, session: _Session, request: ChatRequest, response: ChatResponse
    ) -> ChatResponse:
        """`quality { regenerate N }`: while the action is flagged (`runtime.quality`),
        ask again with a seed of its own, up to N times. TinyTroupe asks for one action
        per call and refuses repeats itself, so an action is checked for being empty,
        a placeholder, or an echo of what was said to the agent since its last action."""
        for attempt in range(1, session.regenerate + 1):
            if not _action_flags(request, response):
                return response
            with session.lock:
                session.regenerated["asked again"] += 1
            again = dataclasses.replace(
                request, seed=derive_seed(request.seed, "regenerate", attempt)
            )
            response = self._await(session, functools.partial(session.client.complete, again))
        if _action_flags(request, response):
            with session.lock:
                session.regenerated["still flagged"] += 1
        return response

    def _request(
        self,
        session: _Session,
        current_messages: list[dict[str, Any]],
        temperature: float | None,
        response_format: Any,
    ) -> ChatRequest:
        context: CallContext | None = getattr(_local, "context", None)
        messages = tuple(
            Message(str(m["role"]), self._dedent(_text(m.get("content", ""))))
            for m in current_messages
        )
        schema: dict[str, Any] | None = None
        schema_name = "response"
        if _is_model_class(response_format):
            schema = schema_for_model(response_format)
            schema_name = response_format.__name__
            if context is not None and context.targets is not None:
                schema = _with_targets(schema, context.targets)
            if context is None or context.max_tokens is None:
                schema = self._fit_answer(session, messages, schema)
        elif context is not None and context.json_schema is not None:
            schema, schema_name = context.json_schema, context.schema_name
        if context is not None and context.max_tokens is not None:
            max_tokens = context.max_tokens
        elif schema is not None:
            max_tokens = worst_case_tokens(schema)
        else:
            max_tokens = TEXT_MAX_TOKENS
        own = session.agents.get(context.agent) if context and context.agent else None
        if own is not None and own.temperature is not None:
            temperature = own.temperature
        if context is not None and context.temperature is not None:
            temperature = context.temperature
        if context is None:
            # A call the engine did not anticipate: seed it from its content.
            parts: tuple[str | int, ...] = (
                "unattributed",
                json.dumps(current_messages, default=str),
            )
            purpose = "tinytroupe"
        else:
            parts = (*context.seed_parts, context.calls)
            context.calls += 1
            purpose = context.purpose
        return ChatRequest(
            messages=messages,
            temperature=session.temperature if temperature is None else float(temperature),
            max_tokens=max_tokens,
            json_schema=schema,
            schema_name=schema_name,
            seed=derive_seed(session.seed, "tinytroupe", *parts),
            purpose=purpose,
            model=own.model if own is not None else None,
        )

    def _fit_answer(
        self, session: _Session, messages: tuple[Message, ...], schema: dict[str, Any]
    ) -> dict[str, Any]:
        """`schema`, or the first of `_SHORTER_ANSWERS` whose longest answer fits the context.

        When not even the shortest fits, `schema` is returned unchanged and the
        provider refuses the prompt as too long, saying so.
        """
        if "actions" not in schema["properties"]:
            return schema  # not an agent turn: nothing to shorten
        room = self._await(session, functools.partial(session.client.answer_room, messages))
        if room is None or worst_case_tokens(schema) <= room:
            return schema
        for limits in _SHORTER_ANSWERS:
            shorter = with_answer_limits(schema, limits)
            if worst_case_tokens(shorter) <= room:
                with session.lock:
                    session.shortened[limits] += 1
                return shorter
        return schema

    @staticmethod
    def _await(session: _Session, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `call()` on the session's event loop and wait for its result."""
        loop = session.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Blocking here would stop the very loop that has to answer.
            raise RuntimeError("a TinyTroupe model call was made on the event loop's own thread")
        future = asyncio.run_coroutine_threadsafe(call(), loop)
        while True:
            try:
                return future.result(timeout=_POLL_S)
            except concurrent.futures.TimeoutError:
                if loop.is_closed() or not loop.is_running():
                    future.cancel()
                    raise RuntimeError(
                        "the event loop running this simulation stopped during a model call"
                    ) from None


def _is_action(request: ChatRequest) -> bool:
    """Whether a request is an agent's turn (TinyTroupe's `CognitiveActionsModel`, which
    holds a list of `actions` or, in earlier versions, one `action`)."""
    properties = (request.json_schema or {}).get("properties", {})
    return "actions" in properties or "action" in properties


def _action_flags(request: ChatRequest, response: ChatResponse) -> list[str]:
    """The quality flags of one TinyTroupe turn: heard is the last user messages (what
    was said to the agent). One `action` of a turn asked action by action may be
    DONE: that is not flagged."""
    data = response.data if isinstance(response.data, dict) else {}
    found = data.get("actions", [data.get("action")])
    actions = [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []
    said = [str(a.get("content") or "") for a in actions if a.get("type") in ("TALK", "THINK")]
    if not said and "action" in data:
        return []
    heard = [m.content for m in request.messages if m.role == "user"][-ECHO_WINDOW:]
    # TinyTroupe refuses a repeated action itself.
    return [flag for flag in turn_flags(said, heard, None) if flag != "repeat"]


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def _is_model_class(value: Any) -> bool:
    return isinstance(value, type) and hasattr(value, "model_json_schema")


@functools.cache
def schema_for_model(model: Any) -> dict[str, Any]:
    """A pydantic model class as a closed, bounded JSON schema without `$ref`s.

    Every property is required and no other is allowed (so the answer has
    exactly TinyTroupe's shape); strings and lists get the `_OVERRIDES` bounds,
    or the defaults.
    """
    raw: dict[str, Any] = model.model_json_schema()
    definitions: dict[str, Any] = raw.get("$defs", {})

    def convert(node: dict[str, Any], path: str) -> dict[str, Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return convert_object(definitions[name], name)
        if "anyOf" in node:
            return {"anyOf": [convert(branch, path) for branch in node["anyOf"]]}
        kind = node.get("type")
        converted: dict[str, Any]
        if kind == "object":
            return convert_object(node, str(node.get("title", path)))
        if kind == "array":
            converted = {
                "type": "array",
                "items": convert(node.get("items", {"type": "string"}), f"{path}[]"),
                "maxItems": DEFAULT_ARRAY_ITEMS,
            }
        elif kind == "string":
            converted = {"type": "string", "maxLength": DEFAULT_STRING_CHARS}
        else:
            converted = {"type": kind} if kind else {}
        override = _OVERRIDES.get(path, {})
        if "enum" in override:
            converted.pop("maxLength", None)
        return {**converted, **override}

    def convert_object(node: dict[str, Any], name: str) -> dict[str, Any]:
        properties = {
            key: convert(value, f"{name}.{key}")
            for key, value in node.get("properties", {}).items()
        }
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    return convert_object(raw, str(raw.get("title", model.__name__)))


def _with_targets(schema: dict[str, Any], targets: tuple[str, ...]) -> dict[str, Any]:
    """`schema` with every action's `target` restricted to "" or one of `targets`."""
    restricted = copy.deepcopy(schema)

    def visit(node: dict[str, Any]) -> None:
        properties: dict[str, Any] = node.get("properties", {})
        if {"type", "content", "target"} <= set(properties):
            properties["target"] = {"type": "string", "enum": ["", *targets]}
        for child in properties.values():
            visit(child)
        if isinstance(node.get("items"), dict):
            visit(node["items"])

    visit(restricted)
    return restricted


def with_answer_limits(schema: dict[str, Any], limits: AnswerLimits) -> dict[str, Any]:
    """An agent-turn `schema` allowing at most `limits` (reasoning, if any, cut alike)."""
    limited = copy.deepcopy(schema)
    properties: dict[str, Any] = limited["properties"]
    actions = properties["actions"]
    actions["maxItems"] = min(actions.get("maxItems", DEFAULT_ARRAY_ITEMS), limits.actions)
    strings = [actions["items"]["properties"]["content"]]
    if "reasoning" in properties:
        strings.append(properties["reasoning"])
    for string in strings:
        string["maxLength"] = min(
            string.get("maxLength", DEFAULT_STRING_CHARS), limits.content_chars
        )
    return limited


def worst_case_tokens(schema: dict[str, Any]) -> int:
    """A `max_tokens` covering the longest schema-valid answer (about 2 characters a token).

    A cut-off answer is invalid JSON, so the limit is the worst case, as in the
    built-in engine.
    """
    return _worst_case_chars(schema) // 2 + 64


def _worst_case_chars(schema: dict[str, Any]) -> int:
    if "anyOf" in schema:
        return max(_worst_case_chars(branch) for branch in schema["anyOf"])
    if "enum" in schema:
        return max(len(json.dumps(member)) for member in schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        return 2 + sum(len(key) + 4 + _worst_case_chars(sub) for key, sub in properties.items())
    if kind == "array":
        items = schema.get("maxItems", DEFAULT_ARRAY_ITEMS)
        return 2 + int(items) * (_worst_case_chars(schema.get("items", {})) + 2)
    if kind == "string":
        return int(schema.get("maxLength", DEFAULT_STRING_CHARS)) + 2
    return 24
