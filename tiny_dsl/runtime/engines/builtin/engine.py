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
    make no call. `extract`: one call per agent over its events in the world,
    or its whole memory for a group source; `extract overall`: one call over
    every agent's events in the world.
    `tell`: the experimenter's line (a CONVERSATION stimulus with no source and
    no world) reaches each agent, who then takes one turn alone; nobody else
    hears the answer. `converse GROUP with P`: for each agent a separate 1:1
    conversation with a copy of P as it was before the step; the agent holds
    the goal (a GOAL stimulus, and in its goals while the conversation lasts),
    speaks first, and the two alternate; P's copy is dropped afterwards.
    `goal`: a GOAL stimulus, and the goal added to the agent's goals, which
    every later turn prompt shows. `context WORLD`: a CONTEXT stimulus for each
    agent of the world, and the world's setting in later turn prompts replaced.
    Events of `tell`, `converse` and `goal` carry no world.

Rounds
    In a round every agent acts once on the state at the start of the round,
    concurrently; then all actions are recorded and every TALK delivered, in
    the round's agent order. This is TinyTroupe's parallel `world.run()` with a
    fixed order instead of a shuffle, so results never depend on which call
    finished first. In a `turns sequential` world agents act one after another
    in the world's agent order, each one's TALK delivered before the next acts
    (TinyTroupe's `world.run(parallelize=False, randomize_agents_order=False)`).

Clocks
    Every agent has its own clock, starting at the start of the first world it
    belongs to. `deliver` sets a recipient's clock to the delivery time; `wait`
    advances every agent's and world's clock; `run W N rounds every D` moves
    W's clock and the clock of each agent of W by D after each round (the
    first round happens at the current time). Nothing else moves time. Events of steps that name no
    world (`think`, `interview`) are recorded under the agent's first world, so
    extraction from that world sees them.

