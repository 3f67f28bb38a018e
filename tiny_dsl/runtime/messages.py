"""The `messages` output: every utterance of the run as a dataset, with who said it.

One row per thing an agent said or thought (a TALK or THINK action with text),
carrying what a downstream pipeline needs without the plan: the world, the step,
a simulated timestamp, the author's id, name, population, segment, sampled and
persona attributes and arm. It is the synthetic social-posts dataset of a
scenario (a sentiment pipeline's backtest input), written as `messages.jsonl`
and `messages.csv`.

Timestamps. The engines stamp every event of a round with the round's
simulated time, and rounds without `every` do not move the clock, so a whole
discussion would carry one timestamp. Here each conversation has its own clock
that moves by the time an utterance takes: a reaction pause plus typing time
for its words. A conversation is a world where agents hear each other (focus
group, interview), or one agent for a survey world and for steps outside any
world (a survey respondent answers alone). The clock never goes back, and it
jumps forward when the engines' clock does (a `wait`, `every`, a timing).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tiny_dsl.extraction import persona_attributes
from tiny_dsl.plan.model import Plan, replicate_of
from tiny_dsl.runtime.engines.core import TranscriptEvent

__all__ = [
    "MESSAGE_COLUMNS",
    "message_rows",
    "messages_csv",
    "messages_jsonl",
    "typing_seconds",
]

# What an utterance is: TinyTroupe's action types that carry the agent's words.
UTTERANCE_TYPES = {"TALK": "talk", "THINK": "think"}
# The simulated time an utterance takes: a pause before it, then typing at
# about 40 words a minute (chat and social posts are typed).
REACTION_S = 8
TYPING_S_PER_WORD = 1.5
MESSAGE_COLUMNS = (
    "replicate",
    "world",
    "step",
    "time",
    "agent",
    "name",
    "population",
    "segment",
    "kind",
    "target",
    "target_name",
    "quality",
    "text",
)
_TAIL = ("kind", "target", "target_name", "quality", "text")


@dataclass
class _Clock:
    now: datetime


def message_rows(
    plan: Plan,
    transcript: Sequence[TranscriptEvent],
    personas: Mapping[str, Mapping[str, Any]],
    flags: Mapping[int, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """The rows of `messages.jsonl`/`.csv`, in the order things were said; `quality`
    holds the flags of the utterance's turn (`runtime.quality`), comma-separated."""
    flags = flags or {}
    agents = {agent.id: agent for agent in plan.agents}
    worlds = {world.name: world for world in plan.worlds}
    clocks: dict[tuple[str | None, str | None], _Clock] = {}
    rows: list[dict[str, Any]] = []
    for event in _utterances(transcript):
        world = worlds.get(event.world) if event.world else None
        shared = world is not None and world.mode != "survey"
        key = (event.world, None if shared else event.agent)
        stamped = datetime.fromisoformat(event.time)
        clock = clocks.setdefault(key, _Clock(stamped))
        clock.now = max(clock.now, stamped)
        clock.now += timedelta(seconds=REACTION_S)
        spoken_at = clock.now
        clock.now += timedelta(seconds=typing_seconds(event.content))
        agent = agents.get(event.agent)
        row: dict[str, Any] = {
            "replicate": replicate_of(event.step),
            "world": event.world,
            "step": event.step,
            "time": spoken_at.isoformat(timespec="seconds"),
            "agent": event.agent,
            "name": event.agent_name,
            "population": agent.population if agent else None,
            "segment": agent.segment if agent else None,
        }
        for intervention in plan.interventions:
            row[f"variant_{intervention.name}"] = intervention.assignment.get(event.agent)
        if len(plan.interventions) == 1:
            row["variant"] = row[f"variant_{plan.interventions[0].name}"]
        if agent is not None:
            row.update(persona_attributes(agent, personas.get(agent.id, agent.persona or {})))
        row.update(
            kind=UTTERANCE_TYPES[event.type],
            target=event.target,
            target_name=event.target_name,
            quality=",".join(flags.get(event.seq, ())),
            text=event.content,
        )
        rows.append(row)
    return rows


def typing_seconds(text: str) -> int:
    """Whole seconds, so that timestamps stay exact at the second."""
    return round(TYPING_S_PER_WORD * len(text.split()))


def _utterances(transcript: Sequence[TranscriptEvent]) -> Iterator[TranscriptEvent]:
    for event in sorted(transcript, key=lambda item: item.seq):
        if event.kind == "action" and event.type in UTTERANCE_TYPES and event.content.strip():
            yield event


def messages_jsonl(rows: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def messages_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV with the fixed columns first, then arms and attributes (sorted), then the text."""
    present = {key for row in rows for key in row}
    middle = sorted(present - set(MESSAGE_COLUMNS))
    head = [c for c in MESSAGE_COLUMNS if c not in _TAIL]
    columns = [*head, *middle, *_TAIL]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buffer.getvalue()
