"""Reports of a run: report.html, report.md, and the differences between two runs.

Everything here reads a run directory and never calls a model, so `tts report` and
`tts diff` are fast and work offline on any run, even an incomplete one.
"""

from tiny_dsl.reporting.diff import RunDiff, build_diff, diff_runs, diff_runs_json
from tiny_dsl.reporting.report import REPORT_FORMATS, run_report_formats, write_reports
from tiny_dsl.reporting.rundir import RunData, load_run

__all__ = [
    "REPORT_FORMATS",
    "RunData",
    "RunDiff",
    "build_diff",
    "diff_runs",
    "diff_runs_json",
    "load_run",
    "run_report_formats",
    "write_reports",
]
