"""What a run leaves behind: one folder per run under the output directory, plus `latest`.

    <output_dir>/<run-id>/manifest.json    what ran, on what, how long, how much
                         plan.json          the executed plan
                         transcript.jsonl   every stimulus and action
                         transcript.md      the same, for reading
                         results.csv|json|jsonl   as the plan's `output.formats` asks
                         analysis.json      when the plan has an `analyze` step
                         personas/<agent id>.agent.json   every agent's persona, as
                                            a TinyTroupe agent specification
    <output_dir>/latest -> <run-id>

Every file is written atomically, so a reader (or a killed run) never sees half
a file. The run id is the UTC start time plus the plan hash prefix, with a
counter appended if two runs of one plan start within the same second.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from tiny_dsl.extraction import result_columns
from tiny_dsl.files import write_bytes_atomic
from tiny_dsl.plan.model import FieldPlan, Plan, Step
from tiny_dsl.runtime.engines.core import TranscriptEvent
from tiny_dsl.runtime.engines.prompts import time_label

__all__ = [
    "LIST_SEPARATOR",
    "PERSONAS_DIR",
    "REPORT_FORMATS",
    "create_run_dir",
    "point_latest",
    "step_label",
    "write_json",
    "write_personas",
    "write_reports",
    "write_results",
    "write_transcript",
]

LIST_SEPARATOR = " | "
REPORT_FORMATS = ("html", "md")
PERSONAS_DIR = "personas"
_PERSONA_WRITERS = 8
# Above this many recipients, transcript.md gives a count instead of the names.
_MAX_NAMED = 5


def create_run_dir(output_dir: Path, started: datetime, plan_hash: str) -> tuple[str, Path]:
    """Create and return a fresh `<output_dir>/<run-id>`.

    `mkdir` without `exist_ok` is the uniqueness check, so two processes starting
    in the same second get different folders.
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


def point_latest(output_dir: Path, run_id: str) -> None:
    """Make `<output_dir>/latest` name the run: a relative symlink, swapped in atomically.

    Where symlinks are not available (some Windows setups), `latest` becomes a
    text file holding the run id.
    """
    latest = output_dir / "latest"
    temp = output_dir / f".latest.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    try:
        temp.symlink_to(run_id, target_is_directory=True)
    except (OSError, NotImplementedError):
        write_bytes_atomic(latest, (run_id + "\n").encode("utf-8"))
        return
    os.replace(temp, latest)


def write_personas(run_dir: Path, personas: Mapping[str, Mapping[str, Any]]) -> int:
    """`personas/<agent id>.agent.json` for each agent; returns how many were written.

    Each file is `{"type": "TinyPerson", "persona": {...}}`, the agent specification
    `TinyPerson.load_specification` reads and `persona NAME from "..."` accepts, so a
    generated population can be inspected, declared as personas of another scenario,
    or loaded into TinyTroupe. Files are named by agent id, as in the results'
    `agent` column and stable across re-runs of a plan (a generated name is not):
    `lisa.agent.json`, and one folder per population (`consumers/007.agent.json`),
    which `TinyPerson.load_specifications_from_folder` loads as a group.
    """

    def write(agent_id: str) -> None:
        spec = {"type": "TinyPerson", "persona": personas[agent_id]}
        write_json(run_dir / PERSONAS_DIR / _persona_file(agent_id), spec)

    # Each atomic write waits for its fsync (about 4 ms on a plain disk: 40 s for
    # 10,000 members); issued from several threads, the file system commits them
    # together, about ten times faster.
    with ThreadPoolExecutor(max_workers=_PERSONA_WRITERS) as pool:
        list(pool.map(write, personas))
    return len(personas)


def _persona_file(agent_id: str) -> str:
    # Ids from `compile_plan` are names or `population/index`; a hand-edited plan's
    # are cut down to word characters, so that no file lands outside `personas/`.
    parts = [re.sub(r"[^\w-]", "_", part) for part in agent_id.split("/") if part]
    return "/".join(parts) + ".agent.json"


def step_label(step: Step) -> str:
    """A short human name for a step, as progress lines and transcript.md show it."""
    match step.kind:
        case "generate":
            return f"generate {step.population}"
        case "broadcast" | "ask":
            return f"{step.kind} {step.world}"
        case "deliver":
            return f"deliver {step.intervention} in {step.world}"
        case "run":
            return f"run {step.world} (round {step.round}/{step.of})"
        case "wait":
            return f"wait {step.text}"
        case "think":
            return f"think {', '.join(step.agents)}"
        case "interview":
            return f"interview by {step.interviewer}"
        case "checkpoint":
            return f"checkpoint {step.name}"
        case "extract":
            return f"extract from {step.world}"
        case _:
            return step.kind


def write_transcript(run_dir: Path, plan: Plan, transcript: Sequence[TranscriptEvent]) -> None:
    """`transcript.jsonl` (one event per line) and `transcript.md` (grouped by step)."""
    lines = [json.dumps(event.to_json(), ensure_ascii=False) for event in transcript]
    write_bytes_atomic(
        run_dir / "transcript.jsonl", "".join(f"{line}\n" for line in lines).encode()
    )
    write_bytes_atomic(run_dir / "transcript.md", _transcript_markdown(plan, transcript).encode())


