"""Providers: JSON checking, configuration, HTTP error mapping, and the real local models.

The HTTP tests run against a small stub server (``http.server`` on loopback) whose
behaviour is chosen by the ``model`` field of each request.  Tests marked ``model`` run
the embedded SmolLM2 model; tests marked ``server`` start llama-cpp-python's
OpenAI-compatible server on the same model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.llama_server import embedded_model_server
from tiny_dsl.runtime.cache import LLMCache, cache_key
from tiny_dsl.runtime.client import LLMClient
from tiny_dsl.runtime.providers import (
    AzureOpenAIProvider,
    EmbeddedProvider,
    OpenAICompatibleProvider,
    ProviderConfigError,
    env_vars_used,
    make_provider,
)
from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    InvalidOutput,
    Message,
    ProviderError,
    decode_structured,
    validate_json,
)
from tiny_dsl.runtime.providers.embedded import (
    MAX_ARRAY_ITEMS,
    MAX_STRING_CHARS,
    bounded_schema,
)
from tiny_dsl.runtime.providers.http_pools import (
    POOL_CONNECTIONS,
    PooledTransport,
    environment_proxy,
)
from tiny_dsl.runtime.providers.openai_compat import parse_retry_after

API_KEY = "sk-test-SECRET-0123456789abcdef"
SAY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"say": {"type": "string", "maxLength": 40}},
    "required": ["say"],
    "additionalProperties": False,
}


def request_for(
    model_behaviour: str, schema: dict[str, Any] | None = SAY_SCHEMA, **extra: Any
) -> ChatRequest:
    """A request; the stub server reads its behaviour from the provider's model name."""
    return ChatRequest(
        messages=(Message("system", "You are Ada."), Message("user", model_behaviour)),
        temperature=0.2,
        max_tokens=32,
        json_schema=schema,
        schema_name="say it",
        seed=11,
        **extra,
    )


# --------------------------------------------------------------------------- validate_json

ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["talk", "think"]},
        "text": {"type": "string", "maxLength": 5},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "weight": {"type": "number", "minimum": 0, "maximum": 1},
        "done": {"type": "boolean"},
        "target": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
    },
    "required": ["kind", "text"],
    "additionalProperties": False,
}


def test_validate_json_accepts_valid_data() -> None:
    data = {
        "kind": "talk",
        "text": "hi",
        "score": 3.0,  # JSON integers may be written with a zero fraction
        "weight": 0.5,
        "done": False,
        "target": None,
        "tags": ["a", "bc"],
    }
    assert validate_json(data, ACTION_SCHEMA) == []
    assert validate_json({"kind": "think", "text": "", "target": "Bob"}, ACTION_SCHEMA) == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"text": "hi"}, "$: missing required property 'kind'"),
        ({"kind": "shout", "text": "hi"}, '$.kind: "shout" is not one of ["talk", "think"]'),
        ({"kind": "talk", "text": "too long"}, "$.text: longer than 5 characters"),
        ({"kind": "talk", "text": "x", "score": 6}, "$.score: 6 is greater than the maximum 5"),
        ({"kind": "talk", "text": "x", "score": 0}, "$.score: 0 is less than the minimum 1"),
        ({"kind": "talk", "text": "x", "score": 2.5}, "$.score: expected integer, got 2.5"),
        ({"kind": "talk", "text": "x", "score": True}, "$.score: expected integer, got true"),
        ({"kind": "talk", "text": "x", "weight": False}, "$.weight: expected number, got false"),
        ({"kind": "talk", "text": "x", "done": 1}, "$.done: expected boolean, got 1"),
        ({"kind": "talk", "text": "x", "target": 3}, "$.target: 3 matches none of the allowed"),
        ({"kind": "talk", "text": "x", "tags": ["a", "b", "c"]}, "$.tags: more than 2 items"),
        ({"kind": "talk", "text": "x", "tags": ["long"]}, "$.tags[0]: longer than 3 characters"),
        ({"kind": "talk", "text": "x", "mood": "ok"}, "$: unexpected property 'mood'"),
        (["talk"], "$: expected object, got"),
    ],
)
def test_validate_json_reports_violations(data: Any, expected: str) -> None:
    errors = validate_json(data, ACTION_SCHEMA)
    assert any(error.startswith(expected) for error in errors), errors


