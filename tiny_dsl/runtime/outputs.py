"""The run folder's files that hold what the simulation produced: transcript, results, personas.

The folder itself, its file names and its manifest are `tiny_dsl.rundir`'s; the
session writes these files into it after the run. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tiny_dsl.extraction import result_columns
from tiny_dsl.files import write_bytes_atomic
from tiny_dsl.plan.model import ExtractStep, FieldPlan, Plan, Step
from tiny_dsl.rundir import (
    MESSAGES_CSV,
    MESSAGES_JSONL,
    PERSONAS_DIR,
    RESULTS_CSV,
    RESULTS_JSON,
    RESULTS_JSONL,
    SUMMARY,
    TRANSCRIPT_JSONL,
    TRANSCRIPT_MD,
    write_json,
)
from tiny_dsl.runtime.engines.core import TranscriptEvent
from tiny_dsl.runtime.engines.prompts import time_label
from tiny_dsl.runtime.messages import message_rows, messages_csv, messages_jsonl

__all__ = [
    "LIST_SEPARATOR",
    "result_fields",
    "step_label",
    "write_messages",
    "write_personas",
    "write_results",
    "write_summaries",
    "write_transcript",
]

LIST_SEPARATOR = " | "
_PERSONA_WRITERS = 8
# Above this many recipients, transcript.md gives a count instead of the names.
_MAX_NAMED = 5


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
            return f"generate {step.population or 'personas'}"
        case "propose":
            return f"propose {step.population}"
        case "broadcast" | "ask":
            return f"{step.kind} {step.world}"
        case "deliver":
            touch = f".{step.touch}" if step.touch is not None else ""
            return f"deliver {step.intervention}{touch} in {step.world}"
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
            source = step.world if step.world is not None else ", ".join(step.group)
            return f"extract from {source}" + (f" at {step.at}" if step.at else "")
        case "extract_overall":
            return f"extract overall from {step.world}" + (f" at {step.at}" if step.at else "")
        case "tell" | "goal":
            return f"{step.kind} {', '.join(step.agents)}"
        case "converse":
            return f"converse {', '.join(step.agents)} with {step.partner}"
        case "context":
            return f"context {step.world}"
        case "replicate":
            return f"replicate {step.replicate}"
        case _:
            return step.kind


def write_transcript(run_dir: Path, plan: Plan, transcript: Sequence[TranscriptEvent]) -> None:
    """`transcript.jsonl` (one event per line) and `transcript.md` (grouped by step)."""
    lines = [json.dumps(event.to_json(), ensure_ascii=False) for event in transcript]
    write_bytes_atomic(run_dir / TRANSCRIPT_JSONL, "".join(f"{line}\n" for line in lines).encode())
    write_bytes_atomic(run_dir / TRANSCRIPT_MD, _transcript_markdown(plan, transcript).encode())


def _transcript_markdown(plan: Plan, transcript: Sequence[TranscriptEvent]) -> str:
    by_step: dict[str, list[TranscriptEvent]] = {}
    for event in transcript:
        by_step.setdefault(event.step, []).append(event)
    out = [f"# {plan.settings.title or plan.settings.scenario}", ""]
    out.append(f"Transcript of scenario `{plan.settings.scenario}` (`{plan.source_file}`).")
    out.append("Times are simulated. Private thoughts are in italics.")
    for number, step in enumerate(plan.steps, start=1):
        if step.kind in (
            "extract",
            "extract_overall",
            "analyze",
            "checkpoint",
            "generate",
            "propose",
        ):
            continue
        out += ["", f"## {number}. {step_label(step)}", "", f"`{step.id}` from `{step.origin}`", ""]
        events = by_step.get(step.id, [])
        rendered = _step_markdown(events, {agent.name for agent in plan.external_agents})
        out += rendered if rendered else ["_No one said or perceived anything._"]
    return "\n".join(out) + "\n"


def _step_markdown(events: list[TranscriptEvent], externals: set[str]) -> list[str]:
    """Speech with its listeners; stimuli nobody spoke (questions, messages) grouped by content.

    An external agent hears what is said to it (its session has no events here)."""
    spoken = {(e.agent, e.content) for e in events if e.kind == "action" and e.type == "TALK"}
    heard: dict[tuple[str, str], list[str]] = {}
    for e in events:
        if e.kind == "stimulus" and e.source and (e.source, e.content) in spoken:
            heard.setdefault((e.source, e.content), []).append(e.agent_name)
        elif e.kind == "action" and e.type == "TALK" and e.target in externals:
            heard.setdefault((e.agent, e.content), []).append(e.target)
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
    if event.type == "GOAL":
        return f"{names} {'sets' if len(recipients) == 1 else 'each set'} a goal: {event.content}"
    if event.type == "CONTEXT":
        return f"The situation changes for {names}: {event.content}"
    return f"{names}: {event.content}"


def _names(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    if len(unique) > _MAX_NAMED:
        return f"{len(unique)} people"
    return ", ".join(unique)


def result_fields(plan: Plan) -> list[FieldPlan]:
    """Every extracted field of the plan, first declaration first (the results' columns)."""
    fields: dict[str, FieldPlan] = {}
    for step in plan.steps:
        if isinstance(step, ExtractStep):
            for item in step.fields:
                fields.setdefault(item.name, item)
    return list(fields.values())


def write_summaries(run_dir: Path, summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """`summary.json` (the `extract overall` records), when there are any; the names written."""
    if not summaries:
        return []
    write_json(run_dir / SUMMARY, list(summaries))
    return [SUMMARY]


def write_messages(
    run_dir: Path,
    plan: Plan,
    transcript: Sequence[TranscriptEvent],
    personas: Mapping[str, Mapping[str, Any]],
    flags: Mapping[int, Sequence[str]] | None = None,
) -> list[str]:
    """`messages.jsonl` and `messages.csv` when `output.formats` asks for `messages`;
    `flags` are the quality flags of the transcript's events, by seq."""
    if "messages" not in plan.output.formats:
        return []
    rows = message_rows(plan, transcript, personas, flags)
    write_bytes_atomic(run_dir / MESSAGES_JSONL, messages_jsonl(rows).encode("utf-8"))
    write_bytes_atomic(run_dir / MESSAGES_CSV, messages_csv(rows).encode("utf-8"))
    return [MESSAGES_JSONL, MESSAGES_CSV]


def write_results(
    run_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    fields: list[FieldPlan],
    formats: Sequence[str],
) -> list[str]:
    """`results.json`, always (reports and `tts report` read it), then the extra
    formats `formats` asks for (`csv`, `jsonl`); returns the file names written."""
    write_json(run_dir / RESULTS_JSON, list(rows))
    written = [RESULTS_JSON]
    if "jsonl" in formats:
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_bytes_atomic(run_dir / RESULTS_JSONL, body.encode("utf-8"))
        written.append(RESULTS_JSONL)
    if "csv" in formats:
        write_bytes_atomic(run_dir / RESULTS_CSV, _csv(rows, fields).encode("utf-8"))
        written.append(RESULTS_CSV)
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
