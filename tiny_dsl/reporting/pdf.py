"""`report.pdf`: the HTML report printed by a headless Chromium.

The report is self-contained HTML (inline styles and SVG charts), so printing it
needs no network. Chromium is looked up as `TTS_CHROMIUM`, then `chromium`,
`chromium-browser`, `google-chrome` and `google-chrome-stable` on PATH; without one,
`PdfUnavailable` says how to get it, and the other reports are written anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PdfUnavailable", "find_chromium", "print_pdf"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_PRINT_TIMEOUT_S = 180


class PdfUnavailable(RuntimeError):
    """`report.pdf` cannot be printed here; the message says why and what to do."""


def find_chromium() -> str | None:
    configured = os.environ.get("TTS_CHROMIUM")
    if configured:
        return configured
    return next((found for name in _CANDIDATES if (found := shutil.which(name))), None)


def print_pdf(html: Path, pdf: Path) -> None:
    """Print `html` to `pdf` (written whole or not at all)."""
    chromium = find_chromium()
    if chromium is None:
        raise PdfUnavailable(
            "report.pdf needs Chromium to print the HTML report, and none was found "
            "(set TTS_CHROMIUM, or install chromium: `apt-get install chromium`); then "
            "`tts report RUN_DIR --format pdf`"
        )
    partial = pdf.with_name(f".{pdf.name}.partial")
    with tempfile.TemporaryDirectory(prefix="tts-chromium-") as profile:
        # No network here: without the background-networking flags Chromium keeps
        # trying to reach Google's hosts.
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={partial}",
            html.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=_PRINT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            partial.unlink(missing_ok=True)
            raise PdfUnavailable(
                f"Chromium ({chromium}) could not print the report: {exc}"
            ) from exc
    if done.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        tail = done.stderr.strip().splitlines()[-3:]
        raise PdfUnavailable(
            f"Chromium ({chromium}) could not print the report (exit {done.returncode}): "
            + " / ".join(tail)
        )
    os.replace(partial, pdf)
