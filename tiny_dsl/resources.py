"""Where the grammar and the bundled stdlib live, installed or in a checkout.

A wheel carries them under `tiny_dsl/_data/`; an editable install or a source
checkout has them at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    bundled = _PACKAGE / "_data" / name
    if bundled.is_dir():
        return bundled
    return _PACKAGE.parent / name


def grammar_path() -> Path:
    return _data_dir("grammar") / "tts.lark"


def stdlib_dir() -> Path:
    return _data_dir("stdlib")


def templates_dir() -> Path:
    return _PACKAGE / "runtime" / "prompts"
