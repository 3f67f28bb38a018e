"""The quality of answers: every agent turn and every extracted answer, checked.

A small or confused model produces answers that look like data and are not:
nothing said, the text it was just told said back, a schema's placeholder, the
same line again. These checks find them without a model, from the transcript
and the result rows, the same way for both engines:

* `empty`: a turn that says and thinks nothing (only DONE, or blank text); an
  extracted text answer that is blank.
* `echo`: a turn with a line that is mostly something the agent heard recently
  (one of the last `ECHO_WINDOW` things it perceived: the longest passage in
  common covers at least `ECHO_SHARE` of the line, or the two are near-identical).
* `placeholder`: text that is a schema placeholder ("short text", "...",
  "<your answer>"), a line that is only a date and time or only the name of
  someone in the simulation (copied from the prompt), or an extracted answer
  that only restates its field's name or description.
* `repeat`: a turn with a line that says again what a line of the agent's
  previous turn said, or what another line of the same turn says.
* `low_<criterion>` (`quality { judge [...] }`): the judge scored the turn below
  the threshold on that criterion (`runtime.judge`).

A turn is an agent's consecutive actions with nothing perceived in between (one
model call on either engine). An external agent's turns are its replies, and
what it heard is what was said to it. Counts per step go to the manifest and
the reports; flagged utterances and answers are marked in `messages` and in the
results (`_quality`).
"""

from __future__ import annotations

import difflib
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tiny_dsl.extraction.rows import QUALITY_COLUMN, REPLICATE_COLUMN
from tiny_dsl.plan.model import ExtractStep, FieldPlan, Plan, replicate_of
from tiny_dsl.runtime.engines.core import TranscriptEvent

__all__ = [
    "QUALITY_COLUMN",
    "QUALITY_FLAGS",
    "Assessment",
    "StepQuality",
    "Turn",
    "answer_flags",
    "assess_run",
    "regenerate_note",
    "transcript_turns",
    "turn_flags",
]

QUALITY_FLAGS = ("empty", "echo", "placeholder", "repeat")
# An echo: the longest passage shared with what was heard covers this much of the turn.
ECHO_SHARE = 0.6
# How many of the latest things an agent perceived count as "just heard".
ECHO_WINDOW = 6
ECHO_MIN_CHARS = 12
NEAR_IDENTICAL = 0.9
PLACEHOLDERS = frozenset(
    {
        "short text",
        "text",
        "string",
        "content",
        "your answer",
        "your answer here",
        "answer",
        "lorem ipsum",
        "placeholder",
        "example",
        "n a",
        "tbd",
        "todo",
        "xxx",
        "none",
        "null",
    }
)
_SPOKEN = ("TALK", "THINK")
_WORDS = re.compile(r"[^\w]+")
_BRACKETED = re.compile(r"^\s*(<[^<>]*>|\[[^\[\]]*\]|\{[^{}]*\}|\.{3,}|…+)\s*$")
# A line that is only a date and/or a time, as prompts show them.
_TIMESTAMP = re.compile(r"^\W*(\d{4}-\d{2}-\d{2})?[\sT]*(\d{1,2}:\d{2}(:\d{2})?)?\W*$")


def _norm(text: str) -> str:
    return _WORDS.sub(" ", text.casefold()).strip()


def is_placeholder(text: str, own: Iterable[str] = ()) -> bool:
    """A generic placeholder, a bare time stamp, or one of `own` (a field's name and
    description, or the names of the people in the simulation)."""
    if _BRACKETED.match(text) or (_TIMESTAMP.match(text) and any(c.isdigit() for c in text)):
        return True
    words = _norm(text)
    return words in PLACEHOLDERS or words in {_norm(item) for item in own if item}


def is_echo(said: str, heard: str) -> bool:
    """Whether `said` is mostly `heard` said back (see the module docstring)."""
    mine, theirs = _norm(said), _norm(heard)
    if len(mine) < ECHO_MIN_CHARS or not theirs:
        return False
    matcher = difflib.SequenceMatcher(None, mine, theirs, autojunk=False)
    common = matcher.find_longest_match(0, len(mine), 0, len(theirs)).size
    return common >= ECHO_SHARE * len(mine) or matcher.ratio() >= NEAR_IDENTICAL


