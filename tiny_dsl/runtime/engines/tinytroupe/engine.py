"""The TinyTroupe engine: plans run on Microsoft's TinyTroupe library itself.

The second implementation of `tiny_dsl.runtime.engines.core.Engine`. It builds real
`TinyPerson`s and `TinyWorld`s and drives them with TinyTroupe's own methods;
every model call TinyTroupe makes goes through our `LLMClient`
(`tiny_dsl.runtime.engines.tinytroupe.bridge`). Semantics, transcript events and
result rows follow the built-in engine as closely as TinyTroupe allows.

Agents
    A persona is `TinyPerson(name)` plus `include_persona_definitions(persona)`
    (the plan's persona already holds its fragments and, for agent files, the
    file's persona as given). Names are made unique exactly as the built-in
    engine does, because TinyTroupe's agent registry rejects duplicates.

Worlds and clocks
    TinyTroupe keeps time per world, the built-in engine per agent. So a
    `focus_group` world is one `TinyWorld` (everyone accessible to everyone,
    the moderator present), while in `survey` and `interview` worlds every
    participant gets a `TinyWorld` of their own: they stay isolated, and a timed
    delivery moves only the recipient's clock. A moderator of such a world, and
    an agent in no world, also gets a world of their own. Every agent's
    `environment` (its clock) is the world it first appears in. Worlds are built
    with an explicit `initial_datetime` and a fresh `interventions` list (both
    defaults are shared, mutable or frozen at import in TinyTroupe).

Steps
    broadcast: the moderator's line is recorded as its TALK, then
        `world.broadcast` (each participant's own world, in isolated modes).
    deliver: `see` (a VISUAL stimulus, as in the built-in engine) of the message
        framed by channel, sourced from the intervention, after setting the
        recipient's world clock to the delivery time; the control group gets
        nothing.
    ask: the moderator's TALK, each asked agent `listen`s (with the moderator as
        source, which `listen_and_act` cannot express), then one round.
    run (a round): `world.run(1, randomize_agents_order=False, parallelize=True)`;
        with `turns sequential`, `parallelize=False`: agents act one after another
        in the world's agent order, each hearing the turns before its own. With
        `every D`, the world's `TinyWorld`s then `skip(1, D)` (TinyTroupe's
        `timedelta_per_step` moves the clock before a step; the built-in engine
        and the language move it after each round, the first one at the current
        time).
        The focus-group world's parallel step is TinyTroupe's, except that the
        moderator does not act (its lines are the scenario's script), agents act
        on tiny_dsl's threads, and a failing agent fails the step instead of
        being logged and skipped. Speech is then handled by TinyTroupe
        (`_handle_actions`), agent by agent in plan order. In isolated worlds
        every participant's world runs one step concurrently; in an `interview`
        world whatever a participant says reaches the moderator.
    wait: `skip(1, timedelta)` on every world.
    think: `think`.
    interview: for each question, `listen` then `act`; interviewees are
        interviewed concurrently; the interviewer's memory is written afterwards,
        session by session, so it never depends on timing.
    tell: `listen_and_act` for each agent, concurrently, outside any world
        (events with no world); the answers are heard by nobody.
    converse: for each agent in turn, agent and partner made accessible to each
        other; the agent `internalize_goal`s the goal, then they alternate `act`,
        each `listen`ing to the other's TALK; the partner's
        `encode_complete_state()` from before the step is restored after each
        conversation, so it keeps none of them.
    goal: `internalize_goal`. context: `broadcast_context_change([text])` on the
        world (each participant's own world in isolated modes); TinyTroupe keeps
        it in the mental state only, so the engine records the CONTEXT events.
    generate: see `steps.TinyTroupeSteps.generate`.
    extract: TinyTroupe's `ResultsExtractor` per agent, schema-constrained
        through the bridge, then re-validated field by field as the built-in
        engine's answers are (`tiny_dsl.runtime.engines.extraction`; a value
        that fails is missing, with the reason). A group source has no
        situation (no world).
    extract overall: `ResultsExtractor.extract_results_from_world` over a view
        of the world's participants (`_WorldView`), one call, validated the same
        way.

Transcript
    Events are read from the agents' episodic memories at deterministic points
    (after each phase of a step, agents in plan order), so their order never
    depends on which model call finished first.

Checkpoints
    `dump_state` stores each agent's `encode_complete_state()` (minus the
    prompt, which is rebuilt) and every world's clock. Interventions are not
    encoded by TinyTroupe, and none are used. TinyTroupe's `control` module is
    never used: its replay is positional and breaks with parallel agents.

TinyTroupe's registries, configuration and client are process-wide, so engines
take turns: each step runs in a worker thread holding a process lock, with this
engine's agent and world registries swapped in.

The engine is built in layers, one module each: `session` (TinyTroupe's
globals, threads and the person registry), `worlds` (building the layout of
`layout`), `memory` (episodes into transcript events), `steps` (the handlers)
and this module (the `Engine` interface and checkpoints).
"""

