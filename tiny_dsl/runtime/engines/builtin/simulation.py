"""The built-in engine's simulation state: agents, world clocks, and their saved form.

`engine.BuiltinEngine` adds the step semantics on top.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Iterable
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from tiny_dsl.plan.model import AgentPlan, Plan, WorldPlan
from tiny_dsl.runtime.engines.builtin.actions import Action, parse_turn
from tiny_dsl.runtime.engines.builtin.agents import Agent, turn_request
from tiny_dsl.runtime.engines.builtin.personas import apply_attributes
from tiny_dsl.runtime.engines.core import (
    DEFAULT_START,
    EngineCore,
    EngineStateError,
    ExternalReplies,
    NoExternalAgents,
    TranscriptEvent,
    iso_time,
)
from tiny_dsl.runtime.engines.personas import unique_name, with_agent_model
from tiny_dsl.runtime.engines.prompts import derive_seed
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse
from tiny_dsl.runtime.quality import ECHO_WINDOW, regenerate_note, turn_flags

__all__ = ["ActingClient", "BuiltinSimulation", "answer_data", "gather_in_order"]

T = TypeVar("T")


class ActingClient(Protocol):
    """The part of `LLMClient` the engine needs."""

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


class BuiltinSimulation(EngineCore):
    """Agents and clocks set up from the plan, saved and restored; an agent's turn."""

    # 2: agents' memories saved as event numbers into the transcript.
    state_format = 2

    def __init__(self, client: ActingClient, externals: ExternalReplies | None = None) -> None:
        super().__init__()
        self._client = client
        self._externals: ExternalReplies = externals or NoExternalAgents()
        self._plan: Plan | None = None
        self._agents: dict[str, Agent] = {}
        self._agent_plans: dict[str, AgentPlan] = {}
        self._world_clocks: dict[str, datetime] = {}
        # World -> its situation as the last `context` step set it (else as declared).
        self._contexts: dict[str, str] = {}
        # Member -> its values of its population's `vary` dimensions, once proposed.
        self._varied: dict[str, dict[str, str]] = {}
        self._notes_to_take: list[str] = []
        # Turns asked again under `quality { regenerate N }`, and turns still flagged after.
        self._regenerated = 0
        self._still_flagged = 0

    async def setup(self, plan: Plan) -> None:
        self._plan = plan
        self._agent_plans = {agent.id: agent for agent in plan.agents}
        self._seq = 0
        self._contexts = {}
        self._varied = {}
        self._world_clocks = {w.name: datetime.fromisoformat(w.start) for w in plan.worlds}
        default_clock = min(
            self._world_clocks.values(), default=datetime.fromisoformat(DEFAULT_START)
        )
        homes: dict[str, str] = {}
        for world in plan.worlds:
            for agent_id in [*world.agents, *([world.moderator] if world.moderator else [])]:
                homes.setdefault(agent_id, world.name)
        taken: set[str] = set()
        self._agents = {}
        for agent in plan.agents:
            home = homes.get(agent.id)
            clock = self._world_clocks[home] if home else default_clock
            persona = dict(agent.persona or apply_attributes({}, agent.attributes))
            if agent.defined:
                name = unique_name(str(persona.get("name") or agent.id), taken)
                taken.add(name.casefold())
                persona["name"] = name
            else:
                # A placeholder until a `generate` step names the member (or persona).
                name = agent.id
            self._agents[agent.id] = Agent(agent.id, name, persona, clock, home)

    def personas(self) -> dict[str, dict[str, Any]]:
        return {
            agent.id: agent.persona
            for agent in self._agents.values()
            if agent.generated or self._agent_plans[agent.id].defined
        }

    def take_notes(self) -> list[str]:
        # Its prompts are built to fit the model's context: nothing is ever limited;
        # the notes are those of `vary` proposals repaired, and of turns asked again.
        notes, self._notes_to_take = self._notes_to_take, []
        if self._regenerated:
            notes.append(regenerate_note(self._regenerated, self._still_flagged))
            self._regenerated = self._still_flagged = 0
        return notes

    def dump_state(self) -> dict[str, Any]:
        return {
            **self._state_header(self._world_clocks),
            "agents": {
                agent.id: {
                    "name": agent.name,
                    "persona": agent.persona,
                    "clock": iso_time(agent.clock),
                    "home": agent.home,
                    "cognitive_state": agent.cognitive_state,
                    "notes": agent.notes,
                    "generated": agent.generated,
                    "memory": [event.seq for event in agent.memory],
                    "goals": agent.goals,
                }
                for agent in self._agents.values()
            },
            "contexts": self._contexts,
            "varied": self._varied,
        }

    def load_state(self, state: dict[str, Any], transcript: list[TranscriptEvent]) -> None:
        self._require_plan()
        seq, clocks = self._read_header(state, self._world_clocks)
        if set(state["agents"]) != set(self._agents):
            raise EngineStateError("saved state has different agents than the plan")
        events = {event.seq: event for event in transcript}
        for agent_id, saved in state["agents"].items():
            missing = [number for number in saved["memory"] if number not in events]
            if missing:
                raise EngineStateError(
                    f"saved memory of {agent_id} refers to events {missing[:3]} "
                    "that the transcript does not hold"
                )
        self._seq = seq
        self._world_clocks = clocks or {}
        # States saved before `goal` and `context` existed hold neither.
        self._contexts = dict(state.get("contexts", {}))
        # States saved before `vary` existed hold no proposals.
        self._varied = {k: dict(v) for k, v in state.get("varied", {}).items()}
        for agent_id, saved in state["agents"].items():
            self._agents[agent_id] = Agent(
                id=agent_id,
                name=saved["name"],
                persona=saved["persona"],
                clock=datetime.fromisoformat(saved["clock"]),
                home=saved["home"],
                memory=[events[number] for number in saved["memory"]],
                cognitive_state=saved["cognitive_state"],
                notes=saved["notes"],
                generated=saved["generated"],
                goals=list(saved.get("goals", [])),
            )

    # -- helpers ----------------------------------------------------------------

    async def _act(
        self,
        agent: Agent,
        world: WorldPlan | None,
        others: list[Agent],
        step_id: str,
        call: int = 0,
    ) -> list[Action]:
        plan = self._require_plan()
        context = self._contexts.get(world.name) if world else None
        request = with_agent_model(
            turn_request(plan, agent, world, others, step_id, call, context),
            self._agent_plans[agent.id],
        )
        actions, state = parse_turn(answer_data(await self._client.complete(request)))
        # `quality { regenerate N }`: a flagged turn is asked again, each time with a
        # seed of its own (so the re-asks are as reproducible as the first answer).
        for attempt in range(1, plan.settings.regenerate + 1):
            if not self._flags(agent, actions):
                break
            self._regenerated += 1
            again = dataclasses.replace(
                request, seed=derive_seed(request.seed, "regenerate", attempt)
            )
            actions, state = parse_turn(answer_data(await self._client.complete(again)))
        if plan.settings.regenerate and self._flags(agent, actions):
            self._still_flagged += 1
        if any(state.values()):
            agent.cognitive_state = state
        return actions

    def _flags(self, agent: Agent, actions: list[Action]) -> list[str]:
        """The quality flags of a turn about to be recorded (`runtime.quality`): what the
        agent heard last, and what its last turn said, are in its memory."""
        heard = [e.content for e in agent.memory if e.kind == "stimulus"][-ECHO_WINDOW:]
        previous: list[str] = []
        for event in reversed(agent.memory):
            if event.kind == "action":
                if event.type in ("TALK", "THINK"):
                    previous.insert(0, event.content)
            elif previous:
                break
        said = [a.content for a in actions if a.type in ("TALK", "THINK")]
        names = [other.name for other in self._agents.values()]
        return turn_flags(said, heard, "\n".join(previous) or None, names)

    def _remember(self, event: TranscriptEvent) -> TranscriptEvent:
        self._agents[event.agent].memory.append(event)
        return event

    def _require_plan(self) -> Plan:
        if self._plan is None:
            raise RuntimeError("BuiltinEngine.setup(plan) must be called first")
        return self._plan

    def _world(self, name: str) -> WorldPlan:
        return self._require_plan().world(name)

    def _plan_world(self, name: str | None) -> WorldPlan | None:
        return self._world(name) if name else None


async def gather_in_order(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; results in input order; on failure raise the first error in that order.

    Unlike a task group, siblings of a failed call run to completion, so every
    answer that was going to arrive is recorded in the LLM cache and a resumed
    run does not pay for it again. Raising the first error *in input order*
    keeps the reported failure independent of timing.
    """
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)


def answer_data(response: ChatResponse) -> dict[str, Any]:
    # The client validates structured answers against the schema, so only a client
    # that skipped that (a broken fake or provider) can get here without an object.
    if not isinstance(response.data, dict):
        raise RuntimeError(
            f"{response.provider}/{response.model} returned no JSON object for a structured call"
        )
    return response.data