Checkpoints
    An agent's saved memory is the `seq` of each event it remembers: the events
    themselves are in the transcript the interpreter saves, and `load_state`
    takes them from there.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from tiny_dsl.plan.model import (
    AskStep,
    BroadcastStep,
    ContextStep,
    ConverseStep,
    DeliverStep,
    ExtractOverallStep,
    ExtractStep,
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
from tiny_dsl.runtime.engines.builtin.actions import Action
from tiny_dsl.runtime.engines.builtin.agents import (
    Agent,
    addressable,
    listeners,
    make_event,
    resolve_target,
)
from tiny_dsl.runtime.engines.builtin.personas import (
    apply_attributes,
    merge_persona,
    persona_brief,
)
from tiny_dsl.runtime.engines.builtin.simulation import (
    BuiltinSimulation,
    answer_data,
    gather_in_order,
)
from tiny_dsl.runtime.engines.core import TranscriptEvent
from tiny_dsl.runtime.engines.extraction import extract_overall_record, extract_row
from tiny_dsl.runtime.engines.personas import (
    generated_persona_request,
    keep_written_fields,
    persona_request,
    propose_request,
    unique_name,
    vary_values,
)
from tiny_dsl.runtime.engines.prompts import delivery_text
from tiny_dsl.runtime.external import add_line, session_id
from tiny_dsl.runtime.providers.base import Message

__all__ = ["BuiltinEngine"]


def _external_speaker(name: str, listener: Agent) -> Agent:
    """An external agent as the speaker of events: its name, on the listener's clock
    (it has no memory here; the bot keeps its own)."""
    return Agent(name, name, {}, listener.clock, None)


def _spoken(actions: list[Action]) -> str:
    """What a turn said aloud: its TALKs' words, in order."""
    return "\n".join(a.content for a in actions if a.type == "TALK" and a.content.strip())


class BuiltinEngine(BuiltinSimulation):
    """Runs plans with TinyTroupe's semantics (see the module docstring)."""

    name = "builtin"

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
                    # A group source reads the agent's whole memory, a world its events there.
                    events=[e for e in agent.memory if step.world is None or e.world == step.world],
                    interventions=plan.interventions,
                )
            )
        return await gather_in_order(coroutines)

    async def extract_overall(self, step: ExtractOverallStep) -> dict[str, Any]:
        """One call over the world's whole record: every agent's events in the world."""
        plan = self._require_plan()
        histories = [
            (
                agent_id,
                self._agents[agent_id].name,
                [e for e in self._agents[agent_id].memory if e.world == step.world],
            )
            for agent_id in step.agents
        ]
        return await extract_overall_record(
            self._client,
            seed=plan.settings.seed,
            step=step,
            # The situation as it stands now: a `context` step may have changed it.
            context=self._contexts.get(step.world, plan.world(step.world).context),
            histories=histories,
        )

    # -- steps ------------------------------------------------------------------

    async def propose(self, step: ProposeStep) -> None:
        """The population's `vary` values: one call, then each member's by its slot."""
        plan = self._require_plan()
        response = await self._client.complete(propose_request(plan, step))
        population = next(p for p in plan.populations if p.name == step.population)
        members = [self._agent_plans[agent_id] for agent_id in population.members]
        varied, notes = vary_values(step, answer_data(response), members)
        self._varied.update(varied)
        self._notes_to_take.extend(notes)

    async def generate(self, step: GenerateStep) -> None:
        """Flesh out population members (or the `generate` personas): one structured
        call each, then merge and name."""
        plan = self._require_plan()
        if step.population is None:
            await self._generate_personas(step)
            return
        population = next(p for p in plan.populations if p.name == step.population)
        requests = [
            persona_request(
                plan,
                self._agent_plans[agent_id],
                population.demographics_description,
                population.context,
                step.id,
                self._varied.get(agent_id),
            )
            for agent_id in step.agents
        ]
        responses = await gather_in_order(self._client.complete(r) for r in requests)
        # Names are settled after all answers are in, in member order, so the suffix
        # a clashing name gets never depends on completion order.
        taken = {
            agent.name.casefold()
            for agent in self._agents.values()
            if agent.generated or self._agent_plans[agent.id].defined
        }
        for agent_id, response in zip(step.agents, responses, strict=True):
            plan_agent = self._agent_plans[agent_id]
            agent = self._agents[agent_id]
            notes: list[str] = []
            persona: dict[str, Any] = dict(answer_data(response))
            for fragment in plan_agent.fragments:
                persona = merge_persona(persona, fragment, notes)
            persona = apply_attributes(
                persona, {**plan_agent.attributes, **self._varied.get(agent_id, {})}
            )
            name = unique_name(str(persona.get("name") or agent_id).strip() or agent_id, taken)
            if name != persona.get("name"):
                notes.append(f"renamed from {persona.get('name')!r} to {name!r} (name taken)")
            taken.add(name.casefold())
            persona["name"] = name
            agent.persona, agent.name, agent.notes, agent.generated = persona, name, notes, True

    async def _generate_personas(self, step: GenerateStep) -> None:
        """`persona { generate ... }`: the model's persona, the fields written set over
        it, then the fragments merged (a conflict keeps the persona's value, noted)."""
        plan = self._require_plan()
        requests = [
            generated_persona_request(plan, self._agent_plans[agent_id], step.id)
            for agent_id in step.agents
        ]
        responses = await gather_in_order(self._client.complete(r) for r in requests)
        taken = {
            agent.name.casefold()
            for agent in self._agents.values()
            if agent.generated or self._agent_plans[agent.id].defined
        }
        for agent_id, response in zip(step.agents, responses, strict=True):
            plan_agent = self._agent_plans[agent_id]
            agent = self._agents[agent_id]
            notes: list[str] = []
            persona = keep_written_fields(answer_data(response), plan_agent.persona or {})
            for fragment in plan_agent.fragments:
                persona = merge_persona(persona, fragment, notes)
            name = unique_name(str(persona.get("name") or agent_id).strip() or agent_id, taken)
            if name != persona.get("name"):
                notes.append(f"renamed from {persona.get('name')!r} to {name!r} (name taken)")
            taken.add(name.casefold())
            persona["name"] = name
            agent.persona, agent.name, agent.notes, agent.generated = persona, name, notes, True

    async def broadcast(self, step: BroadcastStep) -> list[TranscriptEvent]:
        world = self._world(step.world)
        events: list[TranscriptEvent] = []
        speaker = self._agents[step.speaker] if step.speaker else None
        if speaker is not None:
            events.append(
                self._remember(
                    make_event(speaker, step.id, world.name, "action", "TALK", step.text)
                )
            )
        for agent_id in world.agents:
            if speaker is not None and agent_id == speaker.id:
                continue
            agent = self._agents[agent_id]
            events.append(
                self._remember(
                    make_event(
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

    async def deliver(self, step: DeliverStep) -> list[TranscriptEvent]:
        events: list[TranscriptEvent] = []
        for delivery in step.deliveries:
            agent = self._agents[delivery.agent]
            if delivery.time is not None:
                agent.clock = datetime.fromisoformat(delivery.time)
            content = delivery_text(delivery.channel, delivery.content)
            event = make_event(agent, step.id, step.world, "stimulus", "VISUAL", content)
            event.source = step.intervention
            events.append(self._remember(event))
        return events

    async def ask(self, step: AskStep) -> list[TranscriptEvent]:
        world = self._world(step.world)
        asker = self._agents[world.moderator] if world.moderator else None
        events: list[TranscriptEvent] = []
        if asker is not None:
            events.append(
                self._remember(
                    make_event(asker, step.id, world.name, "action", "TALK", step.question)
                )
            )
        for agent_id in step.agents:
            agent = self._agents[agent_id]
            event = make_event(
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

    async def run_round(self, step: RunStep) -> list[TranscriptEvent]:
        world = self._world(step.world)
        events = await self._round(world, step.id, step.agents)
        if step.every is not None:
            # The round happens at the current time; the clock moves after it.
            self._advance(world, timedelta(seconds=step.every))
        return events

    def _advance(self, world: WorldPlan, delta: timedelta) -> None:
        """`run ... every`: the world's clock and the clock of each agent in it move on."""
        self._world_clocks[world.name] += delta
        present = [*world.agents, *([world.moderator] if world.moderator else [])]
        for agent_id in present:
            self._agents[agent_id].clock += delta

    async def _round(
        self, world: WorldPlan, step_id: str, agent_ids: list[str]
    ) -> list[TranscriptEvent]:
        """Everyone acts on the same state; then actions are recorded and speech delivered.

        With `turns sequential`, agents act one after another instead, each one's
        actions recorded and speech delivered before the next acts.
        """
        if world.turns == "sequential":
            events: list[TranscriptEvent] = []
            for agent_id in agent_ids:
                events.extend(await self._turns(world, step_id, [agent_id]))
            return events
        return await self._turns(world, step_id, agent_ids)

    async def _turns(
        self, world: WorldPlan, step_id: str, agent_ids: list[str]
    ) -> list[TranscriptEvent]:
        """`agent_ids` act concurrently on the same state; then their actions are
        recorded and their speech delivered, in `agent_ids` order."""
        actors = [self._agents[agent_id] for agent_id in agent_ids]
        turns = await gather_in_order(
            self._act(agent, world, addressable(self._agents, world, agent), step_id)
            for agent in actors
        )
        events: list[TranscriptEvent] = []
        talks: list[tuple[Agent, TranscriptEvent]] = []
        for agent, actions in zip(actors, turns, strict=True):
            for action in actions:
                target = (
                    resolve_target(self._agents, world, agent, action.target)
                    if action.type == "TALK"
                    else None
                )
                event = self._remember(
                    make_event(
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
            for listener in listeners(self._agents, world, speaker, target):
                events.append(
                    self._remember(
                        make_event(
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

    async def wait(self, step: WaitStep) -> list[TranscriptEvent]:
        delta = timedelta(seconds=step.seconds)
        for agent in self._agents.values():
            agent.clock += delta
        for name in self._world_clocks:
            self._world_clocks[name] += delta
        return []

    async def think(self, step: ThinkStep) -> list[TranscriptEvent]:
        return [
            self._remember(make_event(agent, step.id, agent.home, "stimulus", "THOUGHT", step.text))
            for agent in (self._agents[agent_id] for agent_id in step.agents)
        ]

    async def interview(self, step: InterviewStep) -> list[TranscriptEvent]:
        """Each agent answers every question in turn; agents are interviewed concurrently.

        The interviewer's own memory (its questions and the answers it hears) is
        written after all sessions, session by session in agent order.
        """
        if step.interviewer in self._externals:
            sessions = await gather_in_order(
                self._interview_by_external(step, self._agents[agent_id])
                for agent_id in step.agents
            )
            return [event for session in sessions for event in session]
        interviewer = self._agents[step.interviewer]
        interviewees = [self._agents[a] for a in step.agents if a != interviewer.id]
        sessions = await gather_in_order(
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
        self, step: InterviewStep, interviewer: Agent, agent: Agent
    ) -> list[TranscriptEvent]:
        world = self._plan_world(agent.home)
        events: list[TranscriptEvent] = []
        for index, question in enumerate(step.questions):
            events.append(
                make_event(
                    interviewer, step.id, agent.home, "action", "TALK", question, target=agent
                )
            )
            events.append(
                self._remember(
                    make_event(
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
                    make_event(
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
                        make_event(
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

    async def _interview_by_external(
        self, step: InterviewStep, agent: Agent
    ) -> list[TranscriptEvent]:
        """An external interviewer: it asks each question as written, hears the answer
        and replies to it, in one session; the agent hears the reply."""
        bot = _external_speaker(step.interviewer, agent)
        session = session_id(self._require_plan(), step, agent.id)
        conversation: list[Message] = []
        world = self._plan_world(agent.home)
        events: list[TranscriptEvent] = []
        for index, question in enumerate(step.questions):
            add_line(conversation, "assistant", question)
            events.append(
                make_event(bot, step.id, agent.home, "action", "TALK", question, target=agent)
            )
            events.append(self._heard(agent, bot, question, step.id, agent.home))
            actions = await self._act(agent, world, [bot], step.id, index)
            events += self._record_turn(agent, step.id, actions, bot, agent.home)
            answer = _spoken(actions)
            if not answer:
                continue  # nothing said: nothing for the bot to answer
            add_line(conversation, "user", answer)
            purpose = f"{step.interviewer} answers {agent.id}"
            reply = await self._externals.reply(step.interviewer, session, conversation, purpose)
            add_line(conversation, "assistant", reply)
            events.append(
                make_event(bot, step.id, agent.home, "action", "TALK", reply, target=agent)
            )
            events.append(self._heard(agent, bot, reply, step.id, agent.home))
        return events

    def _heard(
        self, agent: Agent, speaker: Agent, text: str, step_id: str, world: str | None
    ) -> TranscriptEvent:
        """`agent` hears `speaker` say `text` to it, and remembers it."""
        return self._remember(
            make_event(
                agent,
                step_id,
                world,
                "stimulus",
                "CONVERSATION",
                text,
                source=speaker,
                target=agent,
            )
        )

    async def tell(self, step: TellStep) -> list[TranscriptEvent]:
        """Each agent hears the experimenter and answers alone, concurrently."""
        agents = [self._agents[agent_id] for agent_id in step.agents]
        heard = [
            self._remember(
                make_event(
                    agent, step.id, None, "stimulus", "CONVERSATION", step.text, target=agent
                )
            )
            for agent in agents
        ]
        turns = await gather_in_order(self._act(agent, None, [], step.id) for agent in agents)
        events: list[TranscriptEvent] = []
        for agent, stimulus, actions in zip(agents, heard, turns, strict=True):
            events.append(stimulus)
            events.extend(self._record_turn(agent, step.id, actions, None))
        return events

    async def converse(self, step: ConverseStep) -> list[TranscriptEvent]:
        """One conversation per agent, concurrently; events session by session in agent order."""
        if step.partner in self._externals:
            sessions = await gather_in_order(
                self._converse_external(step, self._agents[agent_id]) for agent_id in step.agents
            )
            return [event for session in sessions for event in session]
        partner = self._agents[step.partner]
        sessions = await gather_in_order(
            self._converse_one(step, partner, self._agents[agent_id]) for agent_id in step.agents
        )
        return [event for session in sessions for event in session]

    async def _converse_one(
        self, step: ConverseStep, partner: Agent, agent: Agent
    ) -> list[TranscriptEvent]:
        # The partner talks with many people: each conversation starts from its state
        # before the step, and what it hears in one is never remembered afterwards.
        answerer = dataclasses.replace(
            partner,
            memory=list(partner.memory),
            cognitive_state=dict(partner.cognitive_state),
            goals=list(partner.goals),
        )
        events = [self._remember(make_event(agent, step.id, None, "stimulus", "GOAL", step.goal))]
        agent.goals.append(step.goal)
        try:
            for turn in range(step.turns):
                said = await self._act(agent, None, [answerer], step.id, 2 * turn)
                events += self._record_turn(agent, step.id, said, answerer)
                events += self._hear(answerer, agent, said, step.id, remember=False)
                answered = await self._act(answerer, None, [agent], step.id, 2 * turn + 1)
                for action in answered:
                    event = make_event(
                        answerer,
                        step.id,
                        None,
                        "action",
                        action.type,
                        action.content,
                        target=agent if action.type == "TALK" else None,
                    )
                    answerer.memory.append(event)
                    events.append(event)
                events += self._hear(agent, answerer, answered, step.id, remember=True)
        finally:
            agent.goals.remove(step.goal)
        return events

    async def _converse_external(self, step: ConverseStep, agent: Agent) -> list[TranscriptEvent]:
        """A conversation with an external agent: the agent speaks first, and each of its
        turns that says something is sent to the bot, whose reply the agent hears."""
        bot = _external_speaker(step.partner, agent)
        session = session_id(self._require_plan(), step, agent.id)
        conversation: list[Message] = []
        events = [self._remember(make_event(agent, step.id, None, "stimulus", "GOAL", step.goal))]
        agent.goals.append(step.goal)
        try:
            for turn in range(step.turns):
                said = await self._act(agent, None, [bot], step.id, 2 * turn)
                events += self._record_turn(agent, step.id, said, bot)
                line = _spoken(said)
                if not line:
                    continue  # nothing said: nothing for the bot to answer
                add_line(conversation, "user", line)
                purpose = f"{step.partner} answers {agent.id}"
                reply = await self._externals.reply(step.partner, session, conversation, purpose)
                add_line(conversation, "assistant", reply)
                events.append(make_event(bot, step.id, None, "action", "TALK", reply, target=agent))
                events.append(self._heard(agent, bot, reply, step.id, None))
        finally:
            agent.goals.remove(step.goal)
        return events

    def _record_turn(
        self,
        agent: Agent,
        step_id: str,
        actions: list[Action],
        partner: Agent | None,
        world: str | None = None,
    ) -> list[TranscriptEvent]:
        """An agent's actions (outside any world, unless `world`), remembered; a TALK
        addresses `partner`."""
        return [
            self._remember(
                make_event(
                    agent,
                    step_id,
                    world,
                    "action",
                    action.type,
                    action.content,
                    target=partner if action.type == "TALK" else None,
                )
            )
            for action in actions
        ]

    def _hear(
        self,
        listener: Agent,
        speaker: Agent,
        actions: list[Action],
        step_id: str,
        *,
        remember: bool,
    ) -> list[TranscriptEvent]:
        """What `listener` hears of `speaker`'s turn in a 1:1 conversation: its TALKs."""
        events = []
        for action in actions:
            if action.type != "TALK":
                continue
            event = make_event(
                listener,
                step_id,
                None,
                "stimulus",
                "CONVERSATION",
                action.content,
                source=speaker,
                target=listener,
            )
            if remember:
                self._remember(event)
            else:
                listener.memory.append(event)
            events.append(event)
        return events

    async def goal(self, step: GoalStep) -> list[TranscriptEvent]:
        events = []
        for agent_id in step.agents:
            agent = self._agents[agent_id]
            agent.goals.append(step.text)
            events.append(
                self._remember(make_event(agent, step.id, None, "stimulus", "GOAL", step.text))
            )
        return events

    async def context(self, step: ContextStep) -> list[TranscriptEvent]:
        self._contexts[step.world] = step.text
        return [
            self._remember(
                make_event(
                    self._agents[agent_id], step.id, step.world, "stimulus", "CONTEXT", step.text
                )
            )
            for agent_id in step.agents
        ]