from __future__ import annotations

import copy
import functools
from datetime import datetime
from typing import Any

from tiny_dsl.extraction import build_row, extraction_schema
from tiny_dsl.extraction.schema import max_answer_tokens
from tiny_dsl.plan.model import ExtractOverallStep, ExtractStep, FieldPlan, Plan
from tiny_dsl.runtime.engines.core import EngineStateError, TranscriptEvent
from tiny_dsl.runtime.engines.extraction import answer_values, overall_record, rank_words
from tiny_dsl.runtime.engines.tinytroupe.bridge import AgentSettings, CallContext
from tiny_dsl.runtime.engines.tinytroupe.layout import plan_layout
from tiny_dsl.runtime.engines.tinytroupe.loader import CONFIG_INI, import_tinytroupe
from tiny_dsl.runtime.engines.tinytroupe.session import persona_of
from tiny_dsl.runtime.engines.tinytroupe.steps import TinyTroupeSteps
from tiny_dsl.runtime.providers.base import InvalidOutput

__all__ = ["TinyTroupeEngine"]

# Agent-state keys that are derived from the rest (the rendered system prompt, twice)
# or only feed the console display; dropped from checkpoints and rebuilt on load.
_DERIVED_STATE = (
    "current_messages",
    "_init_system_message",
    "_prompt_template_path",
    "_displayed_communications_buffer",
)
_OVERALL_OBJECTIVE = (
    "Fill in structured data about the group as a whole from what their interaction histories "
    "show. Use null for any field the histories do not tell; never guess."
)
_EXTRACTION_OBJECTIVE = (
    "Fill in structured data about this person from what their interaction history shows. "
    "Use null for any field the history does not tell; never guess."
)


