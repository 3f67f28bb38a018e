"""`output { formats [pdf] }`: the HTML report printed to `report.pdf` by Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_quality import SCENARIO
from tests.test_tinytroupe_engine import HashProvider
from tiny_dsl.reporting.pdf import find_chromium
from tiny_dsl.session import RunOptions, Session


def _run(tmp_path: Path, formats: str) -> Path:
    path = tmp_path / "weak.tts"
    path.write_text(SCENARIO.replace("[json, messages, md]", formats), encoding="utf-8")
    session = Session(
        root=tmp_path, state_dir=tmp_path / ".tts", provider_factory=lambda p, o: HashProvider()
    )
    outcome = session.run(path, RunOptions(quiet=True, output_dir=tmp_path / "outputs"))
    assert outcome.exit_code == 0, outcome.diagnostics
    assert outcome.run_dir is not None
    return outcome.run_dir


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed")
def test_pdf_is_the_html_report_printed(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "[json, pdf]")
    pdf = (run_dir / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:]
    assert len(pdf) > 5_000
    # The HTML it was printed from was not asked for, and is not left behind.
    assert sorted(
        p.name for p in run_dir.iterdir() if p.name.startswith(("report", ".report"))
    ) == ["report.pdf"]


def test_without_chromium_the_other_reports_are_written_and_the_note_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTS_CHROMIUM", str(tmp_path / "no-such-chromium"))
    run_dir = _run(tmp_path, "[json, md, pdf]")
    assert (run_dir / "report.md").is_file()
    assert not (run_dir / "report.pdf").exists()
    manifest = (run_dir / "manifest.json").read_text(encoding="utf-8")
    assert "could not print the report" in manifest
