"""Persistent LLM-call cache: the record that makes runs replayable.

Every answer a provider gives is written here, durably, before the engine uses it, so a
crashed or interrupted run can be resumed and a finished run replayed bit-for-bit
without a model.  Keys are content hashes of everything that determines an answer
(provider, model, messages, sampling parameters, schema, replicate index), so they are
stable across processes and machines and never depend on Python's hash seed.
Requests hold no credentials, so nothing secret is ever stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse

__all__ = ["CACHE_VERSION", "CacheCorruptError", "LLMCache", "cache_key"]

# Bump when the meaning of a cached answer changes (e.g. how prompts are rendered), so
# stale answers stop matching instead of being replayed.
CACHE_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_calls (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""


class CacheCorruptError(Exception):
    """The cache file is not a readable SQLite database (or holds unreadable rows)."""

    def __init__(self, path: Path, detail: str = "not a readable SQLite database") -> None:
        super().__init__(
            f"LLM cache {path} is corrupted ({detail}); move it aside to start a new cache "
            "(answers recorded in it can then no longer be replayed)"
        )
        self.path = path


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(provider_name: str, model: str, request: ChatRequest) -> str:
    """SHA-256 of the canonical JSON of everything that determines the answer.

    Numbers are normalized (``temperature=1`` and ``1.0`` give the same key); ``purpose``
    is a display label and deliberately excluded.
    """
    payload = {
        "v": CACHE_VERSION,
        "provider": provider_name,
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "temperature": float(request.temperature),
        "max_tokens": int(request.max_tokens),
        "seed": int(request.seed),
        "schema": request.json_schema,
        "replicate": int(request.replicate),
    }
    if request.session:
        # Only external agents' calls have one: model calls keep their earlier keys.
        payload["session"] = request.session
    if request.frequency_penalty:
        # Set by the calls that need it; the others keep their earlier keys.
        payload["frequency_penalty"] = float(request.frequency_penalty)
    if request.avoid_copying:
        payload["avoid_copying"] = list(request.avoid_copying)
    return hashlib.sha256(_canonical(payload).encode("utf-8")).hexdigest()


class LLMCache:
    """SQLite-backed store of answered requests, keyed by :func:`cache_key`.

    Every write is its own transaction committed with ``synchronous=FULL`` in WAL mode,
    so once :meth:`put`/:meth:`aput` returns, the answer survives a crash or power loss:
    the promise "every LLM call is recorded before it is used".  That flush costs an
    fsync (0.4 ms on an idle disk, several ms on a busy one), too slow to run on an
    event loop that is juggling dozens of calls, so writes go through one dedicated
    writer thread with its own connection; :meth:`aput` awaits it without blocking the
    loop.  Lookups are a primary-key read (tens of microseconds) and stay inline.
    Reads belong to the thread that created the cache; several processes may share the
    file (SQLite locks it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiny-dsl-cache")
        self._writer_db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        """Connect, check integrity and create the table; corruption -> CacheCorruptError."""
        try:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise CacheCorruptError(self.path, str(exc)) from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise CacheCorruptError(self.path, f"integrity check: {verdict}")
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise CacheCorruptError(self.path, str(exc)) from exc
        except CacheCorruptError:
            db.close()
            raise
        return db

    def get(self, key: str) -> ChatResponse | None:
        """The stored answer for ``key`` (marked ``cached=True``), or ``None``."""
        try:
            row = self._db.execute(
                "SELECT response FROM llm_calls WHERE key = ?", (key,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise CacheCorruptError(self.path, str(exc)) from exc
        if row is None:
            return None
        try:
            fields = json.loads(row[0])
            fields["cached"] = True
            return ChatResponse(**fields)
        except (ValueError, TypeError) as exc:
            raise CacheCorruptError(self.path, f"unreadable entry {key}: {exc}") from exc

    def put(self, key: str, request: ChatRequest, response: ChatResponse) -> None:
        """Record an answer durably, blocking until it is on disk.

        A later answer for the same key replaces the earlier one.
        """
        self._writer.submit(self._write, _row(key, request, response)).result()

    async def aput(self, key: str, request: ChatRequest, response: ChatResponse) -> None:
        """:meth:`put` for event-loop callers: waits for the flush without blocking the loop."""
        await asyncio.wrap_future(self._writer.submit(self._write, _row(key, request, response)))

    def _write(self, row: tuple[str, str, str, str]) -> None:
        # Runs on the writer thread, which owns its connection.
        if self._writer_db is None:
            self._writer_db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._writer_db.execute("PRAGMA synchronous=FULL")
        self._writer_db.execute(
            "INSERT OR REPLACE INTO llm_calls (key, request, response, created_at) "
            "VALUES (?, ?, ?, ?)",
            row,
        )

    def _close_writer(self) -> None:
        if self._writer_db is not None:
            self._writer_db.close()
            self._writer_db = None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0])

    def close(self) -> None:
        """Finish pending writes and close both connections."""
        self._writer.submit(self._close_writer).result()
        self._writer.shutdown()
        self._db.close()

    def __enter__(self) -> LLMCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _row(key: str, request: ChatRequest, response: ChatResponse) -> tuple[str, str, str, str]:
    """The table row for an answer, serialized on the caller's thread."""
    request_json = _canonical(
        {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "json_schema": request.json_schema,
            "schema_name": request.schema_name,
            "seed": request.seed,
            "replicate": request.replicate,
            "purpose": request.purpose,
            **({"session": request.session} if request.session else {}),
        }
    )
    response_fields = asdict(response)
    del response_fields["cached"]
    # Not sorted: parsed JSON must come back in the model's key order, so a replayed run
    # renders exactly like the original one.
    response_json = json.dumps(response_fields, ensure_ascii=False, separators=(",", ":"))
    return key, request_json, response_json, datetime.now(UTC).isoformat(timespec="seconds")