class TinyTroupeEngine(TinyTroupeSteps):
    """Runs plans on TinyTroupe (see the module docstring).

    `memory` narrows the agents' prompt memory (default: TinyTroupe's own
    window); `log_dir` receives TinyTroupe's log (`tinytroupe.log`, INFO) and
    the configuration it was imported with; `verbose` lets TinyTroupe print its
    conversation display; `max_threads` caps the threads acting at once (the
    `LLMClient` caps the model calls).
    """

    name = "tinytroupe"
    state_format = 1

    # -- Engine interface -----------------------------------------------------------

    async def setup(self, plan: Plan) -> None:
        self._tt = import_tinytroupe()
        self._plan = plan
        self._agent_settings = {
            agent.id: AgentSettings(agent.model, agent.temperature)
            for agent in plan.agents
            if agent.model is not None or agent.temperature is not None
        }
        self._layout = plan_layout(plan)
        self._reset()
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            (self._log_dir / "tinytroupe.config.ini").write_text(CONFIG_INI, encoding="utf-8")
        await self._run(self._create_personas)

    async def extract(self, step: ExtractStep) -> list[dict[str, Any]]:
        return await self._run(functools.partial(self._extract, step))

    async def extract_overall(self, step: ExtractOverallStep) -> dict[str, Any]:
        return await self._run(functools.partial(self._extract_overall, step))

    def personas(self) -> dict[str, dict[str, Any]]:
        # Read from the checkpoint form, which also holds a restored state that
        # `load_state` has not applied yet (it rebuilds TinyPersons in the next step).
        plan = self._require_plan()
        return {
            agent_id: saved["state"]["_persona"]
            for agent_id, saved in self.dump_state()["agents"].items()
            if saved["generated"] or plan.agent(agent_id).defined
        }

    def take_notes(self) -> list[str]:
        notes, self._notes_to_take = self._notes_to_take, []
        return notes

    def dump_state(self) -> dict[str, Any]:
        if self._pending_state is not None:
            return self._pending_state
        plan = self._require_plan()
        clocks = (
            {name: world.current_datetime for name, world in self._worlds.items()}
            if self._worlds
            else None
        )
        return {
            **self._state_header(clocks, tinytroupe=self._require_tt().version),
            "agents": {
                agent.id: {
                    "name": self._names[agent.id],
                    "generated": agent.id in self._generated,
                    "notes": self._notes.get(agent.id, []),
                    "state": _encode(self._people[agent.id]),
                }
                for agent in plan.agents
                if agent.id in self._people
            },
            "varied": self._varied,
        }

    def load_state(self, state: dict[str, Any], transcript: list[TranscriptEvent]) -> None:
        """Check `state` against the plan now; apply it before the next step runs.

        Rebuilding TinyTroupe objects needs the process lock, which must not be
        awaited on the event loop's thread, so it happens in the next step's
        worker thread. `transcript` is not needed: TinyTroupe's encoded agent
        states hold their own episodic memories.
        """
        plan = self._require_plan()
        self._read_header(state, self._layout.worlds)
        agents = state["agents"]
        personas = {agent.id for agent in plan.agents if agent.defined}
        if not personas <= set(agents) <= {agent.id for agent in plan.agents}:
            raise EngineStateError("saved state has different agents than the plan")
        self._pending_state = state

    # -- extraction -----------------------------------------------------------------

    def _extract(self, step: ExtractStep) -> list[dict[str, Any]]:
        self._ensure_worlds()
        plan = self._require_plan()
        # A group source has no world, hence no situation: the whole memory is read.
        situation = self._world(step.world).context if step.world is not None else ""
        fields = step.fields
        schema = extraction_schema(fields)
        hints = {f.name: _field_hint(f) for f in fields}

        def row(agent_id: str) -> dict[str, Any]:
            person = self._people[agent_id]
            extractor = self._require_tt().ResultsExtractor()
            answer: Any
            try:
                answer = extractor.extract_results_from_agent(
                    person,
                    extraction_objective=_EXTRACTION_OBJECTIVE,
                    situation=situation,
                    fields=[f.name for f in fields],
                    fields_hints=hints,
                    verbose=False,
                )
            except InvalidOutput as exc:
                answer = exc
            values, missing = answer_values(fields, answer)
            return build_row(
                agent=plan.agent(agent_id),
                name=person.name,
                world=step.world,
                persona=persona_of(person),
                interventions=plan.interventions,
                values=values,
                missing=missing,
            )

        return self._parallel(
            step.agents,
            row,
            lambda agent_id: CallContext(
                purpose=f"extract {agent_id}",
                seed_parts=(step.id, agent_id, "extract"),
                json_schema=schema,
                schema_name="extraction",
                max_tokens=max_answer_tokens(fields),
                temperature=0.0,
                agent=agent_id,
            ),
        )

    def _extract_overall(self, step: ExtractOverallStep) -> dict[str, Any]:
        """`ResultsExtractor.extract_results_from_world` over the world's participants."""
        self._ensure_worlds()
        fields = step.fields
        view = _WorldView(
            step.world, [self._people[agent_id] for agent_id in step.agents], self._require_tt()
        )

        def record(world: str) -> dict[str, Any]:
            extractor = self._require_tt().ResultsExtractor()
            answer: Any
            try:
                answer = extractor.extract_results_from_world(
                    view,
                    extraction_objective=_OVERALL_OBJECTIVE,
                    situation=self._world(world).context,
                    fields=[f.name for f in fields],
                    fields_hints={f.name: _field_hint(f) for f in fields},
                    verbose=False,
                )
            except InvalidOutput as exc:
                answer = exc
            return overall_record(step, answer)

        return self._parallel(
            [step.world],
            record,
            lambda world: CallContext(
                purpose=f"extract overall {world}",
                seed_parts=(step.id, world, "extract_overall"),
                json_schema=extraction_schema(fields),
                schema_name="extraction",
                max_tokens=max_answer_tokens(fields),
                temperature=0.0,
            ),
        )[0]

    # -- checkpoints --------------------------------------------------------------

    def _restore(self, state: dict[str, Any]) -> None:
        plan = self._require_plan()
        saved_agents: dict[str, Any] = state["agents"]
        self._reset()
        for agent in plan.agents:
            saved = saved_agents.get(agent.id)
            if saved is None:
                self._names[agent.id] = agent.id
                continue
            self._add(agent.id, self._new_person(saved["name"]))
            self._notes[agent.id] = list(saved["notes"])
            if saved["generated"]:
                self._generated.add(agent.id)
        # States saved before `vary` existed hold no proposals.
        self._varied = {k: dict(v) for k, v in state.get("varied", {}).items()}
        if state["worlds"] is not None:
            self._build_worlds()
            for name, clock in state["worlds"].items():
                self._worlds[name].current_datetime = datetime.fromisoformat(clock)
        for agent_id, saved in saved_agents.items():
            person = self._people[agent_id]
            person.decode_complete_state(copy.deepcopy(saved["state"]))
            person.reset_prompt()
            self._seen[agent_id] = len(person.episodic_memory.retrieve_all())
        self._seq = int(state["seq"])


