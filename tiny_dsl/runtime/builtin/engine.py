"""The built-in engine: TinyTroupe's agent and world semantics, without TinyTroupe.

Agents (TinyTroupe's `TinyPerson`)
    Each agent has a persona, an episodic memory of stimuli and actions stamped
    with simulated times, a clock and its latest cognitive state. Stimuli
    (hearing, seeing, thinking) never call the model. Acting is one model call
    that returns the whole turn's actions (TALK / THINK / DONE), as
    `TinyPerson.act()` does.

    The prompt is the persona JSON, the current simulated time, the world's
    context, who else is present and the action rules (system message), then
    the most recent memories that fit in `MEMORY_CHARS` characters, newest
    kept (one user message). TinyTroupe keeps a fixed prefix plus a lookback of
    memories; a character budget serves the same purpose and also bounds the
    prompt for the embedded model's 4k-token context.

Worlds (TinyTroupe's `TinyWorld`)
    `survey`: every agent is alone; nobody hears anybody else's TALK.
    `focus_group`: a TALK addressed to someone present is heard by that agent
    only; an unaddressed one by everyone else present (TinyTroupe's
    `broadcast_if_no_target`). The turn schema only admits the names of those
    present as targets. The moderator speaks broadcasts and questions and hears
    everything, but does not act in rounds: a moderator's lines are the
    scenario's script, and an improvising moderator would make every run answer
    a different question.
    `interview`: 1:1 sessions; a participant's TALK reaches the moderator only.

Steps
    `broadcast`: the text reaches every agent of the world (spoken by the
    moderator, if any); no model call. `ask`: the question reaches every agent
    (from the moderator, if any), then one round. `run`: one round. `deliver`:
    each recipient sees its variant, framed by channel ("[email] You receive an
    email: ..."); the control group gets nothing. `think`: a THOUGHT stimulus.
    `interview GROUP by P`: P asks each agent every question in turn and hears
    the answers; agents are interviewed concurrently. `wait` and `checkpoint`
    make no call.

Rounds
    In a round every agent acts once on the state at the start of the round,
    concurrently; then all actions are recorded and every TALK delivered, in
    the round's agent order. This is TinyTroupe's parallel `world.run()` with a
    fixed order instead of a shuffle, so results never depend on which call
    finished first.

Clocks
    Every agent has its own clock, starting at the start of the first world it
    belongs to. `deliver` sets a recipient's clock to the delivery time; `wait`
    advances every agent's and world's clock. Nothing else moves time (as in
    TinyTroupe without `timedelta_per_step`). Events of steps that name no
    world (`think`, `interview`) are recorded under the agent's first world, so
    extraction from that world sees them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

from tiny_dsl.extraction import extract_row
from tiny_dsl.plan.model import (
    AgentPlan,
    AskStep,
    BroadcastStep,
    CheckpointStep,
    DeliverStep,
    ExtractStep,
    GenerateStep,
    InterviewStep,
    Plan,
    RunStep,
    Step,
    ThinkStep,
    WaitStep,
    WorldPlan,
)
from tiny_dsl.runtime.builtin.actions import ACTION_MAX_TOKENS, Action, parse_turn, turn_schema
from tiny_dsl.runtime.builtin.personas import (
    PERSONA_MAX_TOKENS,
    PERSONA_SCHEMA,
    apply_attributes,
    describe_attributes,
    merge_persona,
    persona_brief,
    persona_json,
    unique_name,
)
from tiny_dsl.runtime.engine import (
    EventKind,
    TranscriptEvent,
    derive_seed,
    memory_view,
    render_prompt,
)
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, Message

__all__ = ["MEMORY_CHARS", "BuiltinEngine", "EngineStateError"]

# Memory window of a turn prompt, in characters (about 1,000 tokens), and the cut
# applied to any single remembered item.
MEMORY_CHARS = 4000
MEMORY_ITEM_CHARS = 500
STATE_FORMAT = 1
# The clock of an agent that belongs to no world, when the plan has no world at all.
_DEFAULT_START = "2025-01-01T09:00:00"

# How a delivered message is framed, by channel; other channels get a generic frame.
CHANNEL_FRAMES = {
    "email": "You receive an email",
    "sms": "You receive a text message",
    "text": "You receive a text message",
    "push": "You get a push notification",
    "in_app": "You see a message in the app",
    "social": "You see a social media post",
    "ad": "You see an ad",
    "letter": "You receive a letter",
    "mail": "You receive a letter",
    "phone": "You get a phone call",
    "web": "You see on a website",
}

T = TypeVar("T")


class ActingClient(Protocol):
    """The part of `LLMClient` the engine needs."""

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


class EngineStateError(ValueError):
    """A saved state that does not belong to the plan the engine was set up with."""


@dataclass
class _Agent:
    id: str
    name: str
    persona: dict[str, Any]
    clock: datetime
    home: str | None  # first world the agent belongs to
    memory: list[TranscriptEvent] = field(default_factory=list)
    cognitive_state: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. fragment conflicts at generation
    generated: bool = False


class BuiltinEngine:
    """Runs plans with TinyTroupe's semantics (see the module docstring)."""

    name = "builtin"

    def __init__(self, client: ActingClient) -> None:
        self._client = client
        self._plan: Plan | None = None
        self._agents: dict[str, _Agent] = {}
        self._agent_plans: dict[str, AgentPlan] = {}
        self._world_clocks: dict[str, datetime] = {}
        self._seq = 0

    # -- Engine interface -----------------------------------------------------------

    async def setup(self, plan: Plan) -> None:
        self._plan = plan
        self._agent_plans = {agent.id: agent for agent in plan.agents}
        self._seq = 0
        self._world_clocks = {w.name: datetime.fromisoformat(w.start) for w in plan.worlds}
        default_clock = min(
            self._world_clocks.values(), default=datetime.fromisoformat(_DEFAULT_START)
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
            if agent.kind == "persona":
                name = unique_name(str(persona.get("name") or agent.id), taken)
                taken.add(name.casefold())
                persona["name"] = name
            else:
                # A placeholder until the `generate` step names the member.
                name = agent.id
            self._agents[agent.id] = _Agent(agent.id, name, persona, clock, home)

    async def execute(self, step: Step) -> list[TranscriptEvent]:
        events: list[TranscriptEvent]
        match step:
            case GenerateStep():
                await self._generate(step)
                events = []
            case BroadcastStep():
                events = self._broadcast(step)
            case DeliverStep():
                events = self._deliver(step)
            case AskStep():
                events = await self._ask(step)
            case RunStep():
                events = await self._round(self._world(step.world), step.id, step.agents)
            case WaitStep():
                self._wait(step.seconds)
                events = []
            case ThinkStep():
                events = self._think(step)
            case InterviewStep():
                events = await self._interview(step)
            case CheckpointStep():
                events = []
            case _:
                raise TypeError(f"the built-in engine does not execute {step.kind} steps")
        for event in events:
            self._seq += 1
            event.seq = self._seq
        return events

    async def extract(self, step: ExtractStep) -> list[dict[str, Any]]:
        plan = self._require_plan()
        coroutines = []
        for agent_id in step.agents:
            agent = self._agents[agent_id]
            coroutines.append(
                extract_row(
                    self._client,
                    seed=plan.settings.seed,
                    step=step,
                    agent=self._agent_plans[agent_id],
                    name=agent.name,
                    persona=agent.persona,
                    brief=persona_brief(agent.persona),
                    events=[e for e in agent.memory if e.world == step.world],
                    interventions=plan.interventions,
                )
            )
        return await _gather_in_order(coroutines)

    def personas(self) -> dict[str, dict[str, Any]]:
        return {
            agent.id: agent.persona
            for agent in self._agents.values()
            if agent.generated or self._agent_plans[agent.id].kind == "persona"
        }

    def take_notes(self) -> list[str]:
        # Its prompts are built to fit the model's context: nothing is ever limited.
        return []

    def dump_state(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "format": STATE_FORMAT,
            "seq": self._seq,
            "worlds": {name: {"clock": _iso(clock)} for name, clock in self._world_clocks.items()},
            "agents": {
                agent.id: {
                    "name": agent.name,
                    "persona": agent.persona,
                    "clock": _iso(agent.clock),
                    "home": agent.home,
                    "cognitive_state": agent.cognitive_state,
                    "notes": agent.notes,
                    "generated": agent.generated,
                    "memory": [event.to_json() for event in agent.memory],
                }
                for agent in self._agents.values()
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._require_plan()
        if state.get("engine") != self.name or state.get("format") != STATE_FORMAT:
            raise EngineStateError(
                f"saved state is from engine {state.get('engine')!r} format "
                f"{state.get('format')!r}, not {self.name!r} format {STATE_FORMAT}"
            )
        if set(state["agents"]) != set(self._agents) or set(state["worlds"]) != set(
            self._world_clocks
        ):
            raise EngineStateError("saved state has different agents or worlds than the plan")
        self._seq = int(state["seq"])
        self._world_clocks = {
            name: datetime.fromisoformat(world["clock"]) for name, world in state["worlds"].items()
        }
        for agent_id, saved in state["agents"].items():
            self._agents[agent_id] = _Agent(
                id=agent_id,
                name=saved["name"],
                persona=saved["persona"],
                clock=datetime.fromisoformat(saved["clock"]),
                home=saved["home"],
                memory=[TranscriptEvent.from_json(event) for event in saved["memory"]],
                cognitive_state=saved["cognitive_state"],
                notes=saved["notes"],
                generated=saved["generated"],
            )

    # -- steps ------------------------------------------------------------------

    async def _generate(self, step: GenerateStep) -> None:
        """Flesh out population members: one structured call each, then merge and name."""
        plan = self._require_plan()
        population = next(p for p in plan.populations if p.name == step.population)
        requests = [
            self._persona_request(
                self._agent_plans[agent_id],
                population.demographics_description,
                population.context,
                step.id,
            )
            for agent_id in step.agents
        ]
        responses = await _gather_in_order(self._client.complete(r) for r in requests)
        # Names are settled after all answers are in, in member order, so the suffix
        # a clashing name gets never depends on completion order.
        taken = {
            agent.name.casefold()
            for agent in self._agents.values()
            if agent.generated or self._agent_plans[agent.id].kind == "persona"
        }
        for agent_id, response in zip(step.agents, responses, strict=True):
            plan_agent = self._agent_plans[agent_id]
            agent = self._agents[agent_id]
            notes: list[str] = []
            persona: dict[str, Any] = dict(_answer(response))
            for fragment in plan_agent.fragments:
                persona = merge_persona(persona, fragment, notes)
            persona = apply_attributes(persona, plan_agent.attributes)
            name = unique_name(str(persona.get("name") or agent_id).strip() or agent_id, taken)
            if name != persona.get("name"):
                notes.append(f"renamed from {persona.get('name')!r} to {name!r} (name taken)")
            taken.add(name.casefold())
            persona["name"] = name
            agent.persona, agent.name, agent.notes, agent.generated = persona, name, notes, True

    def _persona_request(
        self, agent: AgentPlan, demographics: str, context: str, step_id: str
    ) -> ChatRequest:
        return persona_request(self._require_plan(), agent, demographics, context, step_id)

    def _broadcast(self, step: BroadcastStep) -> list[TranscriptEvent]:
        world = self._world(step.world)
        events: list[TranscriptEvent] = []
        speaker = self._agents[step.speaker] if step.speaker else None
        if speaker is not None:
            events.append(
                self._remember(
                    self._event(speaker, step.id, world.name, "action", "TALK", step.text)
                )
            )
        for agent_id in world.agents:
            if speaker is not None and agent_id == speaker.id:
                continue
            agent = self._agents[agent_id]
            events.append(
                self._remember(
                    self._event(
                        agent,
                        step.id,
                        world.name,
                        "stimulus",
                        "CONVERSATION",
                        step.text,
                        source=speaker,
                    )
                )
            )
        return events

    def _deliver(self, step: DeliverStep) -> list[TranscriptEvent]:
        events: list[TranscriptEvent] = []
        for delivery in step.deliveries:
            agent = self._agents[delivery.agent]
            if delivery.time is not None:
                agent.clock = datetime.fromisoformat(delivery.time)
            frame = CHANNEL_FRAMES.get(
                delivery.channel, f"You receive a message ({delivery.channel})"
            )
            content = f'[{delivery.channel}] {frame}: "{delivery.content}"'
            event = self._event(agent, step.id, step.world, "stimulus", "VISUAL", content)
            event.source = step.intervention
            events.append(self._remember(event))
        return events

    async def _ask(self, step: AskStep) -> list[TranscriptEvent]:
        world = self._world(step.world)
        asker = self._agents[world.moderator] if world.moderator else None
        events: list[TranscriptEvent] = []
        if asker is not None:
            events.append(
                self._remember(
                    self._event(asker, step.id, world.name, "action", "TALK", step.question)
                )
            )
        for agent_id in step.agents:
            agent = self._agents[agent_id]
            event = self._event(
                agent,
                step.id,
                world.name,
                "stimulus",
                "CONVERSATION",
                step.question,
                source=asker,
                target=agent,
            )
            events.append(self._remember(event))
        events.extend(await self._round(world, step.id, step.agents))
        return events

    async def _round(
        self, world: WorldPlan, step_id: str, agent_ids: list[str]
    ) -> list[TranscriptEvent]:
        """Everyone acts on the same state; then actions are recorded and speech delivered."""
        actors = [self._agents[agent_id] for agent_id in agent_ids]
        turns = await _gather_in_order(
            self._act(agent, world, self._others(world, agent), step_id) for agent in actors
        )
        events: list[TranscriptEvent] = []
        talks: list[tuple[_Agent, TranscriptEvent]] = []
        for agent, actions in zip(actors, turns, strict=True):
            for action in actions:
                target = (
                    self._resolve_target(world, agent, action.target)
                    if action.type == "TALK"
                    else None
                )
                event = self._remember(
                    self._event(
                        agent,
                        step_id,
                        world.name,
                        "action",
                        action.type,
                        action.content,
                        target=target,
                    )
                )
                events.append(event)
                if action.type == "TALK":
                    talks.append((agent, event))
        for speaker, talk in talks:
            target = self._agents[talk.target] if talk.target else None
            for listener in self._listeners(world, speaker, target):
                events.append(
                    self._remember(
                        self._event(
                            listener,
                            step_id,
                            world.name,
                            "stimulus",
                            "CONVERSATION",
                            talk.content,
                            source=speaker,
                            target=target,
                        )
                    )
                )
        return events

    def _wait(self, seconds: float) -> None:
        delta = timedelta(seconds=seconds)
        for agent in self._agents.values():
            agent.clock += delta
        for name in self._world_clocks:
            self._world_clocks[name] += delta

    def _think(self, step: ThinkStep) -> list[TranscriptEvent]:
        return [
            self._remember(
                self._event(agent, step.id, agent.home, "stimulus", "THOUGHT", step.text)
            )
            for agent in (self._agents[agent_id] for agent_id in step.agents)
        ]

    async def _interview(self, step: InterviewStep) -> list[TranscriptEvent]:
        """Each agent answers every question in turn; agents are interviewed concurrently.

        The interviewer's own memory (its questions and the answers it hears) is
        written after all sessions, session by session in agent order.
        """
        interviewer = self._agents[step.interviewer]
        interviewees = [self._agents[a] for a in step.agents if a != interviewer.id]
        sessions = await _gather_in_order(
            self._interview_one(step, interviewer, agent) for agent in interviewees
        )
        events: list[TranscriptEvent] = []
        for session in sessions:
            for event in session:
                if event.agent == interviewer.id:
                    self._remember(event)
                events.append(event)
        return events

    async def _interview_one(
        self, step: InterviewStep, interviewer: _Agent, agent: _Agent
    ) -> list[TranscriptEvent]:
        world = self._plan_world(agent.home)
        events: list[TranscriptEvent] = []
        for index, question in enumerate(step.questions):
            events.append(
                self._event(
                    interviewer, step.id, agent.home, "action", "TALK", question, target=agent
                )
            )
            events.append(
                self._remember(
                    self._event(
                        agent,
                        step.id,
                        agent.home,
                        "stimulus",
                        "CONVERSATION",
                        question,
                        source=interviewer,
                        target=agent,
                    )
                )
            )
            actions = await self._act(agent, world, [interviewer], step.id, index)
            for action in actions:
                answer = self._remember(
                    self._event(
                        agent,
                        step.id,
                        agent.home,
                        "action",
                        action.type,
                        action.content,
                        target=interviewer if action.type == "TALK" else None,
                    )
                )
                events.append(answer)
                # 1:1: whatever the interviewee says, only the interviewer is there to hear it.
                if action.type == "TALK":
                    events.append(
                        self._event(
                            interviewer,
                            step.id,
                            agent.home,
                            "stimulus",
                            "CONVERSATION",
                            action.content,
                            source=agent,
                            target=interviewer,
                        )
                    )
        return events

    # -- acting -----------------------------------------------------------------

    async def _act(
        self,
        agent: _Agent,
        world: WorldPlan | None,
        others: list[_Agent],
        step_id: str,
        call: int = 0,
    ) -> list[Action]:
        response = await self._client.complete(
            self._turn_request(agent, world, others, step_id, call)
        )
        actions, state = parse_turn(_answer(response))
        if any(state.values()):
            agent.cognitive_state = state
        return actions

    def _turn_request(
        self,
        agent: _Agent,
        world: WorldPlan | None,
        others: list[_Agent],
        step_id: str,
        call: int,
    ) -> ChatRequest:
        """The prompt of one turn: who the agent is, where and when, and what it remembers."""
        plan = self._require_plan()
        moderator = world.moderator if world else None
        state = "; ".join(
            f"{key}: {value}" for key, value in agent.cognitive_state.items() if value
        )
        system = render_prompt(
            "agent_system.j2",
            name=agent.name,
            persona=persona_json(agent.persona),
            context=world.context if world else "",
            others=[o.name + (" (moderator)" if o.id == moderator else "") for o in others],
            now=agent.clock.strftime("%A %Y-%m-%d %H:%M"),
            state=state,
        )
        view, omitted = memory_view(
            agent.memory, me=agent.id, max_chars=MEMORY_CHARS, item_chars=MEMORY_ITEM_CHARS
        )
        user = render_prompt("agent_turn.j2", name=agent.name, events=view, omitted=omitted)
        return ChatRequest(
            messages=(Message("system", system), Message("user", user)),
            temperature=plan.settings.temperature,
            max_tokens=ACTION_MAX_TOKENS,
            json_schema=turn_schema([other.name for other in others]),
            schema_name="agent_actions",
            seed=derive_seed(plan.settings.seed, step_id, agent.id, call),
            purpose=f"act {agent.id}",
        )

    # -- who hears what -----------------------------------------------------------

    def _present(self, world: WorldPlan) -> list[str]:
        """Everyone in the room: participants, then the moderator."""
        present = list(world.agents)
        if world.moderator and world.moderator not in present:
            present.append(world.moderator)
        return present

    def _others(self, world: WorldPlan, agent: _Agent) -> list[_Agent]:
        """Whom `agent` can address: nobody in a survey, the moderator in an interview."""
        if world.mode == "survey":
            return []
        if world.mode == "interview":
            return [self._agents[world.moderator]] if world.moderator else []
        return [self._agents[other] for other in self._present(world) if other != agent.id]

    def _resolve_target(self, world: WorldPlan, speaker: _Agent, name: str) -> _Agent | None:
        """The addressee of a TALK; the turn schema allows only "" or an addressable name."""
        return next((other for other in self._others(world, speaker) if other.name == name), None)

    def _listeners(self, world: WorldPlan, speaker: _Agent, target: _Agent | None) -> list[_Agent]:
        if world.mode == "survey":
            return []
        if world.mode == "interview":
            moderator = world.moderator
            if moderator is None or speaker.id == moderator:
                return []
            return [self._agents[moderator]] if target is None or target.id == moderator else []
        if target is not None:
            return [target]
        return [self._agents[a] for a in self._present(world) if a != speaker.id]

    # -- helpers ----------------------------------------------------------------

    def _event(
        self,
        agent: _Agent,
        step_id: str,
        world: str | None,
        kind: EventKind,
        type_: str,
        content: str,
        *,
        source: _Agent | None = None,
        target: _Agent | None = None,
    ) -> TranscriptEvent:
        return TranscriptEvent(
            seq=0,
            step=step_id,
            world=world,
            agent=agent.id,
            agent_name=agent.name,
            kind=kind,
            type=type_,
            content=content,
            time=_iso(agent.clock),
            source=source.id if source else None,
            source_name=source.name if source else None,
            target=target.id if target else None,
            target_name=target.name if target else None,
        )

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


async def _gather_in_order(awaitables: Iterable[Awaitable[T]]) -> list[T]:
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


def _answer(response: ChatResponse) -> dict[str, Any]:
    # The client validates structured answers against the schema, so only a client
    # that skipped that (a broken fake or provider) can get here without an object.
    if not isinstance(response.data, dict):
        raise RuntimeError(
            f"{response.provider}/{response.model} returned no JSON object for a structured call"
        )
    return response.data


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def persona_request(
    plan: Plan, agent: AgentPlan, demographics: str, context: str, step_id: str
) -> ChatRequest:
    """The one call that fleshes out a population member into a persona.

    Shared by every engine, so that both simulate the same people and share
    cached answers.
    """
    user = render_prompt(
        "generate_user.j2",
        demographics=demographics,
        context=context,
        attributes=describe_attributes(agent.attributes),
        particularities=agent.particularities,
    )
    return ChatRequest(
        messages=(
            Message("system", render_prompt("generate_system.j2")),
            Message("user", user),
        ),
        temperature=plan.settings.temperature,
        max_tokens=PERSONA_MAX_TOKENS,
        json_schema=PERSONA_SCHEMA,
        schema_name="persona",
        seed=derive_seed(plan.settings.seed, step_id, agent.id, "generate"),
        purpose=f"generate {agent.id}",
    )
