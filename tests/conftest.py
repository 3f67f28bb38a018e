"""Shared test fixtures: paths into the repository and the golden-file switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.tts"))

# `TTS_UPDATE_GOLDENS=1 pytest` rewrites expected files; review the diff.
UPDATE_GOLDENS = os.environ.get("TTS_UPDATE_GOLDENS") == "1"


@pytest.fixture
def root() -> Path:
    return ROOT