class _WorldView:
    """A plan world's participants as the one world `extract_results_from_world` reads.

    The extractor needs only `name` and `pretty_current_interactions`, which
    TinyTroupe renders from `agents`. A survey or interview world is one
    `TinyWorld` per participant, and a focus-group room also holds the moderator
    (whose lines are in every participant's history already), so the view lists
    exactly the plan world's agents, in plan order, on every mode, and renders
    them with TinyTroupe's own `TinyWorld.pretty_current_interactions`.
    """

    def __init__(self, name: str, agents: list[Any], tt: Any) -> None:
        self.name = name
        self.agents = agents
        self._render = tt.TinyWorld.pretty_current_interactions

    def pretty_current_interactions(self, **options: Any) -> str:
        rendered: str = self._render(self, **options)
        return rendered


def _encode(person: Any) -> dict[str, Any]:
    state: dict[str, Any] = person.encode_complete_state()
    for key in _DERIVED_STATE:
        state.pop(key, None)
    return state


def _field_hint(field: FieldPlan) -> str:
    """A field's type in words, plus its description, for the extractor's `fields_hints`."""
    if field.kind in ("int", "float"):
        noun = "an integer" if field.kind == "int" else "a number"
        if field.low is not None and field.high is not None:
            kind = f"{noun} from {_number(field.low)} to {_number(field.high)}"
        else:
            kind = noun
    elif field.kind == "bool":
        kind = "true or false"
    elif field.kind == "enum":
        kind = "one of " + ", ".join(field.members)
    elif field.kind == "list":
        kind = "a list of short texts"
    elif field.kind == "rank":
        kind = rank_words(field)
    else:
        kind = "a short text"
    return f"{kind}. {field.description}" if field.description else kind


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)
