"""The run folder: what a run leaves behind, its file names, and its typed manifest.

    <output_dir>/<run-id>/manifest.json    `Manifest`: what ran, on what, how long, how much
                         plan.json          the executed plan
                         transcript.jsonl   every stimulus and action
                         transcript.md      the same, for reading
                         results.json       always; results.csv / results.jsonl as the
                                            plan's `output.formats` asks
                         analysis.json      when the plan has an `analyze` step
                         summary.json       when the plan has `extract overall` steps:
                                            one record per step, {world, step, fields...}
                         messages.jsonl / messages.csv    with the `messages` format: one
                                            row per utterance, with its author's attributes
                         personas/<agent id>.agent.json   every agent's persona
                         report.html / report.md          as `output.formats` asks
    <output_dir>/latest -> <run-id>

This module sits below the runtime (which writes the folder) and reporting (which
reads it back), so both agree on one set of names and one manifest model. Every
file is written atomically, so a reader (or a killed run) never sees half a file.
Reading never raises: a report is most needed when a run went wrong, so each
problem with a folder becomes a sentence in `RunFolder.problems` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tiny_dsl.files import write_bytes_atomic

MANIFEST = "manifest.json"
PLAN = "plan.json"
TRANSCRIPT_JSONL = "transcript.jsonl"
TRANSCRIPT_MD = "transcript.md"
RESULTS_JSON = "results.json"
RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
ANALYSIS = "analysis.json"
SUMMARY = "summary.json"
MESSAGES_JSONL = "messages.jsonl"
MESSAGES_CSV = "messages.csv"
PERSONAS_DIR = "personas"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_PDF = "report.pdf"
LATEST = "latest"

StepStatus = Literal["executed", "restored", "skipped", "failed", "not_run"]
RunStatus = Literal["ok", "expectations_failed", "failed"]


class _Record(BaseModel):
    # Unknown keys are kept out of the model but do not make an older folder unreadable.
    model_config = ConfigDict(extra="ignore")


class QualityCounts(_Record):
    """Answer-quality checks (`runtime.quality`): turns and extracted answers checked,
    how many were flagged, and the count of each flag."""

    turns: int = 0
    turns_flagged: int = 0
    answers: int = 0
    answers_flagged: int = 0
    flags: dict[str, int] = Field(default_factory=dict)
    # `quality { judge [...] }`: the turns the judge scored, and the mean score by criterion.
    judged: int = 0
    scores: dict[str, float] = Field(default_factory=dict)


class StepRecord(_Record):
    """How one step fared in a run (the manifest's `steps`)."""

    id: str
    kind: str
    label: str
    origin: str  # `file:line:col` of the statement
    status: StepStatus = "not_run"
    seconds: float = 0.0
    calls: int = 0  # requests: sent to the provider plus answered from the cache
    model_calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    note: str = ""
    quality: QualityCounts | None = None  # None: the step has no turn or answer


class Backend(_Record):
    provider: str
    model: str


class AgentModel(_Record):
    """The model and temperature an agent with its own settings used."""

    model: str
    temperature: float


class ScenarioSettings(_Record):
    """The model settings the scenario asked for (before `--provider` and friends)."""

    provider: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_concurrency: int | None = None
    budget_usd: float | None = None
    max_calls: int | None = None


class Reports(_Record):
    """Which reports the scenario asked for, and whether they were written."""

    requested: list[str] = Field(default_factory=list)
    status: Literal["none", "written", "failed"] = "none"
    files: list[str] = Field(default_factory=list)
    reason: str = ""


class Manifest(_Record):
    tiny_dsl_version: str
    run_id: str
    scenario: str
    title: str = ""
    source_file: str = ""
    source_hash: str = ""
    plan_hash: str = ""
    schema_version: int = 0
    seed: int | None = None
    engine: str = ""
    # Who actually answered when that is one backend (a server may report another
    # model than configured); `configured` is what was asked for, `answered_by`
    # every backend that answered (the cache included).
    provider: str = ""
    model: str = ""
    configured: Backend | None = None
    answered_by: list[Backend] = Field(default_factory=list)
    scenario_settings: ScenarioSettings = Field(default_factory=ScenarioSettings)
    started: str = ""
    finished: str = ""
    duration_s: float = 0.0
    steps: list[StepRecord] = Field(default_factory=list)
    steps_executed: int = 0
    steps_restored: int = 0
    model_calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    repairs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    # Calls to external agents (systems under test), counted apart from the model's.
    external_calls: int = 0
    external_cache_hits: int = 0
    external_retries: int = 0
    quality: QualityCounts = Field(default_factory=QualityCounts)  # over every step
    env_vars: list[str] = Field(default_factory=list)
    status: RunStatus
    exit_code: int
    error: str | None = None
    # Whether the plan had an `analyze` step, so that analysis.json is expected.
    analysis: bool = False
    # ExpectationResult objects as JSON (the analysis stage's model, above this one).
    expectations: list[dict[str, Any]] | None = None
    expectations_failed: int = 0
    files: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    reports: Reports = Field(default_factory=Reports)
    # Agents with their own `model` or `temperature` (every other agent used the
    # scenario's: `model`, `scenario_settings`), and the calls asked for by model.
    agent_models: dict[str, AgentModel] = Field(default_factory=dict)
    calls_by_model: dict[str, int] = Field(default_factory=dict)


# ------------------------------------------------------------------- writing


def create_run_dir(output_dir: Path, started: datetime, plan_hash: str) -> tuple[str, Path]:
    """Create and return a fresh `<output_dir>/<run-id>`.

    The run id is the UTC start time plus the plan hash prefix, with a counter
    appended if two runs of one plan start within the same second: `mkdir`
    without `exist_ok` is the uniqueness check, so two processes starting in the
    same second get different folders.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    base = f"{started.strftime('%Y%m%d-%H%M%S')}-{plan_hash.split(':')[-1][:8]}"
    run_id, number = base, 1
    while True:
        try:
            (output_dir / run_id).mkdir()
        except FileExistsError:
            number += 1
            run_id = f"{base}-{number}"
            continue
        return run_id, output_dir / run_id


def write_json(path: Path, data: Any) -> None:
    write_bytes_atomic(
        path, (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    )


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    write_json(run_dir / MANIFEST, manifest.model_dump(mode="json"))


def point_latest(output_dir: Path, run_id: str) -> None:
    """Make `<output_dir>/latest` name the run: a relative symlink, swapped in atomically.

    Where symlinks are not available (some Windows setups), `latest` becomes a
    text file holding the run id.
    """
    latest = output_dir / LATEST
    temp = output_dir / f".{LATEST}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    try:
        temp.symlink_to(run_id, target_is_directory=True)
    except (OSError, NotImplementedError):
        write_bytes_atomic(latest, (run_id + "\n").encode("utf-8"))
        return
    os.replace(temp, latest)


# ------------------------------------------------------------------- reading


@dataclass
class RunFolder:
    """What a run folder holds, read without ever raising; `problems` says what was wrong."""

    path: Path
    manifest: Manifest | None = None
    plan: dict[str, Any] = field(default_factory=dict)  # raw JSON: readable even if stale
    rows: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)  # summary.json, if any
    transcript: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_run_folder(run_dir: Path) -> RunFolder:
    folder = RunFolder(path=run_dir)
    if not run_dir.is_dir():
        folder.problems.append(f"{run_dir} is not a directory")
        return folder
    folder.manifest = _manifest(run_dir, folder.problems)
    folder.plan = _object(_read_json(run_dir / PLAN, folder.problems), PLAN, folder.problems)
    folder.rows = _rows(run_dir, folder.problems)
    folder.summaries = _summaries(run_dir, folder.problems)
    if (run_dir / TRANSCRIPT_JSONL).is_file():
        folder.transcript = _read_lines(run_dir / TRANSCRIPT_JSONL, folder.problems)
    else:
        folder.problems.append(f"{TRANSCRIPT_JSONL} is missing")
    return folder


def _manifest(run_dir: Path, problems: list[str]) -> Manifest | None:
    value = _object(_read_json(run_dir / MANIFEST, problems), MANIFEST, problems)
    if not value:
        return None
    try:
        return Manifest.model_validate(value)
    except ValidationError as exc:
        problems.append(
            f"{MANIFEST} does not match this version of tiny_dsl "
            f"({exc.error_count()} validation errors, the first at "
            f"{'.'.join(str(part) for part in exc.errors()[0]['loc'])})"
        )
        return None


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        problems.append(f"{path.name} is missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
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
        except (json.JSONDecodeError, RecursionError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        problems.append(f"{path.name}: {bad} unreadable line{'s' if bad != 1 else ''} skipped")
    return records


def _object(value: Any, name: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    problems.append(f"{name} is not a JSON object")
    return {}


def _rows(run_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    # Folders written before results.json was always written may hold only the lines.
    if not (run_dir / RESULTS_JSON).is_file() and (run_dir / RESULTS_JSONL).is_file():
        return _read_lines(run_dir / RESULTS_JSONL, problems)
    value = _read_json(run_dir / RESULTS_JSON, problems)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{RESULTS_JSON} is not a list of rows")
        return []
    return [row for row in value if isinstance(row, dict)]


def _summaries(run_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    """`summary.json`'s records; a run without `extract overall` has none (no file)."""
    if not (run_dir / SUMMARY).is_file():
        return []
    value = _read_json(run_dir / SUMMARY, problems)
    if not isinstance(value, list):
        problems.append(f"{SUMMARY} is not a list of records")
        return []
    return [record for record in value if isinstance(record, dict)]