def test_enum_keeps_booleans_and_numbers_apart() -> None:
    assert validate_json(True, {"enum": [1, 2]}) != []
    assert validate_json(1, {"enum": [True]}) != []
    assert validate_json(1, {"enum": [1, 2]}) == []


def test_decode_structured_strips_code_fences_and_accepts_raw_newlines() -> None:
    fenced = '```json\n{"say": "hi"}\n```'
    assert decode_structured(fenced, SAY_SCHEMA, input_tokens=1, output_tokens=1) == {"say": "hi"}
    assert decode_structured(
        '```\n{"say": "a\nb"}\n```', SAY_SCHEMA, input_tokens=0, output_tokens=0
    )
    with pytest.raises(InvalidOutput) as excinfo:
        decode_structured("Sure! {", SAY_SCHEMA, input_tokens=4, output_tokens=2)
    assert excinfo.value.errors[0].startswith("not valid JSON")
    assert (excinfo.value.input_tokens, excinfo.value.output_tokens) == (4, 2)


def test_bounded_schema_caps_strings_arrays_and_small_integer_ranges() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "free": {"type": "string"},
            "short": {"type": "string", "maxLength": 10},
            "huge": {"type": "string", "maxLength": 10**6},
            "choice": {"type": "string", "enum": ["a", "b"]},
            "list": {"type": "array", "items": {"type": ["string", "null"]}},
            "score": {"type": "integer", "minimum": 0.5, "maximum": 3},
            "year": {"type": "integer", "minimum": 0, "maximum": 5000},
        },
    }
    bounded = bounded_schema(schema)
    props = bounded["properties"]
    assert props["free"]["maxLength"] == MAX_STRING_CHARS
    assert props["short"]["maxLength"] == 10
    assert props["huge"]["maxLength"] == MAX_STRING_CHARS
    assert "maxLength" not in props["choice"]
    assert props["list"]["maxItems"] == MAX_ARRAY_ITEMS
    assert props["list"]["items"]["maxLength"] == MAX_STRING_CHARS
    assert props["score"]["enum"] == [1, 2, 3]
    assert "enum" not in props["year"]
    assert "maxLength" not in schema["properties"]["free"]  # the caller's schema is untouched


# --------------------------------------------------------------------------- configuration


def test_make_provider_defaults_to_embedded() -> None:
    provider = make_provider(None, None, env={})
    assert isinstance(provider, EmbeddedProvider)
    assert (provider.name, provider.model) == ("embedded", "SmolLM2-135M-Instruct")
    with pytest.raises(ProviderConfigError, match="only runs"):
        make_provider("embedded", "gpt-4o", env={})


def test_openai_needs_a_key_and_says_so() -> None:
    with pytest.raises(ProviderConfigError) as excinfo:
        make_provider("openai", "gpt-4o-mini", env={"OPENAI_API_KEY": ""})
    message = str(excinfo.value)
    assert "OPENAI_API_KEY" in message and "--provider embedded" in message


def test_openai_provider_configuration() -> None:
    env = {"OPENAI_API_KEY": API_KEY}
    provider = make_provider("openai", "gpt-4o-mini", env=env)
    assert isinstance(provider, OpenAICompatibleProvider)
    assert (provider.name, provider.model) == ("openai", "gpt-4o-mini")
    payload = provider._payload(request_for("x"), "json_schema")
    assert payload["max_completion_tokens"] == 32 and "max_tokens" not in payload
    assert payload["response_format"]["json_schema"]["name"] == "say_it"
    assert payload["response_format"]["json_schema"]["strict"] is False
    assert env_vars_used("openai", env=env) == ("OPENAI_API_KEY",)
    asyncio.run(provider.aclose())


