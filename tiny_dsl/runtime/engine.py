"""The engine interface: what the interpreter needs from a simulation backend.

The interpreter walks a plan's steps and hands every step except `analyze` (which
only reads extracted rows) to an engine. Two implementations are intended: the
built-in engine (`tiny_dsl.runtime.builtin`) and, later, an adapter driving
TinyTroupe itself. Both must honour the same contract:

* `setup(plan)` builds the initial simulation (agents, worlds, clocks) from the
  plan alone; no model calls.
* `execute(step)` performs one timeline step and returns the transcript events it
  produced, in a deterministic order that never depends on which model call
  finished first.
* `extract(step)` returns one result row per agent of an `extract` step.
* `personas()` returns the TinyTroupe persona of every agent that has one so
  far (declared personas; population members once generated), which the
  interpreter saves as `.agent.json` files in the run folder.
* `dump_state()` / `load_state(state)` round-trip the complete simulation state
  through JSON, so the interpreter can checkpoint after every step and resume a
  killed run exactly where it stopped.

Also here are the pieces every engine shares: the transcript event record, the
per-call seed derivation, and the sandboxed prompt renderer.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tiny_dsl.plan.model import ExtractStep, Plan, Step
from tiny_dsl.resources import templates_dir

__all__ = [
    "Engine",
    "EventKind",
    "TranscriptEvent",
    "derive_seed",
    "memory_view",
    "render_prompt",
    "time_label",
]

EventKind = Literal["stimulus", "action"]


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

    def personas(self) -> dict[str, dict[str, Any]]:
        """Agent id -> TinyTroupe `persona` object, as the agents are now (names made
        unique, fragments merged); population members only once generated."""
        ...

    def take_notes(self) -> list[str]:
        """Notes for the user on the steps run since the last call (e.g. answers limited
        to fit the model's context); each note is returned once."""
        ...

    def dump_state(self) -> dict[str, Any]:
        """The full simulation state as JSON-serialisable data."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a state produced by `dump_state` (after `setup` with the same plan)."""
        ...


def derive_seed(seed: int, *parts: str | int) -> int:
    """A per-call seed from the plan seed and what identifies the call.

    Hashing (step id, agent id, ...) rather than counting calls makes every
    call's seed independent of how many other calls ran before it or in which
    order they completed, so a resumed or reordered run sends identical requests
    and hits the LLM cache. 31 bits keep every provider's seed parameter happy.
    """
    payload = json.dumps([seed, *parts], separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(payload.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    # Templates ship with the package and are trusted; scenario text only ever arrives
    # as render data. The sandbox still guards against a template (or a future
    # user-supplied one) reaching into Python objects passed as data. Autoescape is
    # off because prompts are plain text, not HTML.
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir())),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render_prompt(template: str, **data: Any) -> str:
    """Render `tiny_dsl/runtime/prompts/<template>` with `data` (missing names raise)."""
    return _environment().get_template(template).render(**data).strip()


def time_label(iso: str) -> str:
    """`2025-03-03T08:00:00` as prompts show it: `2025-03-03 08:00`."""
    return iso[:16].replace("T", " ")


def memory_view(
    events: list[TranscriptEvent],
    *,
    me: str,
    max_chars: int,
    item_chars: int,
) -> tuple[list[dict[str, Any]], int]:
    """The most recent events that fit in `max_chars`, as prompt data, and how many were left out.

    `DONE` actions are skipped (they carry no content). Each item's content is
    cut at `item_chars`; `to_you` marks speech addressed to `me`. Newest events
    win because what just happened is what the next action responds to.
    """
    selected: list[dict[str, Any]] = []
    used = 0
    shown = [event for event in events if event.type != "DONE"]
    for event in reversed(shown):
        content = event.content
        if len(content) > item_chars:
            content = content[: item_chars - 3].rstrip() + "..."
        cost = len(content) + 40
        if selected and used + cost > max_chars:
            break
        used += cost
        selected.append(
            {
                "time": time_label(event.time),
                "kind": event.kind,
                "type": event.type,
                "content": content,
                "source_name": event.source_name,
                "target_name": event.target_name,
                "to_you": event.target == me,
            }
        )
    selected.reverse()
    return selected, len(shown) - len(selected)
