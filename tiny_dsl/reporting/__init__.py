"""Reports of a run: report.html, report.md, and the differences between two runs.

Nothing here calls a model: a report is built from a `RunData`, which `tts run`
passes from memory and `tts report` / `tts diff` read from a run folder
(`load_run`, statistics recomputed from the results), so both work offline on
any run, even an incomplete one.
"""

from tiny_dsl.reporting.diff import RunDiff, build_diff, diff_runs, diff_runs_json
from tiny_dsl.reporting.report import REPORT_FORMATS, report_formats, write_reports
from tiny_dsl.reporting.rundir import RunData, load_run
from tiny_dsl.reporting.view import ReportView, build_view

__all__ = [
    "REPORT_FORMATS",
    "ReportView",
    "RunData",
    "RunDiff",
    "build_diff",
    "build_view",
    "diff_runs",
    "diff_runs_json",
    "load_run",
    "report_formats",
    "write_reports",
]