def is_repeat(said: str, previous: str | None) -> bool:
    if previous is None:
        return False
    mine, before = _norm(said), _norm(previous)
    if not mine or not before:
        return False
    return mine == before or difflib.SequenceMatcher(None, mine, before).ratio() >= NEAR_IDENTICAL


def turn_flags(
    said: Sequence[str],
    heard: Sequence[str],
    previous: str | None,
    names: Iterable[str] = (),
) -> list[str]:
    """The flags of one turn: `said` its TALK and THINK texts, `heard` what the agent
    perceived recently (its last `ECHO_WINDOW` perceptions), `previous` what its
    previous turn said (one line per action), `names` the people in the simulation."""
    lines = [item for item in said if item.strip()]
    if not lines:
        return ["empty"]
    names = tuple(names)
    flags = []
    if any(is_echo(line, item) for line in lines for item in heard):
        flags.append("echo")
    if any(is_placeholder(line, names) for line in lines):
        flags.append("placeholder")
    before = [*(previous.splitlines() if previous else []), *([previous] if previous else [])]
    if any(is_repeat(line, item) for line in lines for item in before) or any(
        is_repeat(line, other) for i, line in enumerate(lines) for other in lines[:i]
    ):
        flags.append("repeat")
    return flags


def regenerate_note(asked_again: int, still_flagged: int) -> str:
    """The run's note on `quality { regenerate N }`."""
    turns = "turn was" if asked_again == 1 else "turns were"
    return (
        f"{asked_again} flagged agent {turns} asked again (quality regenerate); "
        f"{still_flagged} still flagged after the last attempt"
    )


def answer_flags(value: Any, spec: FieldPlan) -> list[str]:
    """The flags of one extracted answer (text and list fields; others are typed)."""
    own = (spec.name.replace("_", " "), spec.description)
    if spec.kind == "text":
        if value is None:
            return []  # missing: counted as missing, not as an answer
        text = str(value)
        if not text.strip():
            return ["empty"]
        return ["placeholder"] if is_placeholder(text, own) else []
    if spec.kind == "list" and isinstance(value, list):
        items = [str(item) for item in value]
        if not any(item.strip() for item in items):
            return ["empty"]
        return ["placeholder"] if any(is_placeholder(item, own) for item in items) else []
    return []


@dataclass
class StepQuality:
    """What was checked in one step, and what was flagged, by flag."""

    turns: int = 0
    turns_flagged: int = 0
    answers: int = 0
    answers_flagged: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    # Turns the judge scored, and the sum of their scores by criterion.
    judged: int = 0
    score_sums: dict[str, int] = field(default_factory=dict)

    def judge(self, scores: Mapping[str, int]) -> None:
        self.judged += 1
        for name, score in scores.items():
            self.score_sums[name] = self.score_sums.get(name, 0) + score

    def mean_scores(self) -> dict[str, float]:
        """The judge's mean score of each criterion over the turns it scored."""
        return {name: round(total / self.judged, 2) for name, total in self.score_sums.items()}

    def add(self, other: StepQuality) -> None:
        self.turns += other.turns
        self.turns_flagged += other.turns_flagged
        self.answers += other.answers
        self.answers_flagged += other.answers_flagged
        for flag, count in other.flags.items():
            self.flags[flag] = self.flags.get(flag, 0) + count
        self.judged += other.judged
        for name, total in other.score_sums.items():
            self.score_sums[name] = self.score_sums.get(name, 0) + total

    def count(self, flags: Sequence[str], *, turn: bool) -> None:
        if turn:
            self.turns += 1
            self.turns_flagged += bool(flags)
        else:
            self.answers += 1
            self.answers_flagged += bool(flags)
        for flag in flags:
            self.flags[flag] = self.flags.get(flag, 0) + 1


@dataclass
class Assessment:
    """The checks of a run: counts per step id, and flags per event seq (every action
    of a flagged turn) and per result row (field -> flags)."""

    steps: dict[str, StepQuality] = field(default_factory=dict)
    events: dict[int, list[str]] = field(default_factory=dict)
    rows: list[dict[str, list[str]]] = field(default_factory=list)

    def total(self) -> StepQuality:
        total = StepQuality()
        for step in self.steps.values():
            total.add(step)
        return total