def test_openai_compatible_configuration() -> None:
    with pytest.raises(ProviderConfigError, match="OPENAI_BASE_URL"):
        make_provider("openai-compatible", None, env={})
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    provider = make_provider("openai-compatible", None, env=env)
    assert isinstance(provider, OpenAICompatibleProvider)
    assert provider._headers() == {"Authorization": "Bearer sk-local"}
    assert provider._payload(request_for("x"), "json_schema")["max_tokens"] == 32
    assert env_vars_used("openai-compatible", env=env) == ("OPENAI_BASE_URL",)
    # An explicit --base-url wins, and the variable is then not reported as used.
    explicit = make_provider("openai-compatible", "m", base_url="http://h/v1", env=env)
    assert explicit._url() == "http://h/v1/chat/completions"  # type: ignore[attr-defined]
    assert env_vars_used("openai-compatible", base_url="http://h/v1", env=env) == ()
    asyncio.run(provider.aclose())
    asyncio.run(explicit.aclose())


def test_azure_configuration() -> None:
    with pytest.raises(ProviderConfigError) as excinfo:
        make_provider("azure", "gpt-4o", env={})
    assert "AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT" in str(excinfo.value)
    env = {
        "AZURE_OPENAI_API_KEY": API_KEY,
        "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com/",
        "AZURE_OPENAI_DEPLOYMENT": "prod-4o",
    }
    provider = make_provider("azure", None, env=env)
    assert isinstance(provider, AzureOpenAIProvider)
    assert (provider.name, provider.model) == ("azure", "prod-4o")
    assert provider._url() == (
        "https://example.openai.azure.com/openai/deployments/prod-4o/chat/completions"
    )
    assert provider._params() == {"api-version": "2024-10-21"}
    assert env_vars_used("azure", env=env) == (
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_DEPLOYMENT",
    )
    asyncio.run(provider.aclose())


def test_unknown_provider_lists_the_choices() -> None:
    with pytest.raises(ProviderConfigError, match="embedded, openai, openai-compatible, azure"):
        make_provider("anthropic", None, env={})


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = email.utils.format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "1"}) == 0.25
    assert parse_retry_after({"Retry-After": later}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


# --------------------------------------------------------------------------- stub HTTP server


@dataclass
class StubServer:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)


def _completion(content: str) -> dict[str, Any]:
    return {
        "model": "stub-model-0613",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 7},
    }


