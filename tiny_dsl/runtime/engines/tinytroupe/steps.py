"""The TinyTroupe engine's step handlers (see "Steps" in `engine`'s docstring).

Each handler runs its step in the engine's TinyTroupe session (`_run`): the
synchronous body drives TinyTroupe's own methods, then collects the events.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tiny_dsl.plan.model import (
    AskStep,
    BroadcastStep,
    ContextStep,
    ConverseStep,
    DeliverStep,
    GenerateStep,
    GoalStep,
    InterviewStep,
    ProposeStep,
    RunStep,
    TellStep,
    ThinkStep,
    WaitStep,
    WorldPlan,
)
from tiny_dsl.runtime.engines.core import TranscriptEvent
from tiny_dsl.runtime.engines.personas import (
    generated_persona_request,
    persona_request,
    propose_request,
    vary_values,
)
from tiny_dsl.runtime.engines.prompts import delivery_text
from tiny_dsl.runtime.engines.tinytroupe.bridge import CallContext, call_context
from tiny_dsl.runtime.engines.tinytroupe.memory import TinyTroupeMemory
from tiny_dsl.runtime.external import add_line, session_id
from tiny_dsl.runtime.providers.base import Message

__all__ = ["TinyTroupeSteps"]


@dataclass(frozen=True)
class _Named:
    """A stimulus source that is not an agent (an intervention); TinyTroupe reads `.name`."""

    name: str


class TinyTroupeSteps(TinyTroupeMemory):
    """One handler per step kind; each runs in the session and returns its events."""

    async def generate(self, step: GenerateStep) -> None:
        """Flesh out population members: our persona call, then real `TinyPerson`s.

        TinyPersonFactory is not used. Its sampling-plan path spends two more
        calls re-sampling what the plan already sampled (seeded and stratified)
        and shuffles with the unseeded global `random`; its one-off path spends
        three calls per person (a name, the spec, an extended minibio) on a
        few-shot prompt longer than the embedded model's context, and asks for
        unconstrained JSON. Instead each member costs one schema-constrained
        call, byte-identical to the built-in engine's (same prompt, schema and
        seed), so both engines simulate the same people and share cached
        answers. The answer becomes a `TinyPerson`; fragments are merged with
        `include_persona_definitions` and the sampled attributes set with
        `define`, in the built-in engine's order.
        """
        plan = self._require_plan()
        if step.population is None:
            # `persona { generate ... }`: the built-in engine's request, then a TinyPerson
            # from the answer with the fields written set over it (`_create_members`).
            requests = [
                generated_persona_request(plan, plan.agent(agent_id), step.id)
                for agent_id in step.agents
            ]
        else:
            population = next(p for p in plan.populations if p.name == step.population)
            requests = [
                persona_request(
                    plan,
                    plan.agent(agent_id),
                    population.demographics_description,
                    population.context,
                    step.id,
                    self._varied.get(agent_id),
                )
                for agent_id in step.agents
            ]
        results = await asyncio.gather(
            *(self._client.complete(request) for request in requests), return_exceptions=True
        )
        answers: list[dict[str, Any]] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            if not isinstance(result.data, dict):
                raise RuntimeError(
                    f"{result.provider}/{result.model} returned no JSON object for a persona"
                )
            answers.append(result.data)
        await self._run(functools.partial(self._create_members, step, answers))

    async def propose(self, step: ProposeStep) -> None:
        """The population's `vary` values: the built-in engine's one call and slots.

        TinyTroupe's factory asks the model for a sampling plan and lets the model
        assign people to it; here the model only proposes the values, and the
        plan's seeded slots assign them, so the quota holds exactly."""
        plan = self._require_plan()
        response = await self._client.complete(propose_request(plan, step))
        if not isinstance(response.data, dict):
            raise RuntimeError(
                f"{response.provider}/{response.model} returned no JSON object for a proposal"
            )
        population = next(p for p in plan.populations if p.name == step.population)
        members = [plan.agent(agent_id) for agent_id in population.members]
        varied, notes = vary_values(step, response.data, members)
        self._varied.update(varied)
        self._notes_to_take.extend(notes)

    async def broadcast(self, step: BroadcastStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._broadcast, step))

    async def deliver(self, step: DeliverStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._deliver, step))

    async def ask(self, step: AskStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._ask, step))

    async def run_round(self, step: RunStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._run_round, step))

    def _run_round(self, step: RunStep) -> list[TranscriptEvent]:
        """One round at the world's current time; with `every`, the clock moves after it.

        TinyTroupe's `run(1, timedelta_per_step=D)` advances before the step, so the
        first round would happen at start + D; the round runs without a timedelta
        and `skip(1, D)` then moves the clock, as on the built-in engine.
        """
        world = self._world(step.world)
        events = self._round(world, step.id, step.agents)
        if step.every is not None:
            delta = timedelta(seconds=step.every)
            present = [*world.agents, *([world.moderator] if world.moderator else [])]
            for name in dict.fromkeys(self._layout.stage[(world.name, a)] for a in present):
                self._worlds[name].skip(1, timedelta_per_step=delta)
        return events

    async def wait(self, step: WaitStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._wait, step.seconds))

    async def think(self, step: ThinkStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._think, step))

    async def interview(self, step: InterviewStep) -> list[TranscriptEvent]:
        if step.interviewer in self._externals:
            events: list[TranscriptEvent] = []
            for agent_id in step.agents:
                events += await self._interview_by_external(step, agent_id)
            return events
        return await self._run(functools.partial(self._interview, step))

    async def tell(self, step: TellStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._tell, step))

    async def converse(self, step: ConverseStep) -> list[TranscriptEvent]:
        if step.partner in self._externals:
            events: list[TranscriptEvent] = []
            for agent_id in step.agents:
                events += await self._converse_external(step, agent_id)
            return events
        return await self._run(functools.partial(self._converse, step))

    # -- external agents: the person acts in TinyTroupe, the bot answers over HTTP -----

    async def _converse_external(self, step: ConverseStep, agent_id: str) -> list[TranscriptEvent]:
        """The person internalises the goal and speaks first; each turn that says
        something goes to the bot, whose reply the person hears (`listen`)."""
        session = session_id(self._require_plan(), step, agent_id)
        conversation: list[Message] = []
        events = await self._run(functools.partial(self._internalize, step, agent_id))
        for turn in range(step.turns):
            said, line = await self._run(
                functools.partial(self._turn_towards, step.id, agent_id, step.partner, turn, None)
            )
            events += said
            if not line:
                continue  # nothing said: nothing for the bot to answer
            add_line(conversation, "user", line)
            purpose = f"{step.partner} answers {agent_id}"
            reply = await self._externals.reply(step.partner, session, conversation, purpose)
            add_line(conversation, "assistant", reply)
            events += await self._run(
                functools.partial(self._hear_bot, step.id, agent_id, step.partner, reply, None)
            )
        return events

    async def _interview_by_external(
        self, step: InterviewStep, agent_id: str
    ) -> list[TranscriptEvent]:
        """The bot asks each question as written, hears the answer and replies to it."""
        session = session_id(self._require_plan(), step, agent_id)
        conversation: list[Message] = []
        world = self._layout.home_world[agent_id]
        bot = step.interviewer
        events: list[TranscriptEvent] = []
        for index, question in enumerate(step.questions):
            add_line(conversation, "assistant", question)
            events += await self._run(
                functools.partial(self._hear_bot, step.id, agent_id, bot, question, world)
            )
            said, answer = await self._run(
                functools.partial(self._turn_towards, step.id, agent_id, bot, index, world)
            )
            events += said
            if not answer:
                continue
            add_line(conversation, "user", answer)
            reply = await self._externals.reply(bot, session, conversation, f"{bot} answers")
            add_line(conversation, "assistant", reply)
            events += await self._run(
                functools.partial(self._hear_bot, step.id, agent_id, bot, reply, world)
            )
        return events

    def _internalize(self, step: ConverseStep, agent_id: str) -> list[TranscriptEvent]:
        self._ensure_worlds()
        self._people[agent_id].internalize_goal(step.goal)
        return self._collect([agent_id], None, step.id)

    def _turn_towards(
        self, step_id: str, agent_id: str, bot: str, turn: int, world: str | None
    ) -> tuple[list[TranscriptEvent], str]:
        """One turn of the person, whose TALK may address only the bot; its events (the
        TALKs addressed to the bot) and what it said aloud."""
        self._ensure_worlds()
        person = self._people[agent_id]
        context = CallContext(
            purpose=f"converse {agent_id}",
            seed_parts=(step_id, agent_id, turn),
            targets=(bot,),
            agent=agent_id,
        )
        with call_context(context):
            person.act(return_actions=True)
        # Said to the bot, which is not in any TinyWorld: nobody there may hear it again.
        actions = person.pop_latest_actions()
        events = self._collect([agent_id], world, step_id, addressed={agent_id})
        for event in events:
            if event.kind == "action" and event.type == "TALK":
                event.target, event.target_name = bot, bot
        spoken = [
            str(action.get("content") or "")
            for action in actions
            if action.get("type") == "TALK" and str(action.get("content") or "").strip()
        ]
        return events, "\n".join(spoken)

    def _hear_bot(
        self, step_id: str, agent_id: str, bot: str, text: str, world: str | None
    ) -> list[TranscriptEvent]:
        """The bot says `text` to the person (its event), who hears it (`listen`)."""
        self._ensure_worlds()
        said = TranscriptEvent(
            seq=0,
            step=step_id,
            world=world,
            agent=bot,
            agent_name=bot,
            kind="action",
            type="TALK",
            content=text,
            time=self._clock(agent_id),
            target=agent_id,
            target_name=self._names[agent_id],
        )
        self._people[agent_id].listen(text, source=_Named(bot))
        heard = self._collect([agent_id], world, step_id, addressed={agent_id})
        for event in heard:
            if event.source == bot:
                event.source_name = bot
        return [said, *heard]

    async def goal(self, step: GoalStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._goal, step))

    async def context(self, step: ContextStep) -> list[TranscriptEvent]:
        return await self._run(functools.partial(self._context, step))

    def _broadcast(self, step: BroadcastStep) -> list[TranscriptEvent]:
        self._ensure_worlds()
        world = self._world(step.world)
        events: list[TranscriptEvent] = []
        speaker = self._people[step.speaker] if step.speaker else None
        if step.speaker is not None:
            self._say(step.speaker, step.text, target=None)
            events += self._collect([step.speaker], world.name, step.id)
        listeners = [a for a in world.agents if a != step.speaker]
        if world.mode == "focus_group":
            self._worlds[world.name].broadcast(step.text, source=speaker)
        else:
            for agent_id in listeners:
                self._stage(world.name, agent_id).broadcast(step.text, source=speaker)
        events += self._collect(listeners, world.name, step.id)
        return events

    def _deliver(self, step: DeliverStep) -> list[TranscriptEvent]:
        self._ensure_worlds()
        events: list[TranscriptEvent] = []
        source = _Named(step.intervention)
        for delivery in step.deliveries:
            if delivery.time is not None:
                self._clock_world(delivery.agent).current_datetime = datetime.fromisoformat(
                    delivery.time
                )
            # Framed by channel exactly as the built-in engine frames it.
            content = delivery_text(delivery.channel, delivery.content)
            self._people[delivery.agent].see(content, source=source)
            events += self._collect([delivery.agent], step.world, step.id)
        return events

    def _ask(self, step: AskStep) -> list[TranscriptEvent]:
        self._ensure_worlds()
        world = self._world(step.world)
        asker = world.moderator
        events: list[TranscriptEvent] = []
        if asker is not None:
            self._say(asker, step.question, target=None)
            events += self._collect([asker], world.name, step.id)
        source = self._people[asker] if asker else None
        for agent_id in step.agents:
            self._people[agent_id].listen(step.question, source=source)
        events += self._collect(step.agents, world.name, step.id, addressed=set(step.agents))
        events += self._round(world, step.id, step.agents)
        return events

    def _round(self, world: WorldPlan, step_id: str, agent_ids: list[str]) -> list[TranscriptEvent]:
        """One round: everyone acts on the same state, then speech is handled; with
        `turns sequential`, one agent after another, in the world's agent order."""
        self._ensure_worlds()
        if world.mode == "focus_group":
            return self._room_round(world, step_id, agent_ids)
        if world.turns == "sequential":
            # Isolated participants hear nobody: only the order of events changes.
            return [
                event
                for agent_id in agent_ids
                for event in self._isolated_round(world, step_id, [agent_id])
            ]
        return self._isolated_round(world, step_id, agent_ids)

    def _room_round(
        self, world: WorldPlan, step_id: str, agent_ids: list[str]
    ) -> list[TranscriptEvent]:
        room = self._worlds[world.name]
        members = self._layout.worlds[world.name].members
        present = set(members)
        events: list[TranscriptEvent] = []

        targets = {
            agent_id: tuple(self._names[other] for other in members if other != agent_id)
            for agent_id in agent_ids
        }

        def act_together(actors: list[str]) -> dict[str, Any]:
            turns = self._parallel(
                actors,
                lambda agent_id: self._people[agent_id].act(return_actions=True),
                functools.partial(_act_context, step_id, targets),
            )
            events.extend(self._collect(actors, world.name, step_id, present=present))
            actions: dict[str, Any] = {}
            for agent_id, turn in zip(actors, turns, strict=True):
                person = self._people[agent_id]
                actions[person.name] = turn
                latest = person.pop_latest_actions()
                addressed = self._talk_targets(latest, present)
                room._handle_actions(person, latest)
                events.extend(self._collect(members, world.name, step_id, addressed=addressed))
            return actions

        sequential = world.turns == "sequential"

        def room_step() -> dict[str, Any]:
            if not sequential:
                return act_together(agent_ids)
            # Each agent acts after hearing the turns before its own in this round.
            actions: dict[str, Any] = {}
            for agent_id in agent_ids:
                actions.update(act_together([agent_id]))
            return actions

        room.tiny_dsl_step = room_step
        try:
            room.run(1, randomize_agents_order=False, parallelize=not sequential)
        finally:
            del room.tiny_dsl_step
        return events

    def _isolated_round(
        self, world: WorldPlan, step_id: str, agent_ids: list[str]
    ) -> list[TranscriptEvent]:
        moderator = world.moderator
        present = {moderator} if moderator else set()

        def act_alone(agent_id: str) -> list[dict[str, Any]]:
            steps = self._stage(world.name, agent_id).run(
                1, return_actions=True, randomize_agents_order=False, parallelize=False
            )
            turn: list[dict[str, Any]] = steps[0].get(self._names[agent_id], [])
            return turn

        heard_by = (self._names[moderator],) if world.mode == "interview" and moderator else ()
        targets = {agent_id: heard_by for agent_id in agent_ids}
        turns = self._parallel(
            agent_ids, act_alone, functools.partial(_act_context, step_id, targets)
        )
        events = self._collect(agent_ids, world.name, step_id, present=present)
        if world.mode == "interview" and moderator is not None:
            # 1:1: whatever a participant says, only the moderator is there to hear it.
            listener = self._people[moderator]
            for agent_id, turn in zip(agent_ids, turns, strict=True):
                for item in turn:
                    action = item["action"]
                    if action.get("type") == "TALK":
                        listener.listen(action.get("content", ""), source=self._people[agent_id])
                events += self._collect([moderator], world.name, step_id, addressed={moderator})
        return events

    def _wait(self, seconds: float) -> list[TranscriptEvent]:
        self._ensure_worlds()
        for world in self._worlds.values():
            world.skip(1, timedelta_per_step=timedelta(seconds=seconds))
        return []

    def _think(self, step: ThinkStep) -> list[TranscriptEvent]:
        self._ensure_worlds()
        events: list[TranscriptEvent] = []
        for agent_id in step.agents:
            self._people[agent_id].think(step.text)
            events += self._collect([agent_id], self._layout.home_world[agent_id], step.id)
        return events

    def _interview(self, step: InterviewStep) -> list[TranscriptEvent]:
        """Every interviewee answers every question; interviewees are interviewed concurrently."""
        self._ensure_worlds()
        interviewer_id = step.interviewer
        interviewer = self._people[interviewer_id]
        interviewees = [a for a in step.agents if a != interviewer_id]
        for agent_id in interviewees:
            self._make_accessible(self._people[agent_id], interviewer)

        def session(agent_id: str) -> list[tuple[int, list[dict[str, Any]]]]:
            person = self._people[agent_id]
            answers = []
            for question in step.questions:
                person.listen(question, source=interviewer)
                turn = person.act(return_actions=True)
                # Delivered below; left buffered, a later round would deliver them again.
                person.pop_latest_actions()
                answers.append((len(person.episodic_memory.retrieve_all()), turn))
            return answers

        sessions = self._parallel(
            interviewees,
            session,
            lambda agent_id: CallContext(
                purpose=f"interview {agent_id}",
                seed_parts=(step.id, agent_id),
                targets=(interviewer.name,),
                agent=agent_id,
            ),
        )
        events: list[TranscriptEvent] = []
        for agent_id, answers in zip(interviewees, sessions, strict=True):
            person = self._people[agent_id]
            world = self._layout.home_world[agent_id]
            present = {interviewer_id}
            for question, (until, turn) in zip(step.questions, answers, strict=True):
                self._say(interviewer_id, question, target=person.name)
                events += self._collect([interviewer_id], world, step.id, present={agent_id})
                events += self._collect(
                    [agent_id], world, step.id, addressed={agent_id}, present=present, until=until
                )
                for item in turn:
                    action = item["action"]
                    if action.get("type") == "TALK":
                        interviewer.listen(action.get("content", ""), source=person)
                events += self._collect(
                    [interviewer_id], world, step.id, addressed={interviewer_id}
                )
        return events

    def _tell(self, step: TellStep) -> list[TranscriptEvent]:
        """`listen_and_act` for each agent, concurrently; nobody else hears the answers."""
        self._ensure_worlds()

        def answer(agent_id: str) -> None:
            person = self._people[agent_id]
            person.listen_and_act(step.text, return_actions=True)
            # Heard by nobody: left buffered, a later round would deliver them.
            person.pop_latest_actions()

        nobody: dict[str, tuple[str, ...]] = {agent_id: () for agent_id in step.agents}
        self._parallel(step.agents, answer, functools.partial(_act_context, step.id, nobody))
        return self._collect(step.agents, None, step.id, addressed=set(step.agents))

    def _converse(self, step: ConverseStep) -> list[TranscriptEvent]:
        """One conversation per agent, one after another: there is one partner, restored
        to its state before the step after each conversation."""
        self._ensure_worlds()
        partner_id = step.partner
        partner = self._people[partner_id]
        before = partner.encode_complete_state()
        events: list[TranscriptEvent] = []
        for agent_id in step.agents:
            events += self._converse_one(step, agent_id)
            partner.decode_complete_state(copy.deepcopy(before))
            partner.reset_prompt()
            self._seen[partner_id] = len(partner.episodic_memory.retrieve_all())
        return events

    def _converse_one(self, step: ConverseStep, agent_id: str) -> list[TranscriptEvent]:
        partner_id = step.partner
        person, partner = self._people[agent_id], self._people[partner_id]
        self._make_accessible(person, partner)
        self._make_accessible(partner, person)
        person.internalize_goal(step.goal)
        speaker = CallContext(
            purpose=f"converse {agent_id}",
            seed_parts=(step.id, agent_id),
            targets=(partner.name,),
            agent=agent_id,
        )
        answerer = CallContext(
            purpose=f"converse {agent_id} ({partner_id})",
            seed_parts=(step.id, agent_id, partner_id),
            targets=(person.name,),
            agent=partner_id,
        )
        events: list[TranscriptEvent] = []
        for _ in range(step.turns):
            for actor, listener, context in (
                (person, partner, speaker),
                (partner, person, answerer),
            ):
                actor_id, listener_id = self._ids[actor.name], self._ids[listener.name]
                with call_context(context):
                    actor.act(return_actions=True)
                events += self._collect(
                    [actor_id], None, step.id, addressed={actor_id}, present={listener_id}
                )
                for action in actor.pop_latest_actions():
                    if action.get("type") == "TALK":
                        listener.listen(action.get("content", ""), source=actor)
        events += self._collect([agent_id], None, step.id, addressed={agent_id})
        return events

    def _goal(self, step: GoalStep) -> list[TranscriptEvent]:
        self._ensure_worlds()
        for agent_id in step.agents:
            self._people[agent_id].internalize_goal(step.text)
        return self._collect(step.agents, None, step.id)

    def _context(self, step: ContextStep) -> list[TranscriptEvent]:
        """`broadcast_context_change` on the world (each participant's own world, in
        isolated modes). TinyTroupe keeps the context in the agents' cognitive state,
        not in episodic memory; the events say who was told, as the built-in engine's do."""
        self._ensure_worlds()
        stages = {self._layout.stage[(step.world, agent_id)] for agent_id in step.agents}
        for name in sorted(stages):
            self._worlds[name].broadcast_context_change([step.text])
        return [
            TranscriptEvent(
                seq=0,
                step=step.id,
                world=step.world,
                agent=agent_id,
                agent_name=self._names[agent_id],
                kind="stimulus",
                type="CONTEXT",
                content=step.text,
                time=self._clock(agent_id),
            )
            for agent_id in step.agents
        ]


def _act_context(
    step_id: str, targets: Mapping[str, tuple[str, ...]], agent_id: str
) -> CallContext:
    """An agent's turn: its calls' seeds and whom its TALK may address."""
    return CallContext(
        purpose=f"act {agent_id}",
        seed_parts=(step_id, agent_id),
        targets=targets[agent_id],
        agent=agent_id,
    )
