"""Golden-file comparison with an update switch (`TTS_UPDATE_GOLDENS=1`)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import UPDATE_GOLDENS


def assert_golden(actual: str, expected_path: Path) -> None:
    if UPDATE_GOLDENS or not expected_path.exists():
        if not UPDATE_GOLDENS:
            raise AssertionError(
                f"{expected_path} does not exist; run with TTS_UPDATE_GOLDENS=1 to create it"
            )
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(actual, encoding="utf-8")
        return
    expected = expected_path.read_text(encoding="utf-8")
    assert actual == expected, (
        f"{expected_path} differs; if the change is intended, run TTS_UPDATE_GOLDENS=1 pytest"
    )
