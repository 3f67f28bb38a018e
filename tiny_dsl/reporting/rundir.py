"""Read a run directory, whatever state it is in.

A report is most needed when a run went wrong, so nothing here raises on a missing
or damaged file: each problem becomes a sentence in `RunData.problems`, shown at the
top of the report, and the rest of the run is still reported. When `analysis.json`
is missing or unreadable the statistics are recomputed from `results.json` and
`plan.json` (no model calls), and the report says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tiny_dsl.analysis import AnalysisResult, analyze_plan
from tiny_dsl.plan.model import Plan

MANIFEST = "manifest.json"
PLAN = "plan.json"
RESULTS = "results.json"
RESULTS_LINES = "results.jsonl"
ANALYSIS = "analysis.json"
TRANSCRIPT = "transcript.jsonl"


@dataclass
class RunData:
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)  # raw JSON: readable even if stale
    rows: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    analysis: AnalysisResult | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, Any]:
        settings = self.plan.get("settings")
        return settings if isinstance(settings, dict) else {}

    @property
    def scenario(self) -> str:
        return str(self.manifest.get("scenario") or self.settings.get("scenario") or "scenario")


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        problems.append(f"{path.name} is missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name} could not be read ({exc})")
        return None


def _read_lines(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """JSON Lines, skipping (and counting) lines that are not JSON objects."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name} could not be read ({exc})")
        return []
    records: list[dict[str, Any]] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        problems.append(f"{path.name}: {bad} unreadable line(s) skipped")
    return records


def _dict(value: Any, name: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    problems.append(f"{name} is not a JSON object")
    return {}


def _rows(run_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    if not (run_dir / RESULTS).is_file() and (run_dir / RESULTS_LINES).is_file():
        return _read_lines(run_dir / RESULTS_LINES, problems)
    value = _read_json(run_dir / RESULTS, problems)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{RESULTS} is not a list of rows")
        return []
    return [row for row in value if isinstance(row, dict)]


def _analysis(run: RunData) -> AnalysisResult | None:
    path = run.path / ANALYSIS
    reason = f"{ANALYSIS} is missing"
    if path.is_file():
        try:
            return AnalysisResult.from_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValidationError) as exc:
            reason = f"{ANALYSIS} could not be read ({str(exc).splitlines()[0]})"
    if not run.plan or not run.rows:
        run.problems.append(f"{reason}; no statistics (they need {PLAN} and results)")
        return None
    try:
        plan = Plan.model_validate(run.plan)
    except ValidationError as exc:
        run.problems.append(
            f"{reason}, and {PLAN} does not match this version of tiny_dsl "
            f"({exc.error_count()} validation errors): no statistics"
        )
        return None
    run.problems.append(f"{reason}: statistics recomputed from {PLAN} and the results")
    return analyze_plan(plan, run.rows)


def load_run(run_dir: Path) -> RunData:
    """Everything a report needs from a run directory, with every problem named."""
    run = RunData(path=run_dir)
    if not run_dir.is_dir():
        run.problems.append(f"{run_dir} is not a directory")
        return run
    run.manifest = _dict(_read_json(run_dir / MANIFEST, run.problems), MANIFEST, run.problems)
    run.plan = _dict(_read_json(run_dir / PLAN, run.problems), PLAN, run.problems)
    run.rows = _rows(run_dir, run.problems)
    if (run_dir / TRANSCRIPT).is_file():
        run.transcript = _read_lines(run_dir / TRANSCRIPT, run.problems)
    else:
        run.problems.append(f"{TRANSCRIPT} is missing")
    run.analysis = _analysis(run)
    return run