class _StubHandler(BaseHTTPRequestHandler):
    """Answers according to the request's ``model`` field (see ``_respond``)."""

    server: _StubHTTPServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append({"path": self.path, "headers": dict(self.headers), **body})
        self._respond(body["model"], body, self.headers.get("Authorization", ""))

    def _respond(self, behaviour: str, body: dict[str, Any], auth: str) -> None:
        response_format = body.get("response_format") or {}
        if behaviour == "ok":
            self._json(200, _completion('{"say": "hi"}' if response_format else "hello"))
        elif behaviour == "fenced":
            self._json(200, _completion('```json\n{"say": "hi"}\n```'))
        elif behaviour == "invalid":
            self._json(200, _completion('{"say": 5}'))
        elif behaviour == "429":
            error = {"error": {"message": "Rate limit reached", "type": "requests"}}
            self._json(429, error, {"Retry-After": "2"})
        elif behaviour == "429ms":
            self._json(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "250"})
        elif behaviour == "503date":
            when = datetime.now(UTC) + timedelta(seconds=30)
            date = email.utils.format_datetime(when, usegmt=True)
            self._json(503, {"error": {"message": "overloaded"}}, {"Retry-After": date})
        elif behaviour == "500":
            self._json(500, {"error": {"message": f"internal error handling {auth}"}})
        elif behaviour == "502html":
            self._raw(502, b"<html>Bad gateway</html>", "text/html")
        elif behaviour == "400":
            self._json(400, {"error": {"message": f"Incorrect API key provided: {auth}"}})
        elif behaviour == "404":
            self._json(404, {"error": {"message": "The model `x` does not exist"}})
        elif behaviour == "noschema" and response_format.get("type") == "json_schema":
            message = "Invalid parameter: 'response_format' of type 'json_schema' is not supported"
            self._json(400, {"error": {"message": message}})
        elif behaviour == "noschema" and response_format:
            self._json(400, {"error": {"message": "Unrecognized argument: response_format"}})
        elif behaviour == "noschema":
            self._json(200, _completion('{"say": "plain"}'))
        elif behaviour == "slow":
            time.sleep(0.5)
            self._json(200, _completion('{"say": "late"}'))
        else:
            self._json(418, {"error": {"message": f"unknown behaviour {behaviour}"}})

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(body).encode(), "application/json", headers)

    def _raw(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    received: list[dict[str, Any]]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    server = _StubHTTPServer(("127.0.0.1", 0), _StubHandler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StubServer(
            url=f"http://127.0.0.1:{server.server_address[1]}/v1", received=server.received
        )
    finally:
        server.shutdown()
        server.server_close()


def complete(provider: OpenAICompatibleProvider, request: ChatRequest) -> ChatResponse:
    async def run() -> ChatResponse:
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def compat(stub: StubServer, behaviour: str, **options: Any) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(model=behaviour, base_url=stub.url, api_key=API_KEY, **options)


def test_successful_structured_call(stub: StubServer) -> None:
    response = complete(compat(stub, "ok"), request_for("hello"))
    assert response.data == {"say": "hi"}
    assert (response.input_tokens, response.output_tokens) == (21, 7)
    assert (response.provider, response.model) == ("openai-compatible", "stub-model-0613")
    sent = stub.received[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert sent["messages"] == [
        {"role": "system", "content": "You are Ada."},
        {"role": "user", "content": "hello"},
    ]
    assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (0.2, 32, 11)
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "say_it", "schema": SAY_SCHEMA, "strict": False},
    }


def test_plain_text_call(stub: StubServer) -> None:
    response = complete(compat(stub, "ok"), request_for("hello", schema=None))
    assert (response.text, response.data) == ("hello", None)
    assert "response_format" not in stub.received[-1]


def test_fenced_json_is_accepted(stub: StubServer) -> None:
    assert complete(compat(stub, "fenced"), request_for("x")).data == {"say": "hi"}


def test_schema_violation_is_invalid_output(stub: StubServer) -> None:
    with pytest.raises(InvalidOutput) as excinfo:
        complete(compat(stub, "invalid"), request_for("x"))
    assert excinfo.value.errors == ["$.say: expected string, got 5"]
    assert excinfo.value.text == '{"say": 5}'
    assert excinfo.value.output_tokens == 7


@pytest.mark.parametrize(
    ("behaviour", "status", "retryable", "retry_after"),
    [
        ("429", 429, True, 2.0),
        ("429ms", 429, True, 0.25),
        ("503date", 503, True, 30.0),
        ("500", 500, True, None),
        ("502html", 502, True, None),
        ("400", 400, False, None),
        ("404", 404, False, None),
    ],
)
def test_http_error_mapping(
    stub: StubServer, behaviour: str, status: int, retryable: bool, retry_after: float | None
) -> None:
    with pytest.raises(ProviderError) as excinfo:
        complete(compat(stub, behaviour), request_for("x"))
    error = excinfo.value
    assert not isinstance(error, InvalidOutput)
    assert (error.status, error.retryable) == (status, retryable)
    if retry_after is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(retry_after, abs=1.5)
    assert API_KEY not in str(error)


def test_server_messages_are_passed_on_without_the_key(stub: StubServer) -> None:
    for behaviour in ("400", "500"):
        with pytest.raises(ProviderError) as excinfo:
            complete(compat(stub, behaviour), request_for("x"))
        message = str(excinfo.value)
        assert API_KEY not in message
        assert "Bearer ***" in message
    assert "does not exist" in str(_error_for(stub, "404"))


def _error_for(stub: StubServer, behaviour: str) -> ProviderError:
    try:
        complete(compat(stub, behaviour), request_for("x"))
    except ProviderError as exc:
        return exc
    raise AssertionError("expected an error")


def test_steps_down_when_server_lacks_structured_output(stub: StubServer) -> None:
    provider = compat(stub, "noschema")

    async def run() -> list[ChatResponse]:
        try:
            return [await provider.complete(request_for("x")) for _ in range(2)]
        finally:
            await provider.aclose()

    before = len(stub.received)
    first, second = asyncio.run(run())
    assert first.data == second.data == {"say": "plain"}
    sent = stub.received[before:]
    assert [s.get("response_format", {}).get("type") for s in sent] == [
        "json_schema",
        "json_object",
        None,
        None,  # the second call starts in the mode that worked
    ]
    assert provider.structured_mode == "prompt" and not provider.supports_json_schema
    system = sent[-1]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are Ada.")
    assert '"maxLength": 40' in system["content"]


def test_timeout_is_retryable(stub: StubServer) -> None:
    with pytest.raises(ProviderError, match="timed out") as excinfo:
        complete(compat(stub, "slow", timeout_s=0.1), request_for("x"))
    assert excinfo.value.retryable and excinfo.value.status is None


def test_unreachable_server_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAICompatibleProvider(
        model="ok", base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY
    )
    with pytest.raises(ProviderError, match="cannot reach") as excinfo:
        complete(provider, request_for("x"))
    assert excinfo.value.retryable and API_KEY not in str(excinfo.value)


def test_azure_request_shape(stub: StubServer) -> None:
    provider = AzureOpenAIProvider(
        model="ok", endpoint=stub.url.removesuffix("/v1"), api_key=API_KEY, deployment="dep-1"
    )
    response = complete(provider, request_for("x"))
    assert response.provider == "azure" and response.data == {"say": "hi"}
    sent = stub.received[-1]
    assert sent["path"] == "/openai/deployments/dep-1/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == API_KEY
    assert "Authorization" not in sent["headers"]


def test_api_key_is_never_stored_in_the_cache(stub: StubServer, tmp_path: Path) -> None:
    provider = compat(stub, "ok")

    async def run() -> None:
        with LLMCache(tmp_path / "cache.db") as cache:
            client = LLMClient(provider, cache)
            await client.complete(request_for("hello"))
            await client.complete(request_for("hello", schema=None))
        await provider.aclose()

    asyncio.run(run())
    files = list(tmp_path.iterdir())
    assert files
    for path in files:
        assert API_KEY.encode() not in path.read_bytes()
        assert b"SECRET" not in path.read_bytes()


# --------------------------------------------------------------------------- real models

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed",
)

