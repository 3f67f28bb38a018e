"""LLMCache: durable round trips, process-independent keys, corruption detection."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tiny_dsl.runtime.cache import CacheCorruptError, LLMCache, cache_key
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, Message

SCHEMA = {
    "type": "object",
    "properties": {"say": {"type": "string", "maxLength": 40}},
    "required": ["say"],
}
REQUEST = ChatRequest(
    messages=(Message("system", "You are Ada."), Message("user", "Greet Bob.")),
    temperature=0.7,
    max_tokens=64,
    json_schema=SCHEMA,
    schema_name="greeting",
    seed=7,
    replicate=1,
    purpose="act",
)
RESPONSE = ChatResponse(
    text='{"zeta": 1, "say": "Hi Bob"}',
    data={"zeta": 1, "say": "Hi Bob"},
    input_tokens=12,
    output_tokens=9,
    provider="embedded",
    model="SmolLM2-135M-Instruct",
    latency_s=0.25,
)


def test_put_get_roundtrip(tmp_path: Path) -> None:
    key = cache_key("embedded", "SmolLM2-135M-Instruct", REQUEST)
    with LLMCache(tmp_path / "cache.db") as cache:
        assert cache.get(key) is None
        cache.put(key, REQUEST, RESPONSE)
        assert len(cache) == 1
    # A new connection sees the entry: put() committed it.
    with LLMCache(tmp_path / "cache.db") as cache:
        hit = cache.get(key)
    assert hit == dataclasses.replace(RESPONSE, cached=True)
    # Parsed JSON keeps the model's key order, so replayed runs render identically.
    assert hit is not None and isinstance(hit.data, dict)
    assert list(hit.data) == ["zeta", "say"]


def test_aput_is_committed_when_it_returns(tmp_path: Path) -> None:
    key = cache_key("embedded", "m", REQUEST)

    async def write_then_peek() -> int:
        await cache.aput(key, REQUEST, RESPONSE)
        # Another connection (as a crash-restarted process would) sees the row at once.
        other = sqlite3.connect(tmp_path / "cache.db")
        try:
            return int(other.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0])
        finally:
            other.close()

    with LLMCache(tmp_path / "cache.db") as cache:
        assert asyncio.run(write_then_peek()) == 1
        assert cache.get(key) == dataclasses.replace(RESPONSE, cached=True)


def test_put_replaces_existing_entry(tmp_path: Path) -> None:
    key = cache_key("embedded", "m", REQUEST)
    with LLMCache(tmp_path / "cache.db") as cache:
        cache.put(key, REQUEST, RESPONSE)
        newer = dataclasses.replace(RESPONSE, text="{}", data={})
        cache.put(key, REQUEST, newer)
        assert cache.get(key) == dataclasses.replace(newer, cached=True)
        assert len(cache) == 1


def test_cache_uses_wal_and_full_sync(tmp_path: Path) -> None:
    with LLMCache(tmp_path / "cache.db") as cache:
        cache.put("k", REQUEST, RESPONSE)
    db = sqlite3.connect(tmp_path / "cache.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        stored = db.execute("SELECT request, response, created_at FROM llm_calls").fetchone()
    finally:
        db.close()
    assert '"purpose":"act"' in stored[0]
    assert "Hi Bob" in stored[1]
    assert stored[2].endswith("+00:00")


_KEY_SCRIPT = """
from tiny_dsl.runtime.cache import cache_key
from tiny_dsl.runtime.providers.base import ChatRequest, Message
schema = {"type": "object", "required": ["say"],
          "properties": {"say": {"type": "string", "maxLength": 40}}}
request = ChatRequest(
    messages=(Message("system", "You are Ada."), Message("user", "Greet Bob.")),
    temperature=0.7, max_tokens=64, json_schema=schema, schema_name="greeting",
    seed=7, replicate=1, purpose="something else",
)
print(cache_key("embedded", "SmolLM2-135M-Instruct", request))
"""


def test_key_is_stable_across_processes() -> None:
    expected = cache_key("embedded", "SmolLM2-135M-Instruct", REQUEST)
    root = Path(__file__).resolve().parents[1]
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        result = subprocess.run(
            [sys.executable, "-c", _KEY_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("messages", (Message("system", "You are Ada."), Message("user", "Greet Eve."))),
        ("messages", (Message("user", "You are Ada."), Message("user", "Greet Bob."))),
        ("temperature", 0.8),
        ("max_tokens", 65),
        ("json_schema", {**SCHEMA, "required": []}),
        ("json_schema", None),
        ("seed", 8),
        ("replicate", 2),
    ],
)
def test_key_changes_with_each_field(field: str, value: Any) -> None:
    base = cache_key("embedded", "m", REQUEST)
    assert cache_key("embedded", "m", dataclasses.replace(REQUEST, **{field: value})) != base


def test_key_depends_on_provider_and_model_but_not_purpose() -> None:
    base = cache_key("embedded", "m", REQUEST)
    assert cache_key("openai", "m", REQUEST) != base
    assert cache_key("embedded", "m2", REQUEST) != base
    assert cache_key("embedded", "m", dataclasses.replace(REQUEST, purpose="other")) == base
    assert cache_key("embedded", "m", dataclasses.replace(REQUEST, schema_name="x")) == base
    # Equal numbers give equal keys whatever their Python type.
    as_int = dataclasses.replace(REQUEST, temperature=1)
    as_float = dataclasses.replace(REQUEST, temperature=1.0)
    assert cache_key("embedded", "m", as_int) == cache_key("embedded", "m", as_float)


def test_garbage_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    path.write_bytes(b"this is not sqlite \x00\xff" * 512)
    with pytest.raises(CacheCorruptError) as excinfo:
        LLMCache(path)
    assert excinfo.value.path == path
    assert str(path) in str(excinfo.value)


def test_damaged_pages_are_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    with LLMCache(path) as cache:
        for index in range(300):
            cache.put(f"key-{index:04d}", REQUEST, RESPONSE)
    # Fold the WAL into the main file so the damage below hits live pages.
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) > 4 * page_size
    data[page_size : 3 * page_size] = b"\xa5" * (2 * page_size)
    path.write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError):
        LLMCache(path)


def test_unreadable_entry_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    with LLMCache(path) as cache:
        cache.put("k", REQUEST, RESPONSE)
    db = sqlite3.connect(path)
    db.execute("UPDATE llm_calls SET response = '{not json'")
    db.commit()
    db.close()
    with LLMCache(path) as cache, pytest.raises(CacheCorruptError):
        cache.get("k")
