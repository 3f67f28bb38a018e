"""A local OpenAI-compatible server with deterministic answers and injected faults.

Tests start it with :class:`FaultServer` (a subprocess on a free 127.0.0.1 port, so that it
neither competes with the client for the GIL nor dies with a killed client) and read its
counters with :meth:`FaultServer.stats`::

    with FaultServer(FaultConfig(fault_rate=0.3)) as server:
        ... tts run --provider openai-compatible --base-url {server.base_url} ...
        served = server.stats()["served"]

It serves ``POST /v1/chat/completions`` (the only endpoint the openai_compat provider
calls) and ``GET /_fault_server/stats``.

Answers are functions of the request: the JSON schema in ``response_format`` gets a value
valid for it (integers within their bounds, enum members, booleans, bounded strings and
arrays), a request without one gets a short sentence, and the choices are drawn from a
generator seeded by the request's model, sampling parameters, schema and messages.  A
repair request (the client's re-ask quoting a rejected answer) is answered like the
request it repairs, as a model that gets it right the second time would.

Faults: each arrival of a request is an attempt, numbered per request (repairs count as
attempts of the request they repair; the client never has two identical requests in
flight, so the numbering does not depend on timing).  Whether attempt ``n`` fails, and
how, is a hash of the seed, the request and ``n``, at ``fault_rate``; attempts after the
first ``max_faults_per_request`` always succeed, so every request is answered within the
client's retry and repair budgets (6 attempts, 2 repairs) and a run under faults must end
with exactly the answers of a fault-free one.  The kinds are in :data:`FAULT_KINDS`.

The server stops when the process that started it closes its stdin (or dies), or after
``max_lifetime_s``, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

__all__ = ["FAULT_KINDS", "FaultConfig", "FaultServer", "request_digest"]

FAULT_KINDS = (
    "rate_limit_retry_after",  # 429 with Retry-After
    "rate_limit",  # 429 without it
    "server_error",  # 500
    "unavailable",  # 503
    "timeout",  # no answer for hang_s, then the connection is closed
    "truncated_body",  # 200 with the first half of the completion JSON
    "dropped_connection",  # 200, the connection closed halfway through the promised body
    "invalid_body",  # 200 with an HTML error page instead of JSON
    "schema_invalid",  # 200 with content that violates the requested schema
    "slow_body",  # 200, the body trickled out over trickle_s (a fault the client must wait out)
)
# Only meaningful for a request that asks for a schema.
_SCHEMA_ONLY_KINDS = frozenset({"schema_invalid"})

# How the client's repair prompt begins (tiny_dsl.runtime.client._repair_request).
REPAIR_PREFIX = "Your previous reply was rejected"

_WORDS: tuple[str, ...] = ("price", "quality", "family", "weekend", "budget", "habit", "health")
_WORDS += ("coffee", "commute", "savings", "trust", "simple", "practical", "curious", "friends")
_FIRST_NAMES = ("Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Luis")
_LAST_NAMES = ("Okafor", "Silva", "Novak", "Tanaka", "Meyer", "Rossi", "Haddad", "Larsen")
_MAX_ITEMS = 3


@dataclass(frozen=True)
class FaultConfig:
    """What the server does; every field is in seconds unless named otherwise."""

    fault_rate: float = 0.0
    seed: int = 0
    delay_s: float = 0.0  # before every answer, faults included
    hang_s: float = 3.0  # the timeout fault: keep it longer than the client's attempt timeout
    trickle_s: float = 0.2  # the slow_body fault: keep it shorter than the attempt timeout
    retry_after_s: int = 1
    max_faults_per_request: int = 2
    max_lifetime_s: float = 900.0


def request_digest(messages: list[dict[str, Any]], seed: int) -> str:
    """Identifies a chat request by what the model is asked (the stats' ``by_request`` keys).

    Tests compute it from the LLM cache's recorded requests to tell which requests a
    re-run sent again.
    """
    canonical = [{"role": m["role"], "content": m["content"]} for m in messages]
    return _sha256({"messages": canonical, "seed": seed})


class FaultServer:
    """Runs the server in a subprocess for the duration of a ``with`` block."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultServer:
        root = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fault_server",
                json.dumps(dataclasses.asdict(self.config)),
            ],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdout is not None
        # The server prints its port once it listens; a timer bounds the wait.
        timer = threading.Timer(30.0, self._process.kill)
        timer.start()
        try:
            line = self._process.stdout.readline()
        finally:
            timer.cancel()
        if not line.strip().isdigit():
            self._stop()
            raise RuntimeError("the fault server did not start")
        self.port = int(line)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def stats(self) -> dict[str, Any]:
        """``requests`` (chat requests received), ``served`` (count per fault kind and
        ``ok``) and ``by_request`` (count per :func:`request_digest`)."""
        response = httpx.get(f"http://127.0.0.1:{self.port}/_fault_server/stats", timeout=10.0)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.stdin is not None:
            process.stdin.close()  # the server's signal to stop
        try:
            process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# ----------------------------------------------------------------------------- the server