def _transcript_markdown(plan: Plan, transcript: Sequence[TranscriptEvent]) -> str:
    by_step: dict[str, list[TranscriptEvent]] = {}
    for event in transcript:
        by_step.setdefault(event.step, []).append(event)
    out = [f"# {plan.settings.title or plan.settings.scenario}", ""]
    out.append(f"Transcript of scenario `{plan.settings.scenario}` (`{plan.source_file}`).")
    out.append("Times are simulated. Private thoughts are in italics.")
    for number, step in enumerate(plan.steps, start=1):
        if step.kind in ("extract", "analyze", "checkpoint", "generate"):
            continue
        out += ["", f"## {number}. {step_label(step)}", "", f"`{step.id}` from `{step.origin}`", ""]
        events = by_step.get(step.id, [])
        rendered = _step_markdown(events)
        out += rendered if rendered else ["_No one said or perceived anything._"]
    return "\n".join(out) + "\n"


def _step_markdown(events: list[TranscriptEvent]) -> list[str]:
    """Speech with its listeners; stimuli nobody spoke (questions, messages) grouped by content."""
    spoken = {(e.agent, e.content) for e in events if e.kind == "action" and e.type == "TALK"}
    heard: dict[tuple[str, str], list[str]] = {}
    for e in events:
        if e.kind == "stimulus" and e.source and (e.source, e.content) in spoken:
            heard.setdefault((e.source, e.content), []).append(e.agent_name)
    lines: list[str] = []
    index = 0
    while index < len(events):
        e = events[index]
        index += 1
        when = time_label(e.time)
        if e.kind == "action":
            if e.type == "TALK":
                to = f" to {e.target_name}" if e.target_name else ""
                listeners = heard.get((e.agent, e.content), [])
                suffix = (
                    f" _(heard by {_names(listeners)})_" if listeners else " _(heard by no one)_"
                )
                lines.append(f'- [{when}] **{e.agent_name}**{to}: "{e.content}"{suffix}')
            elif e.type == "THINK":
                lines.append(f"- [{when}] _{e.agent_name} thinks: {e.content}_")
            continue
        if e.source and (e.source, e.content) in spoken:
            continue
        # Group the run of identical stimuli (same message to many agents at one time).
        recipients = [e.agent_name]
        while index < len(events):
            other = events[index]
            same = (other.kind, other.type, other.content, other.source, other.time)
            if same != (e.kind, e.type, e.content, e.source, e.time):
                break
            recipients.append(other.agent_name)
            index += 1
        lines.append(f"- [{when}] {_stimulus_line(e, recipients)}")
    return lines


def _stimulus_line(event: TranscriptEvent, recipients: list[str]) -> str:
    names = _names(recipients)
    if event.type == "THOUGHT":
        verb = "thinks" if len(recipients) == 1 else "each think"
        return f"_{names} {verb}: {event.content}_"
    if event.type == "CONVERSATION":
        speaker = f"{event.source_name} to " if event.source_name else "To "
        return f'{speaker}{names}: "{event.content}"'
    return f"{names}: {event.content}"


def _names(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    if len(unique) > _MAX_NAMED:
        return f"{len(unique)} people"
    return ", ".join(unique)


def write_results(
    run_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    fields: list[FieldPlan],
    formats: Sequence[str],
) -> list[str]:
    """`results.<fmt>` for each result format asked for; returns the file names written."""
    written: list[str] = []
    if "json" in formats:
        write_json(run_dir / "results.json", list(rows))
        written.append("results.json")
    if "jsonl" in formats:
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_bytes_atomic(run_dir / "results.jsonl", body.encode("utf-8"))
        written.append("results.jsonl")
    if "csv" in formats:
        write_bytes_atomic(run_dir / "results.csv", _csv(rows, fields).encode("utf-8"))
        written.append("results.csv")
    return written


def _csv(rows: Sequence[Mapping[str, Any]], fields: list[FieldPlan]) -> str:
    columns = result_columns(rows, fields)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return LIST_SEPARATOR.join(str(item) for item in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{key}: {item}" for key, item in value.items())
    return str(value)


def write_reports(run_dir: Path, formats: Sequence[str]) -> dict[str, Any]:
    """Have `tiny_dsl.reporting.write_reports` write the html/md reports asked for.

    Returns what happened, for the manifest. Reports are never faked here: if
    the reporting module is missing, the manifest says so.
    """
    wanted = [fmt for fmt in formats if fmt in REPORT_FORMATS]
    if not wanted:
        return {"requested": []}
    try:
        module = importlib.import_module("tiny_dsl.reporting")
    except ImportError:
        module = None
    writer = getattr(module, "write_reports", None)
    if writer is None:
        return {
            "requested": wanted,
            "status": "skipped",
            "reason": "the reporting module (tiny_dsl.reporting) is not available",
        }
    try:
        written = writer(run_dir, wanted)
    except Exception as exc:
        # The run itself succeeded and its results are on disk; `tts report` can retry.
        return {"requested": wanted, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    return {"requested": wanted, "status": "written", "files": [Path(p).name for p in written]}