@dataclass(frozen=True)
class Turn:
    """One agent turn of a transcript, with what the checks compare it to."""

    agent: str
    step: str
    events: tuple[TranscriptEvent, ...]
    said: tuple[str, ...]  # its TALK and THINK texts
    heard: tuple[str, ...]  # the last `ECHO_WINDOW` things the agent perceived
    previous: str | None  # what its previous turn said, a line per action
    external: bool  # a reply of an external agent (a system under test)

    @property
    def key(self) -> int:
        """The turn's number: the seq of its first event."""
        return self.events[0].seq

    @property
    def text(self) -> str:
        return "\n".join(item for item in self.said if item.strip())


def _window(heard: dict[str, deque[str]], agent: str) -> deque[str]:
    return heard.setdefault(agent, deque(maxlen=ECHO_WINDOW))


def transcript_turns(plan: Plan, transcript: Sequence[TranscriptEvent]) -> list[Turn]:
    """The turns of a transcript, in order (see the module docstring)."""
    turns: list[Turn] = []
    externals = {agent.name for agent in plan.external_agents}
    heard: dict[str, deque[str]] = {}  # agent -> what it perceived last
    previous: dict[str, str] = {}  # agent -> what its last turn said
    turn: list[TranscriptEvent] = []

    def close_turn() -> None:
        if not turn:
            return
        agent = turn[0].agent
        said = tuple(e.content for e in turn if e.type in _SPOKEN)
        done = Turn(
            agent=agent,
            step=turn[0].step,
            events=tuple(turn),
            said=said,
            heard=tuple(heard.get(agent, ())),
            previous=previous.get(agent),
            external=agent in externals,
        )
        turns.append(done)
        previous[agent] = done.text
        turn.clear()

    for event in sorted(transcript, key=lambda item: item.seq):
        if event.kind == "action":
            if turn and (turn[0].agent != event.agent or turn[0].step != event.step):
                close_turn()
            turn.append(event)
            if event.type == "TALK" and event.target in externals:
                _window(heard, event.target).append(event.content)
        else:
            if turn and turn[0].agent == event.agent:
                close_turn()
            _window(heard, event.agent).append(event.content)
    close_turn()
    return turns


def assess_run(
    plan: Plan,
    transcript: Sequence[TranscriptEvent],
    rows: Sequence[Mapping[str, Any]],
    judgments: Mapping[int, Mapping[str, int]] | None = None,
) -> Assessment:
    """Check every turn of the transcript and every extracted answer of `rows`;
    `judgments` are the judge's scores of turns, by turn key (`runtime.judge`)."""
    assessment = Assessment()
    judged = judgments or {}
    threshold = plan.settings.judge_threshold
    names = {event.agent_name for event in transcript} | {a.name for a in plan.external_agents}
    for turn in transcript_turns(plan, transcript):
        flags = turn_flags(turn.said, turn.heard, turn.previous, names)
        scores = judged.get(turn.key)
        counts = assessment.steps.setdefault(turn.step, StepQuality())
        if scores is not None:
            counts.judge(scores)
            flags += [f"low_{name}" for name, score in scores.items() if score < threshold]
        counts.count(flags, turn=True)
        if flags:
            for event in turn.events:
                assessment.events[event.seq] = flags

    extracts = [step for step in plan.steps if isinstance(step, ExtractStep)]
    for row in rows:
        flagged: dict[str, list[str]] = {}
        replicate = int(row.get(REPLICATE_COLUMN) or 1)
        for step in extracts:
            if (
                step.world != row.get("world")
                or replicate_of(step.id) != replicate
                or row.get("agent") not in step.agents
            ):
                continue
            for spec in step.fields:
                if spec.name not in row or spec.kind not in ("text", "list"):
                    continue
                flags = answer_flags(row[spec.name], spec)
                assessment.steps.setdefault(step.id, StepQuality()).count(flags, turn=False)
                if flags:
                    flagged[spec.name] = flags
        assessment.rows.append(flagged)
    return assessment
