"""A run as reports see it: the folder's contents plus the statistics over its results.

`tts run` builds a `RunData` in memory from what it just produced; `tts report` and
`tts diff` read one back with `load_run`, which never raises (a report is most needed
when a run went wrong: every problem becomes a sentence in `problems`) and always
recomputes the statistics from the results it finds (no model calls), so a report can
never show numbers that disagree with the results next to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tiny_dsl.analysis import AnalysisResult, analyze_plan
from tiny_dsl.plan.model import Plan
from tiny_dsl.rundir import PLAN, Manifest, read_run_folder


@dataclass
class RunData:
    path: Path
    manifest: Manifest | None = None
    plan: dict[str, Any] = field(default_factory=dict)  # raw JSON: readable even if stale
    rows: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)  # `extract overall` records
    analysis: AnalysisResult | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, Any]:
        settings = self.plan.get("settings")
        return settings if isinstance(settings, dict) else {}

    @property
    def scenario(self) -> str:
        named = self.manifest.scenario if self.manifest else ""
        return str(named or self.settings.get("scenario") or "scenario")


def _analysis(run: RunData) -> AnalysisResult | None:
    """The statistics over the run's results, or None with the reason in `problems`."""
    if not run.plan:
        run.problems.append(f"no statistics: they need {PLAN}")
        return None
    try:
        plan = Plan.model_validate(run.plan)
    except ValidationError as exc:
        run.problems.append(
            f"{PLAN} does not match this version of tiny_dsl "
            f"({exc.error_count()} validation errors): no statistics"
        )
        return None
    return analyze_plan(plan, run.rows)


def load_run(run_dir: Path) -> RunData:
    """Everything a report needs from a run directory, with every problem named."""
    folder = read_run_folder(run_dir)
    run = RunData(
        path=run_dir,
        manifest=folder.manifest,
        plan=folder.plan,
        rows=folder.rows,
        transcript=folder.transcript,
        summaries=folder.summaries,
        problems=folder.problems,
    )
    if run_dir.is_dir():
        run.analysis = _analysis(run)
    return run