MOOD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "mood": {"type": "string", "enum": ["happy", "sad", "neutral"]},
        "reason": {"type": "string", "maxLength": 30},
    },
    "required": ["mood", "reason"],
    "additionalProperties": False,
}


def mood_request(topic: str, temperature: float = 0.7) -> ChatRequest:
    return ChatRequest(
        messages=(
            Message("system", "You are Ada, a cheerful baker."),
            Message("user", f"How do you feel about {topic}? Answer in JSON."),
        ),
        temperature=temperature,
        max_tokens=40,
        json_schema=MOOD_SCHEMA,
        seed=1234,
    )


@pytest.mark.model
@needs_llama
def test_embedded_structured_call_is_valid_and_deterministic() -> None:
    provider = EmbeddedProvider()

    async def run() -> list[ChatResponse]:
        first = await provider.complete(mood_request("rainy days"))
        other = await provider.complete(mood_request("flour prices"))
        again = await provider.complete(mood_request("rainy days"))
        return [first, other, again]

    first, other, again = asyncio.run(run())
    assert validate_json(first.data, MOOD_SCHEMA) == []
    assert validate_json(other.data, MOOD_SCHEMA) == []
    # Same request and seed give the same text, whatever ran in between.
    assert again.text == first.text and again.data == first.data
    assert (first.provider, first.model) == ("embedded", "SmolLM2-135M-Instruct")
    assert first.input_tokens > 10 and 0 < first.output_tokens <= 40


REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"say": {"type": "string", "maxLength": 120}},
    "required": ["say"],
    "additionalProperties": False,
}
HEADLINE = "BREAKING: The Fed raises interest rates by 50 basis points."


def copy_runs(text: str, source: str, run: int = 4) -> list[str]:
    """The runs of `run` words of `text` that `source` also has, in any case."""

    def words(value: str) -> list[str]:
        return [w.strip(".,:;!?\"'").lower() for w in value.split()]

    theirs = words(source)
    runs = {tuple(theirs[i : i + run]) for i in range(len(theirs) - run + 1)}
    mine = words(text)
    return [
        " ".join(mine[i : i + run])
        for i in range(len(mine) - run + 1)
        if tuple(mine[i : i + run]) in runs
    ]


@pytest.mark.model
@needs_llama
def test_embedded_answer_does_not_copy_runs_of_the_texts_it_should_not_copy() -> None:
    prompt = f"Repeat this headline exactly: {HEADLINE}"

    def request(avoid: tuple[str, ...]) -> ChatRequest:
        return ChatRequest(
            messages=(Message("system", "You are Ada."), Message("user", prompt)),
            temperature=0.0,
            max_tokens=60,
            json_schema=REPLY_SCHEMA,
            seed=7,
            avoid_copying=avoid,
        )

    async def run() -> tuple[ChatResponse, ChatResponse]:
        provider = EmbeddedProvider()
        return await provider.complete(request(())), await provider.complete(request((prompt,)))

    free, blocked = asyncio.run(run())
    # Asked to, the model copies the headline; told not to copy the prompt, it cannot.
    assert copy_runs(free.data["say"], HEADLINE), free.data
    assert validate_json(blocked.data, REPLY_SCHEMA) == []
    assert not copy_runs(blocked.data["say"], prompt), blocked.data
    assert blocked.data["say"].strip()


def test_texts_not_to_copy_are_part_of_the_cache_key_only_when_given() -> None:
    plain = mood_request("rain")
    avoiding = dataclasses.replace(plain, avoid_copying=("rain again",))
    assert cache_key("embedded", "m", plain) != cache_key("embedded", "m", avoiding)
    assert cache_key("embedded", "m", plain) == cache_key(
        "embedded", "m", dataclasses.replace(plain, avoid_copying=())
    )


@pytest.mark.model
@needs_llama
def test_embedded_prompt_resumed_from_a_saved_beginning_is_computed_exactly() -> None:
    """A prompt sharing its first chunks with an earlier one is read from the saved
    state of that beginning, and the model ends up exactly where a fresh read leads."""
    from tiny_dsl.runtime.providers import embedded

    shared = "Sales notes. " + " ".join(f"Loaf {i} sold for {i % 7 + 2} euros." for i in range(80))

    def request(topic: str) -> ChatRequest:
        question = " ".join(f"Tell me about {topic} bread number {i}." for i in range(60))
        return ChatRequest(
            messages=(Message("system", shared), Message("user", question)),
            temperature=0.9,
            max_tokens=24,
            seed=99,
        )

    provider = EmbeddedProvider(n_ctx=2048, n_threads=2)
    loaded = embedded._load(embedded.find_embedded_gguf(), 2048, 2)
    states = loaded.prefix_states

    def last_saved_state() -> bytes:
        return list(states._states.values())[-1][1]

    async def run() -> tuple[ChatResponse, bytes, ChatResponse, bytes]:
        await provider.complete(request("rye"))
        resumed = await provider.complete(request("spelt"))
        assert states.resumed_tokens >= embedded.PROMPT_CHUNK_TOKENS
        resumed_state = last_saved_state()
        states._states.clear()
        loaded.llama.reset()
        fresh = await provider.complete(request("spelt"))
        assert states.resumed_tokens == 0
        return resumed, resumed_state, fresh, last_saved_state()

    resumed, resumed_state, fresh, fresh_state = asyncio.run(run())
    assert resumed.input_tokens >= 2 * embedded.PROMPT_CHUNK_TOKENS  # a chunk read after resuming
    assert resumed_state == fresh_state  # the KV cache, bit for bit
    assert resumed.text == fresh.text