class _Server:
    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.attempts: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.by_request: Counter[str] = Counter()
        # Open connections, closed at shutdown so that their handlers end by themselves
        # (Python 3.11's asyncio streams report a cancelled handler as an error).
        self.connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.stopping = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[task] = writer
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in header_lines if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "POST" and path.split("?")[0] == "/v1/chat/completions":
                    keep_alive = await self.chat(json.loads(body), writer)
                elif method == "GET" and path == "/_fault_server/stats":
                    writer.write(_response(200, _json_bytes(self.stats())))
                    keep_alive = True
                else:
                    writer.write(_response(404, _json_bytes({"error": {"message": "not found"}})))
                    keep_alive = True
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection (keep-alive end, or it gave up waiting)
        finally:
            writer.close()
            self.connections.pop(task, None)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": sum(self.by_request.values()),
            "served": dict(self.served),
            "by_request": dict(self.by_request),
        }

    async def chat(self, payload: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        """Answer one chat request (or fail it); returns whether to keep the connection."""
        self.by_request[request_digest(payload["messages"], payload.get("seed", 0))] += 1
        schema = _requested_schema(payload)
        original = _without_repairs(payload["messages"])
        key = _sha256({**{k: v for k, v in payload.items() if k != "messages"}, "m": original})
        attempt = self.attempts[key]
        self.attempts[key] += 1
        fault = self._fault(key, attempt, schema is not None)
        self.served[fault or "ok"] += 1
        if self.config.delay_s:
            await asyncio.sleep(self.config.delay_s)
        rng = random.Random(key)
        if fault is None or fault == "slow_body":
            content = json.dumps(_value(schema, rng)) if schema is not None else _sentence(rng, 12)
        elif fault == "schema_invalid":
            content = json.dumps({"unexpected": "a reply that ignores the schema"})
        else:
            content = ""
        completion = _json_bytes(
            {
                "id": f"chatcmpl-{key[:12]}",
                "object": "chat.completion",
                "model": payload.get("model", "fault-server"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }
        )
        return await self._send(fault, completion, writer)

    def _fault(self, key: str, attempt: int, structured: bool) -> str | None:
        if attempt >= self.config.max_faults_per_request or self.config.fault_rate <= 0:
            return None
        draw = hashlib.sha256(f"{self.config.seed}:{key}:{attempt}".encode()).digest()
        if int.from_bytes(draw[:8]) / 2**64 >= self.config.fault_rate:
            return None
        kinds = [k for k in FAULT_KINDS if structured or k not in _SCHEMA_ONLY_KINDS]
        return kinds[int.from_bytes(draw[8:16]) % len(kinds)]

    async def _send(
        self, fault: str | None, completion: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        config = self.config
        if fault == "timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), config.hang_s)
            return False
        if fault in ("rate_limit_retry_after", "rate_limit"):
            body = _json_bytes({"error": {"message": "Rate limit reached", "type": "requests"}})
            extra = (
                {"Retry-After": str(config.retry_after_s)}
                if fault == "rate_limit_retry_after"
                else {}
            )
            writer.write(_response(429, body, extra))
        elif fault == "server_error":
            message = "The server had an error while processing your request."
            writer.write(_response(500, _json_bytes({"error": {"message": message}})))
        elif fault == "unavailable":
            message = "The engine is currently overloaded, please try again later."
            writer.write(_response(503, _json_bytes({"error": {"message": message}})))
        elif fault == "truncated_body":
            writer.write(_response(200, completion[: len(completion) // 2]))
        elif fault == "dropped_connection":
            whole = _response(200, completion)
            writer.write(whole[: len(whole) - len(completion) // 2])
            return False
        elif fault == "invalid_body":
            page = b"<html><body><h1>Upstream error</h1></body></html>"
            writer.write(_response(200, page, content_type="text/html"))
        elif fault == "slow_body":
            whole = _response(200, completion)
            chunks = 8
            step = -(-len(whole) // chunks)
            for start in range(0, len(whole), step):
                writer.write(whole[start : start + step])
                await writer.drain()
                await asyncio.sleep(config.trickle_s / chunks)
        else:
            writer.write(_response(200, completion))
        return True


def _requested_schema(payload: dict[str, Any]) -> dict[str, Any] | None:
    response_format = payload.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema: dict[str, Any] = response_format["json_schema"]["schema"]
        return schema
    if response_format.get("type") == "json_object":
        return response_format.get("schema") or {"type": "object"}
    return None


def _without_repairs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with trailing repair exchanges (rejected answer, feedback) removed."""
    kept = list(messages)
    while (
        len(kept) >= 2
        and kept[-2]["role"] == "assistant"
        and kept[-1]["role"] == "user"
        and str(kept[-1]["content"]).startswith(REPAIR_PREFIX)
    ):
        kept = kept[:-2]
    return kept


def _value(schema: dict[str, Any], rng: random.Random, name: str = "") -> Any:
    """A value valid for ``schema`` (the JSON Schema subset tiny_dsl emits).

    ``name`` is the property the value is for: a ``name`` gets a person's name.
    """
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"] or schema["anyOf"]
        return _value(rng.choice(branches), rng, name)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    declared = schema.get("type", "object")
    kind = declared if isinstance(declared, str) else next(t for t in declared if t != "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: _value(sub, rng, key) for key, sub in properties.items()}
    if kind == "array":
        low = schema.get("minItems", 0)
        high = max(low, min(schema.get("maxItems", _MAX_ITEMS), _MAX_ITEMS))
        return [_value(schema.get("items", {}), rng) for _ in range(rng.randint(low, high))]
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 100)))
    if kind == "number":
        low, high = float(schema.get("minimum", 0.0)), float(schema.get("maximum", 1.0))
        return round(rng.uniform(low, high), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if name == "name":
        text = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
    else:
        text = _sentence(rng, rng.randint(3, 10))
    limit = schema.get("maxLength", 200)
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return text.ljust(schema.get("minLength", 0), ".")


def _sentence(rng: random.Random, words: int) -> str:
    chosen = [rng.choice(_WORDS) for _ in range(words)]
    return " ".join(chosen).capitalize() + "."


def _sha256(value: Any) -> str:
    return hashlib.sha256(_json_bytes(value)).hexdigest()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _response(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> bytes:
    reasons = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
    lines = [
        f"HTTP/1.1 {status} {reasons.get(status, 'Service Unavailable')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _serve(config: FaultConfig) -> None:
    server = _Server(config)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=512)
    print(listener.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    parent_gone = asyncio.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        loop.call_soon_threadsafe(parent_gone.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(parent_gone.wait(), config.max_lifetime_s)
    listener.close()
    server.stopping.set()
    for writer in server.connections.values():
        writer.close()
    await asyncio.gather(*server.connections, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="FaultConfig fields as a JSON object")
    config = FaultConfig(**json.loads(parser.parse_args().config))
    asyncio.run(_serve(config))


if __name__ == "__main__":
    main()
