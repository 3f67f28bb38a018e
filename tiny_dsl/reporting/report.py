"""report.html, report.md and report.pdf from a `ReportView`, no model calls."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tiny_dsl.files import write_text_atomic
from tiny_dsl.reporting.pdf import print_pdf
from tiny_dsl.reporting.render import render_html, render_markdown
from tiny_dsl.reporting.view import ReportView
from tiny_dsl.rundir import REPORT_HTML, REPORT_MD, REPORT_PDF

REPORT_FORMATS = frozenset({"html", "md", "pdf"})
# What `tts report` writes for a scenario that names no report (a PDF needs Chromium).
DEFAULT_REPORTS = frozenset({"html", "md"})


def report_formats(plan: dict[str, Any], default: Iterable[str] = DEFAULT_REPORTS) -> set[str]:
    """The reports a plan (as JSON) asks for in `output { formats }`; `default` if none."""
    output = plan.get("output")
    named = output.get("formats") if isinstance(output, dict) else None
    asked = {str(f).lower() for f in named} & REPORT_FORMATS if isinstance(named, list) else set()
    return asked or set(default)


def write_reports(view: ReportView, run_dir: Path, formats: Iterable[str]) -> list[Path]:
    """Write the reports `formats` asks for into `run_dir`; other formats (csv, json,
    ...) are ignored. Returns the files written, in a stable order (html, md, pdf).

    The PDF is the HTML report printed (from a temporary copy when `html` is not
    asked for); it comes last, so that a machine without Chromium still gets the
    others before `PdfUnavailable` says what is missing."""
    wanted = REPORT_FORMATS & {f.lower() for f in formats}
    written = []
    html = render_html(view) if wanted & {"html", "pdf"} else ""
    if "html" in wanted:
        path = run_dir / REPORT_HTML
        write_text_atomic(path, html)
        written.append(path)
    if "md" in wanted:
        path = run_dir / REPORT_MD
        write_text_atomic(path, render_markdown(view))
        written.append(path)
    if "pdf" in wanted:
        source = run_dir / (REPORT_HTML if "html" in wanted else f".{REPORT_HTML}.print")
        if "html" not in wanted:
            write_text_atomic(source, html)
        try:
            print_pdf(source, run_dir / REPORT_PDF)
        finally:
            if "html" not in wanted:
                source.unlink(missing_ok=True)
        written.append(run_dir / REPORT_PDF)
    return written