@pytest.mark.model
@needs_llama
def test_embedded_refuses_prompts_longer_than_its_context() -> None:
    request = ChatRequest(
        messages=(Message("user", "memory " * 5000),), temperature=0.0, max_tokens=16
    )
    with pytest.raises(ProviderError, match="context window") as excinfo:
        asyncio.run(EmbeddedProvider().complete(request))
    assert not excinfo.value.retryable


@pytest.mark.model
@needs_llama
def test_embedded_answer_room_is_what_it_accepts() -> None:
    """A request for exactly the room `answer_room` reports runs; one token more is refused."""
    provider = EmbeddedProvider(n_ctx=512)
    messages = (Message("system", "Answer briefly."), Message("user", "pain " * 300))

    async def run() -> tuple[int, ChatResponse]:
        room = await provider.answer_room(messages)
        with pytest.raises(ProviderError, match="context window"):
            await provider.complete(ChatRequest(messages, temperature=0.0, max_tokens=room + 1))
        fitting = await provider.complete(ChatRequest(messages, temperature=0.0, max_tokens=room))
        return room, fitting

    room, fitting = asyncio.run(run())
    assert 0 < room < 512 - 300  # "pain " is at least a token a word
    assert fitting.input_tokens + room <= 512


@pytest.mark.model
@needs_llama
def test_embedded_through_client_is_cached(tmp_path: Path) -> None:
    async def run() -> tuple[ChatResponse, ChatResponse, LLMClient]:
        with LLMCache(tmp_path / "cache.db") as cache:
            client = LLMClient(EmbeddedProvider(), cache)
            first = await client.complete(mood_request("bread", temperature=0.0))
            second = await client.complete(mood_request("bread", temperature=0.0))
            return first, second, client

    first, second, client = asyncio.run(run())
    assert second.cached and second.data == first.data
    assert client.stats.cache_hits == 1
    assert client.answered_by == {("embedded", "SmolLM2-135M-Instruct")}


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with embedded_model_server(n_ctx=2048, log_path=log_path) as base_url:
        yield base_url


@pytest.mark.server
def test_openai_compatible_provider_against_llama_cpp_server(llama_server: str) -> None:
    provider = OpenAICompatibleProvider(model="local", base_url=llama_server, api_key="sk-local")

    async def run() -> list[ChatResponse]:
        try:
            return [
                await provider.complete(mood_request("rainy days", temperature=0.0))
                for _ in range(2)
            ]
        finally:
            await provider.aclose()

    first, second = asyncio.run(run())
    assert validate_json(first.data, MOOD_SCHEMA) == []
    assert second.text == first.text
    assert first.provider == "openai-compatible" and first.output_tokens > 0
    # llama-cpp-python's server rejects json_schema but constrains json_object + schema.
    assert provider.structured_mode == "json_object"


# ------------------------------------------------------------------ connection pools


def test_pooled_transport_sizes_its_pools() -> None:
    def sizes(max_connections: int) -> tuple[int, ...]:
        return PooledTransport("http://127.0.0.1:1/v1", max_connections).pool_sizes

    assert sizes(256) == (POOL_CONNECTIONS,) * (256 // POOL_CONNECTIONS)
    assert sizes(20) == (7, 7, 6)
    assert sizes(1) == (1,)


def test_environment_proxy_follows_the_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert environment_proxy("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert environment_proxy("https://api.openai.com/v1") == "http://proxy.corp:3128"
    assert environment_proxy("http://127.0.0.1:8080/v1") is None  # only https is proxied
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:3128")
    assert environment_proxy("http://127.0.0.1:8080/v1") == "http://all.corp:3128"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,.openai.com")
    assert environment_proxy("http://127.0.0.1:8080/v1") is None
    assert environment_proxy("https://api.openai.com/v1") is None
