"""The engine interface, and the skeleton every engine shares.

The interpreter walks a plan's steps and hands every step except `analyze` (which
only reads extracted rows) to an engine. Two implementations exist: the built-in
engine (`tiny_dsl.runtime.engines.builtin`) and the adapter driving TinyTroupe
itself (`tiny_dsl.runtime.engines.tinytroupe`). Both honour the same contract:

* `setup(plan)` builds the initial simulation (agents, worlds, clocks) from the
  plan alone; no model calls.
* `execute(step)` performs one timeline step and returns the transcript events it
  produced, in a deterministic order that never depends on which model call
  finished first.
* `extract(step)` returns one result row per agent of an `extract` step;
  `extract_overall(step)` the one summary record of an `extract overall` step.
* `personas()` returns the TinyTroupe persona of every agent that has one so
  far (declared personas; population members once generated), which the
  interpreter saves as `.agent.json` files in the run folder.
* `dump_state()` / `load_state(state, transcript)` round-trip the complete
  simulation state through JSON, so the interpreter can checkpoint after every
  step and resume a killed run exactly where it stopped. The interpreter keeps
  the transcript itself, so an engine's state refers to its events (by `seq`)
  instead of storing them a second time.

`EngineCore` is the skeleton both engines build on: the one dispatch by step
kind (adding a step kind means one abstract handler here and one implementation
per engine), the run-wide event numbering, and the header every saved state
starts with.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol

from tiny_dsl.plan.model import (
    AskStep,
    BroadcastStep,
    CheckpointStep,
    ContextStep,
    ConverseStep,
    DeliverStep,
    ExtractOverallStep,
    ExtractStep,
    GenerateStep,
    GoalStep,
    InterviewStep,
    Plan,
    ProposeStep,
    RunStep,
    Step,
    TellStep,
    ThinkStep,
    WaitStep,
)
from tiny_dsl.runtime.providers.base import Message

__all__ = [
    "DEFAULT_START",
    "Engine",
    "EngineCore",
    "EngineStateError",
    "EventKind",
    "ExternalReplies",
    "NoExternalAgents",
    "TranscriptEvent",
    "continued_state",
    "iso_time",
]

EventKind = Literal["stimulus", "action"]

# The clock of an agent that belongs to no world, when the plan has no world at all.
DEFAULT_START = "2025-01-01T09:00:00"


@dataclass(slots=True)
class TranscriptEvent:
    """One thing an agent perceived (`stimulus`) or did (`action`).

    `type` follows TinyTroupe: stimuli are CONVERSATION, THOUGHT or VISUAL;
    actions are TALK, THINK or DONE. `source`/`target` hold agent ids, or the
    intervention name for a delivered message; the `*_name` fields carry the
    display names so a transcript reads without the persona table. `time` is the
    simulated ISO datetime on the agent's clock. `seq` orders the whole run.
    """

    seq: int
    step: str
    world: str | None
    agent: str
    agent_name: str
    kind: EventKind
    type: str
    content: str
    time: str
    source: str | None = None
    source_name: str | None = None
    target: str | None = None
    target_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "step": self.step,
            "world": self.world,
            "agent": self.agent,
            "agent_name": self.agent_name,
            "kind": self.kind,
            "type": self.type,
            "content": self.content,
            "source": self.source,
            "source_name": self.source_name,
            "target": self.target,
            "target_name": self.target_name,
            "time": self.time,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TranscriptEvent:
        return cls(**data)


class ExternalReplies(Protocol):
    """What engines need of the run's external agents (`runtime.external.ExternalAgents`)."""

    def __contains__(self, name: object) -> bool: ...

    async def reply(
        self, name: str, session: str, conversation: Sequence[Message], purpose: str
    ) -> str:
        """The bot's next line in `session`; the persona's lines are `user` messages."""
        ...


class NoExternalAgents:
    """A run without systems under test: no name is an external agent."""

    def __contains__(self, name: object) -> bool:
        return False

    async def reply(
        self, name: str, session: str, conversation: Sequence[Message], purpose: str
    ) -> str:
        raise KeyError(f"no external agent {name!r} in this run")


class Engine(Protocol):
    """A simulation backend the interpreter can drive step by step."""

    name: str

    async def setup(self, plan: Plan) -> None:
        """Build agents, worlds and clocks from `plan`; makes no model calls."""
        ...

    async def execute(self, step: Step) -> list[TranscriptEvent]:
        """Run one step (any kind except `analyze` and `extract`); return its events."""
        ...

    async def extract(self, step: ExtractStep) -> list[dict[str, Any]]:
        """One validated result row per agent of `step` (see `tiny_dsl.extraction`)."""
        ...

    async def extract_overall(self, step: ExtractOverallStep) -> dict[str, Any]:
        """The world's one validated summary record: `world`, `step`, fields, `_missing`."""
        ...

    def personas(self) -> dict[str, dict[str, Any]]:
        """Agent id -> TinyTroupe `persona` object, as the agents are now (names made
        unique, fragments merged); population members only once generated."""
        ...

    def take_notes(self) -> list[str]:
        """Notes for the user on the steps run since the last call (e.g. answers limited
        to fit the model's context); each note is returned once."""
        ...

    def dump_state(self) -> dict[str, Any]:
        """The full simulation state as JSON-serialisable data (events by `seq` only)."""
        ...

    def load_state(self, state: dict[str, Any], transcript: list[TranscriptEvent]) -> None:
        """Restore a state produced by `dump_state` (after `setup` with the same plan).

        `transcript` is every event `execute` returned up to that state, in order.
        """
        ...


