"""The built-in engine's agents: their state, their events, their turn prompt, who hears whom.

Free functions over an agent table, so that the engine class (`engine`) keeps
only the step semantics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tiny_dsl.plan.model import Plan, WorldPlan
from tiny_dsl.runtime.engines.builtin.actions import ACTION_MAX_TOKENS, turn_schema
from tiny_dsl.runtime.engines.builtin.personas import persona_json
from tiny_dsl.runtime.engines.core import EventKind, TranscriptEvent, iso_time
from tiny_dsl.runtime.engines.prompts import derive_seed, memory_view, render_prompt
from tiny_dsl.runtime.providers.base import ChatRequest, Message

__all__ = [
    "MEMORY_CHARS",
    "MEMORY_ITEM_CHARS",
    "Agent",
    "addressable",
    "listeners",
    "make_event",
    "resolve_target",
    "turn_request",
]

# A small model asked for up to three actions fills them with the same sentence, or
# loops on a word; penalising tokens already in the answer stops both (measured with
# benchmarks/bench_answer_quality.py on the examples).
TURN_FREQUENCY_PENALTY = 1.0
# Memory window of a turn prompt, in characters (about 1,000 tokens), and the cut
# applied to any single remembered item.
MEMORY_CHARS = 4000
MEMORY_ITEM_CHARS = 500


@dataclass
class Agent:
    id: str
    name: str
    persona: dict[str, Any]
    clock: datetime
    home: str | None  # first world the agent belongs to
    memory: list[TranscriptEvent] = field(default_factory=list)
    cognitive_state: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. fragment conflicts at generation
    generated: bool = False
    # The scenario's `goal`s (and a `converse` goal while it lasts), in every turn
    # prompt. Apart from `cognitive_state`, which each turn's answer replaces.
    goals: list[str] = field(default_factory=list)


def make_event(
    agent: Agent,
    step_id: str,
    world: str | None,
    kind: EventKind,
    type_: str,
    content: str,
    *,
    source: Agent | None = None,
    target: Agent | None = None,
) -> TranscriptEvent:
    """An event of `agent`, stamped with its clock; numbered later, by the engine core."""
    return TranscriptEvent(
        seq=0,
        step=step_id,
        world=world,
        agent=agent.id,
        agent_name=agent.name,
        kind=kind,
        type=type_,
        content=content,
        time=iso_time(agent.clock),
        source=source.id if source else None,
        source_name=source.name if source else None,
        target=target.id if target else None,
        target_name=target.name if target else None,
    )


def turn_request(
    plan: Plan,
    agent: Agent,
    world: WorldPlan | None,
    others: list[Agent],
    step_id: str,
    call: int,
    context: str | None = None,
) -> ChatRequest:
    """The prompt of one turn: who the agent is, where and when, and what it remembers.

    `context` is the world's current situation when a `context` step changed it.
    """
    moderator = world.moderator if world else None
    state = "; ".join(f"{key}: {value}" for key, value in agent.cognitive_state.items() if value)
    system = render_prompt(
        "agent_system.j2",
        name=agent.name,
        persona=persona_json(agent.persona),
        context=context if context is not None else (world.context if world else ""),
        others=[o.name + (" (moderator)" if o.id == moderator else "") for o in others],
        now=agent.clock.strftime("%A %Y-%m-%d %H:%M"),
        state=state,
        goals=agent.goals,
    )
    view, omitted = memory_view(
        agent.memory, me=agent.id, max_chars=MEMORY_CHARS, item_chars=MEMORY_ITEM_CHARS
    )
    # What the agent perceived since its last action is shown apart from older
    # memories: it is what this turn answers, and a small model shown one undivided
    # list tends to answer its first lines or say its last one back.
    last_own = max((i for i, item in enumerate(view) if item["kind"] == "action"), default=-1)
    user = render_prompt(
        "agent_turn.j2",
        name=agent.name,
        earlier=view[: last_own + 1],
        recent=view[last_own + 1 :],
        omitted=omitted,
    )
    return ChatRequest(
        messages=(Message("system", system), Message("user", user)),
        temperature=plan.settings.temperature,
        max_tokens=ACTION_MAX_TOKENS,
        json_schema=turn_schema([other.name for other in others]),
        schema_name="agent_actions",
        seed=derive_seed(plan.settings.seed, step_id, agent.id, call),
        purpose=f"act {agent.id}",
        frequency_penalty=TURN_FREQUENCY_PENALTY,
        # A small model copies whatever its prompt shows (what it heard, its own last
        # words, the prompt's labels and time stamps) instead of answering it.
        avoid_copying=(user,),
    )


# -- who hears what ---------------------------------------------------------------


def _present(world: WorldPlan) -> list[str]:
    """Everyone in the room: participants, then the moderator."""
    present = list(world.agents)
    if world.moderator and world.moderator not in present:
        present.append(world.moderator)
    return present


def addressable(agents: Mapping[str, Agent], world: WorldPlan, agent: Agent) -> list[Agent]:
    """Whom `agent` can address: nobody in a survey, the moderator in an interview."""
    if world.mode == "survey":
        return []
    if world.mode == "interview":
        return [agents[world.moderator]] if world.moderator else []
    return [agents[other] for other in _present(world) if other != agent.id]


def resolve_target(
    agents: Mapping[str, Agent], world: WorldPlan, speaker: Agent, name: str
) -> Agent | None:
    """The addressee of a TALK; the turn schema allows only "" or an addressable name."""
    return next(
        (other for other in addressable(agents, world, speaker) if other.name == name), None
    )


def listeners(
    agents: Mapping[str, Agent], world: WorldPlan, speaker: Agent, target: Agent | None
) -> list[Agent]:
    """Who hears a TALK of `speaker` addressed to `target` (None: nobody in particular)."""
    if world.mode == "survey":
        return []
    if world.mode == "interview":
        moderator = world.moderator
        if moderator is None or speaker.id == moderator:
            return []
        return [agents[moderator]] if target is None or target.id == moderator else []
    if target is not None:
        return [target]
    return [agents[a] for a in _present(world) if a != speaker.id]
