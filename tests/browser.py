"""Headless Chromium for report tests: a screenshot kept as a test artifact, and the DOM.

Screenshots land in `outputs/test-artifacts/` (git-ignored; `TTS_TEST_ARTIFACTS`
overrides it) so that a person, or CI, can look at what a report showed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TTS_TEST_ARTIFACTS", ROOT / "outputs" / "test-artifacts"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def render(page: Path, screenshot_name: str) -> tuple[Path, str, str]:
    """Screenshot PAGE into the artifacts folder; return the PNG, the rendered DOM and the log.

    The log is Chromium's stderr with page console messages enabled, so a test can
    tell a page that rendered from one that threw.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / screenshot_name
    profile = Path(tempfile.mkdtemp(prefix="tts-chromium-"))
    # The machine has no network: without the background-networking flags Chromium
    # keeps trying to reach Google's hosts at every start.
    flags = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        "--window-size=1280,2000",
    ]
    uri = page.resolve().as_uri()
    try:
        shot = subprocess.run(
            [*flags, f"--screenshot={screenshot}", uri], capture_output=True, text=True, timeout=180
        )
        if shot.returncode != 0:
            raise AssertionError(f"chromium failed to take a screenshot:\n{shot.stderr}")
        dom = subprocess.run(
            [*flags, "--dump-dom", uri], capture_output=True, text=True, timeout=180
        )
        if dom.returncode != 0:
            raise AssertionError(f"chromium failed to render the page:\n{dom.stderr}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return screenshot, dom.stdout, shot.stderr + dom.stderr


def console_errors(log: str) -> list[str]:
    """Console messages and uncaught exceptions the page produced, from Chromium's log."""
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