class EngineStateError(ValueError):
    """A saved state that does not belong to the plan the engine was set up with."""


class EngineCore(abc.ABC):
    """Dispatch by step kind, event numbering and the saved-state header.

    A subclass sets `name` and `state_format` (bumped whenever its saved state
    changes shape, so an old checkpoint is refused rather than misread) and
    implements one handler per step kind. `_seq` is the number of the last event
    handed out; the subclass saves and restores it through the header.
    """

    name: str
    state_format: ClassVar[int]

    def __init__(self) -> None:
        self._seq = 0

    async def execute(self, step: Step) -> list[TranscriptEvent]:
        events: list[TranscriptEvent]
        match step:
            case GenerateStep():
                await self.generate(step)
                events = []
            case BroadcastStep():
                events = await self.broadcast(step)
            case DeliverStep():
                events = await self.deliver(step)
            case AskStep():
                events = await self.ask(step)
            case RunStep():
                events = await self.run_round(step)
            case WaitStep():
                events = await self.wait(step)
            case ThinkStep():
                events = await self.think(step)
            case InterviewStep():
                events = await self.interview(step)
            case CheckpointStep():
                events = []
            case TellStep():
                events = await self.tell(step)
            case ConverseStep():
                events = await self.converse(step)
            case GoalStep():
                events = await self.goal(step)
            case ContextStep():
                events = await self.context(step)
            case ProposeStep():
                await self.propose(step)
                events = []
            case _:
                raise TypeError(f"the {self.name} engine does not execute {step.kind} steps")
        for event in events:
            self._seq += 1
            event.seq = self._seq
        return events

    # -- one handler per step kind ------------------------------------------------

    @abc.abstractmethod
    async def generate(self, step: GenerateStep) -> None:
        """Flesh out the population members of `step` (no events)."""

    @abc.abstractmethod
    async def propose(self, step: ProposeStep) -> None:
        """One call proposing the values of the population's `vary` dimensions; each
        member keeps the value of its slot for its `generate` step (no events)."""

    @abc.abstractmethod
    async def broadcast(self, step: BroadcastStep) -> list[TranscriptEvent]: ...

    @abc.abstractmethod
    async def deliver(self, step: DeliverStep) -> list[TranscriptEvent]: ...

    @abc.abstractmethod
    async def ask(self, step: AskStep) -> list[TranscriptEvent]: ...

    @abc.abstractmethod
    async def run_round(self, step: RunStep) -> list[TranscriptEvent]: ...

    @abc.abstractmethod
    async def wait(self, step: WaitStep) -> list[TranscriptEvent]: ...

    @abc.abstractmethod
    async def think(self, step: ThinkStep) -> list[TranscriptEvent]: ...

    @abc.abstractmethod
    async def interview(self, step: InterviewStep) -> list[TranscriptEvent]: ...

    @abc.abstractmethod
    async def tell(self, step: TellStep) -> list[TranscriptEvent]:
        """The experimenter's line to each agent (no world), then one turn of each."""

    @abc.abstractmethod
    async def converse(self, step: ConverseStep) -> list[TranscriptEvent]:
        """One 1:1 conversation per agent with the partner, who keeps none of them."""

    @abc.abstractmethod
    async def goal(self, step: GoalStep) -> list[TranscriptEvent]:
        """Each agent internalises the goal; no model call."""

    @abc.abstractmethod
    async def context(self, step: ContextStep) -> list[TranscriptEvent]:
        """The world's situation changes for everyone in it; no model call."""

    # -- saved state --------------------------------------------------------------

    def _state_header(
        self, clocks: Mapping[str, datetime] | None, **versions: str
    ) -> dict[str, Any]:
        """What every saved state starts with: engine, format, `versions`, seq, world clocks."""
        return {
            "engine": self.name,
            "format": self.state_format,
            **versions,
            "seq": self._seq,
            "worlds": (
                None
                if clocks is None
                else {world: iso_time(clock) for world, clock in clocks.items()}
            ),
        }

    def _read_header(
        self, state: Mapping[str, Any], worlds: Collection[str]
    ) -> tuple[int, dict[str, datetime] | None]:
        """The saved seq and world clocks, once `state` is known to be this engine's
        format over the world names `worlds`; raises `EngineStateError` otherwise."""
        if state.get("engine") != self.name or state.get("format") != self.state_format:
            raise EngineStateError(
                f"saved state is from engine {state.get('engine')!r} format "
                f"{state.get('format')!r}, not {self.name!r} format {self.state_format}"
            )
        saved: Mapping[str, str] | None = state["worlds"]
        if saved is None:
            return int(state["seq"]), None
        if set(saved) != set(worlds):
            raise EngineStateError("saved state has different worlds than the plan")
        return int(state["seq"]), {
            world: datetime.fromisoformat(clock) for world, clock in saved.items()
        }


def continued_state(state: Mapping[str, Any], seq: int) -> dict[str, Any]:
    """A saved state that numbers its next events after `seq`: an earlier state (the
    people before the timeline) restored later in the same run, for a replicate,
    whose events must not take numbers the run has handed out already."""
    return {**state, "seq": seq}


def iso_time(moment: datetime) -> str:
    """A simulated time as transcripts and saved states write it (to the second)."""
    return moment.isoformat(timespec="seconds")
