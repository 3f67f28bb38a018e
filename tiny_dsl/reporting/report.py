"""`write_reports`: report.html and report.md from a run directory, no model calls."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tiny_dsl.files import write_text_atomic
from tiny_dsl.reporting.render import render_html, render_markdown
from tiny_dsl.reporting.rundir import load_run
from tiny_dsl.reporting.view import build_view

REPORT_FORMATS = frozenset({"html", "md"})


def run_report_formats(run_dir: Path) -> set[str]:
    """The reports the run's scenario asked for in `output { formats }`; both if it named none."""
    output = load_run(run_dir).plan.get("output")
    named = output.get("formats") if isinstance(output, dict) else None
    asked = {str(f).lower() for f in named} & REPORT_FORMATS if isinstance(named, list) else set()
    return asked or set(REPORT_FORMATS)


def write_reports(run_dir: Path, formats: Iterable[str] | None = None) -> list[Path]:
    """Write the reports `formats` asks for (all of them when None) into `run_dir`.

    Other formats in `formats` (csv, json, ...) are the runtime's business and are
    ignored here, so a scenario's `output { formats [...] }` can be passed as is.
    Returns the files written, in a stable order (html, then md).
    """
    wanted = REPORT_FORMATS if formats is None else REPORT_FORMATS & {f.lower() for f in formats}
    if not wanted:
        return []
    view = build_view(load_run(run_dir))
    written = []
    if "html" in wanted:
        path = run_dir / "report.html"
        write_text_atomic(path, render_html(view))
        written.append(path)
    if "md" in wanted:
        path = run_dir / "report.md"
        write_text_atomic(path, render_markdown(view))
        written.append(path)
    return written
