"""Shared test fixtures: paths into the repository, the golden-file switch, an LLM cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiny_dsl.runtime.cache import LLMCache

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.tts"))

# `TTS_UPDATE_GOLDENS=1 pytest` rewrites expected files; review the diff.
UPDATE_GOLDENS = os.environ.get("TTS_UPDATE_GOLDENS") == "1"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def llm_cache(tmp_path: Path) -> Iterator[LLMCache]:
    """An LLM cache of the test's own, for runs that share recorded answers."""
    with LLMCache(tmp_path / "llm-cache.sqlite") as cache:
        yield cache
