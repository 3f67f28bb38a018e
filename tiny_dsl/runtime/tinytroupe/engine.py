"""The TinyTroupe engine: plans run on Microsoft's TinyTroupe library itself.

The second implementation of `tiny_dsl.runtime.engine.Engine`. It builds real
`TinyPerson`s and `TinyWorld`s and drives them with TinyTroupe's own methods;
every model call TinyTroupe makes goes through our `LLMClient`
(`tiny_dsl.runtime.tinytroupe.bridge`). Semantics, transcript events and
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
    run (a round): `world.run(1, randomize_agents_order=False, parallelize=True)`.
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
    generate: see `_generate_requests`.
    extract: TinyTroupe's `ResultsExtractor` per agent, schema-constrained
        through the bridge, then re-validated field by field with
        `tiny_dsl.extraction` (a value that fails is missing, with the reason).

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
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from tiny_dsl.extraction import build_row, extraction_schema, validate_answer
from tiny_dsl.extraction.schema import max_answer_tokens
from tiny_dsl.plan.model import (
    AskStep,
    BroadcastStep,
    CheckpointStep,
    DeliverStep,
    ExtractStep,
    FieldPlan,
    GenerateStep,
    InterviewStep,
    Plan,
    RunStep,
    Step,
    ThinkStep,
    WaitStep,
    WorldPlan,
)
from tiny_dsl.runtime.builtin import EngineStateError
from tiny_dsl.runtime.builtin.engine import CHANNEL_FRAMES, persona_request
from tiny_dsl.runtime.builtin.personas import (
    unique_name,
)
from tiny_dsl.runtime.engine import TranscriptEvent
from tiny_dsl.runtime.providers.base import InvalidOutput
from tiny_dsl.runtime.tinytroupe.bridge import (
    FULL_ANSWER,
    CallContext,
    CompletingClient,
    TinyDslClient,
    call_context,
)
from tiny_dsl.runtime.tinytroupe.loader import (
    API_TYPE,
    CONFIG_INI,
    TinyTroupe,
    import_tinytroupe,
)

__all__ = ["COMPACT_MEMORY", "MemoryWindow", "TinyTroupeEngine"]

STATE_FORMAT = 1
# The clock of agents in no world when the plan has no world at all (as in the built-in engine).
_DEFAULT_START = "2025-01-01T09:00:00"
# Agent-state keys that are derived from the rest (the rendered system prompt, twice)
# or only feed the console display; dropped from checkpoints and rebuilt on load.
_DERIVED_STATE = (
    "current_messages",
    "_init_system_message",
    "_prompt_template_path",
    "_displayed_communications_buffer",
)
_EXTRACTION_OBJECTIVE = (
    "Fill in structured data about this person from what their interaction history shows. "
    "Use null for any field the history does not tell; never guess."
)

T = TypeVar("T")

_SESSION_LOCK = threading.Lock()
_bridge: TinyDslClient | None = None
_BRIDGE_LOCK = threading.Lock()


@dataclass(frozen=True)
class MemoryWindow:
    """How much episodic memory an agent's prompt shows (TinyTroupe's knobs).

    `fixed_prefix` and `lookback` are `EpisodicMemory`'s first and last items
    kept in the prompt; `item_chars` is TinyTroupe's `MAX_CONTENT_DISPLAY_LENGTH`,
    the cut applied to each remembered item (and to the history extraction reads).
    """

    fixed_prefix: int
    lookback: int
    item_chars: int


# TinyTroupe's agent prompt is about 5,600 tokens before any memory. With its default
# window (10 + 20 items of up to 4,000 characters) a focus group outgrows the embedded
# model's 8k context by the third round; this window keeps every turn inside it.
COMPACT_MEMORY = MemoryWindow(fixed_prefix=2, lookback=8, item_chars=240)


@dataclass(frozen=True)
class _Named:
    """A stimulus source that is not an agent (an intervention); TinyTroupe reads `.name`."""

    name: str


@dataclass
class _WorldSpec:
    name: str
    start: str
    members: list[str]
    room: bool  # a shared focus-group room (everyone accessible)


@dataclass
class _Layout:
    """Which `TinyWorld`s a plan needs; a pure function of the plan (see `_layout`)."""

    worlds: dict[str, _WorldSpec] = field(default_factory=dict)
    stage: dict[tuple[str, str], str] = field(default_factory=dict)  # (plan world, agent)
    home: dict[str, str] = field(default_factory=dict)  # agent -> TinyWorld with its clock
    home_world: dict[str, str | None] = field(default_factory=dict)  # agent -> plan world


class TinyTroupeEngine:
    """Runs plans on TinyTroupe (see the module docstring).

    `memory` narrows the agents' prompt memory (default: TinyTroupe's own
    window); `log_dir` receives TinyTroupe's log (`tinytroupe.log`, INFO) and
    the configuration it was imported with; `verbose` lets TinyTroupe print its
    conversation display; `max_threads` caps the threads acting at once (the
    `LLMClient` caps the model calls).
    """

    name = "tinytroupe"

    def __init__(
        self,
        client: CompletingClient,
        *,
        memory: MemoryWindow | None = None,
        verbose: bool = False,
        log_dir: Path | None = None,
        max_threads: int = 64,
    ) -> None:
        self._client = client
        self._memory = memory
        self._verbose = verbose
        self._log_dir = log_dir
        self._max_threads = max_threads
        self._tt: TinyTroupe | None = None
        self._plan: Plan | None = None
        self._layout = _Layout()
        # This engine's TinyTroupe registries (names -> agents, worlds), swapped in for
        # each step; cleared in place, never replaced, so a swap never goes stale.
        self._agent_registry: dict[str, Any] = {}
        self._world_registry: dict[str, Any] = {}
        self._notes_to_take: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self._people: dict[str, Any] = {}  # agent id -> TinyPerson
        self._names: dict[str, str] = {}  # agent id -> name (placeholder: the id)
        self._ids: dict[str, str] = {}  # name -> agent id
        self._notes: dict[str, list[str]] = {}
        self._generated: set[str] = set()
        self._worlds: dict[str, Any] = {}  # TinyWorld name -> TinyWorld, once built
        self._seen: dict[str, int] = {}  # agent id -> memory items already in the transcript
        self._seq = 0
        self._agent_registry.clear()
        self._world_registry.clear()
        self._pending_state: dict[str, Any] | None = None

    # -- Engine interface -----------------------------------------------------------

    async def setup(self, plan: Plan) -> None:
        self._tt = import_tinytroupe()
        self._plan = plan
        self._layout = _layout(plan)
        self._reset()
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            (self._log_dir / "tinytroupe.config.ini").write_text(CONFIG_INI, encoding="utf-8")
        await self._run(self._create_personas)

    async def execute(self, step: Step) -> list[TranscriptEvent]:
        events: list[TranscriptEvent]
        match step:
            case GenerateStep():
                await self._generate(step)
                events = []
            case BroadcastStep():
                events = await self._run(functools.partial(self._broadcast, step))
            case DeliverStep():
                events = await self._run(functools.partial(self._deliver, step))
            case AskStep():
                events = await self._run(functools.partial(self._ask, step))
            case RunStep():
                events = await self._run(
                    functools.partial(self._round, self._world(step.world), step.id, step.agents)
                )
            case WaitStep():
                events = await self._run(functools.partial(self._wait, step.seconds))
            case ThinkStep():
                events = await self._run(functools.partial(self._think, step))
            case InterviewStep():
                events = await self._run(functools.partial(self._interview, step))
            case CheckpointStep():
                events = []
            case _:
                raise TypeError(f"the TinyTroupe engine does not execute {step.kind} steps")
        for event in events:
            self._seq += 1
            event.seq = self._seq
        return events

    async def extract(self, step: ExtractStep) -> list[dict[str, Any]]:
        return await self._run(functools.partial(self._extract, step))

    def personas(self) -> dict[str, dict[str, Any]]:
        # Read from the checkpoint form, which also holds a restored state that
        # `load_state` has not applied yet (it rebuilds TinyPersons in the next step).
        plan = self._require_plan()
        return {
            agent_id: saved["state"]["_persona"]
            for agent_id, saved in self.dump_state()["agents"].items()
            if saved["generated"] or plan.agent(agent_id).kind == "persona"
        }

    def take_notes(self) -> list[str]:
        notes, self._notes_to_take = self._notes_to_take, []
        return notes

    def dump_state(self) -> dict[str, Any]:
        if self._pending_state is not None:
            return self._pending_state
        plan = self._require_plan()
        return {
            "engine": self.name,
            "format": STATE_FORMAT,
            "tinytroupe": self._require_tt().version,
            "seq": self._seq,
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
            "worlds": (
                {name: _iso(world.current_datetime) for name, world in self._worlds.items()}
                if self._worlds
                else None
            ),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Check `state` against the plan now; apply it before the next step runs.

        Rebuilding TinyTroupe objects needs the process lock, which must not be
        awaited on the event loop's thread, so it happens in the next step's
        worker thread.
        """
        plan = self._require_plan()
        if state.get("engine") != self.name or state.get("format") != STATE_FORMAT:
            raise EngineStateError(
                f"saved state is from engine {state.get('engine')!r} format "
                f"{state.get('format')!r}, not {self.name!r} format {STATE_FORMAT}"
            )
        agents = state["agents"]
        personas = {agent.id for agent in plan.agents if agent.kind == "persona"}
        if not personas <= set(agents) <= {agent.id for agent in plan.agents}:
            raise EngineStateError("saved state has different agents than the plan")
        worlds = state["worlds"]
        if worlds is not None and set(worlds) != set(self._layout.worlds):
            raise EngineStateError("saved state has different worlds than the plan")
        self._pending_state = state

    # -- running inside TinyTroupe -------------------------------------------------

    async def _run(self, work: Callable[[], T]) -> T:
        """Run `work` in a worker thread holding TinyTroupe for this engine.

        A fresh single-thread executor (not the loop's default one, which the
        embedded provider needs to load its model while we wait for it); it is
        not joined here, so a cancelled step can never block the loop.
        """
        loop = asyncio.get_running_loop()
        driver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinytroupe-step")
        try:
            return await loop.run_in_executor(driver, self._in_session, loop, work)
        finally:
            driver.shutdown(wait=False)

    def _in_session(self, loop: asyncio.AbstractEventLoop, work: Callable[[], T]) -> T:
        plan = self._require_plan()
        bridge = _install_bridge(self._require_tt())
        with (
            _SESSION_LOCK,
            self._tinytroupe_globals(),
            bridge.attached(
                self._client,
                loop,
                seed=plan.settings.seed,
                temperature=plan.settings.temperature,
            ) as shortened,
        ):
            if self._pending_state is not None:
                state, self._pending_state = self._pending_state, None
                self._restore(state)
            result = work()
        self._notes_to_take.extend(
            f"{turns} agent turn{'' if turns == 1 else 's'} allowed {limits} "
            f"instead of {FULL_ANSWER}, to fit the model's context window"
            for limits, turns in sorted(shortened.items(), reverse=True)
        )
        return result

    @contextlib.contextmanager
    def _tinytroupe_globals(self) -> Iterator[None]:
        """Swap this engine's registries, display flags, memory cut and log handler in."""
        tt = self._require_tt()
        person, world = tt.TinyPerson, tt.TinyWorld
        config = tt.package.config_manager
        saved = (
            person.all_agents,
            world.all_environments,
            person.communication_display,
            world.communication_display,
            config.get("max_content_display_length"),
        )
        person.all_agents, world.all_environments = self._agent_registry, self._world_registry
        person.communication_display = world.communication_display = self._verbose
        if self._memory is not None:
            _set_config(config, "max_content_display_length", self._memory.item_chars)
        handler: logging.Handler | None = None
        tt_logger = logging.getLogger("tinytroupe")
        if self._log_dir is not None:
            handler = logging.FileHandler(self._log_dir / "tinytroupe.log", encoding="utf-8")
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(threadName)s %(levelname)s %(message)s")
            )
            tt_logger.addHandler(handler)
        try:
            yield
        finally:
            if handler is not None:
                tt_logger.removeHandler(handler)
                handler.close()
            _set_config(config, "max_content_display_length", saved[4])
            (
                person.all_agents,
                world.all_environments,
                person.communication_display,
                world.communication_display,
            ) = saved[:4]

    def _parallel(
        self,
        items: list[str],
        work: Callable[[str], T],
        context: Callable[[str], CallContext],
    ) -> list[T]:
        """`work(item)` for every item on its own thread, results in input order.

        Each thread's model calls carry `context(item)`. Siblings of a failure run
        to completion (their answers land in the cache for the resumed run); the
        first failure in input order is raised, independent of timing.
        """
        if not items:
            return []

        def attributed(item: str) -> T:
            with call_context(context(item)):
                return work(item)

        workers = min(len(items), self._max_threads)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinytroupe-agent") as pool:
            futures = [pool.submit(attributed, item) for item in items]
        return [future.result() for future in futures]

    # -- agents and worlds --------------------------------------------------------

    def _new_person(self, name: str) -> Any:
        tt = self._require_tt()
        memory = None
        if self._memory is not None:
            memory = tt.EpisodicMemory(
                fixed_prefix_length=self._memory.fixed_prefix,
                lookback_length=self._memory.lookback,
            )
        return tt.TinyPerson(name, episodic_memory=memory)

    def _add(self, agent_id: str, person: Any) -> None:
        self._people[agent_id] = person
        self._names[agent_id] = person.name
        self._ids[person.name] = agent_id
        self._seen[agent_id] = len(person.episodic_memory.retrieve_all())

    def _create_personas(self) -> None:
        plan = self._require_plan()
        taken: set[str] = set()
        for agent in plan.agents:
            if agent.kind != "persona":
                self._names[agent.id] = agent.id  # until the `generate` step names it
                continue
            persona = copy.deepcopy(agent.persona or {})
            name = unique_name(str(persona.get("name") or agent.id), taken)
            taken.add(name.casefold())
            persona["name"] = name
            person = self._new_person(name)
            person.include_persona_definitions(persona)
            self._add(agent.id, person)

    def _ensure_worlds(self) -> None:
        """Build the `TinyWorld`s once every agent exists (after the `generate` steps)."""
        if self._worlds:
            return
        missing = [a for spec in self._layout.worlds.values() for a in spec.members]
        missing = [a for a in dict.fromkeys(missing) if a not in self._people]
        if missing:
            raise RuntimeError(
                f"agents {', '.join(missing[:3])} act before their population was generated"
            )
        self._build_worlds()

    def _build_worlds(self) -> None:
        plan = self._require_plan()
        world_class = _world_class(self._require_tt().TinyWorld)
        for name, spec in self._layout.worlds.items():
            world = world_class(
                name,
                [self._people[agent_id] for agent_id in spec.members],
                initial_datetime=datetime.fromisoformat(spec.start),
                interventions=[],
            )
            if spec.room:
                world.make_everyone_accessible()
            self._worlds[name] = world
        for plan_world in plan.worlds:
            if plan_world.mode == "interview" and plan_world.moderator:
                moderator = self._people[plan_world.moderator]
                for agent_id in plan_world.agents:
                    self._make_accessible(self._people[agent_id], moderator)
        for agent_id, home in self._layout.home.items():
            # `add_agent` made the last world an agent joined its environment; the
            # environment is the agent's clock, which is its first world's.
            self._people[agent_id].environment = self._worlds[home]

    @staticmethod
    def _make_accessible(person: Any, other: Any) -> None:
        if other is not person and other not in person.accessible_agents:
            person.make_agent_accessible(other)

    # -- steps ------------------------------------------------------------------

    async def _generate(self, step: GenerateStep) -> None:
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
        population = next(p for p in plan.populations if p.name == step.population)
        requests = [
            persona_request(
                plan,
                plan.agent(agent_id),
                population.demographics_description,
                population.context,
                step.id,
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

    def _create_members(self, step: GenerateStep, answers: list[dict[str, Any]]) -> None:
        plan = self._require_plan()
        # Settled in member order after all answers are in, so a clashing name's
        # suffix never depends on completion order (as in the built-in engine).
        taken = {
            self._names[agent.id].casefold()
            for agent in plan.agents
            if agent.kind == "persona" or agent.id in self._generated
        }
        for agent_id, answer in zip(step.agents, answers, strict=True):
            agent = plan.agent(agent_id)
            notes: list[str] = []
            generated = copy.deepcopy(answer)
            wanted = str(generated.get("name") or agent_id).strip() or agent_id
            name = unique_name(wanted, taken)
            if name != generated.get("name"):
                notes.append(f"renamed from {generated.get('name')!r} to {name!r} (name taken)")
            taken.add(name.casefold())
            generated["name"] = name
            person = self._new_person(name)
            person.include_persona_definitions(generated)
            for fragment in agent.fragments:
                person.include_persona_definitions(
                    _mergeable(_persona(person), fragment, notes, "")
                )
            for key, value in agent.attributes.items():
                occupation = _persona(person).get("occupation")
                if key == "occupation" and isinstance(occupation, dict):
                    person.define("occupation", {**occupation, "title": value})
                else:
                    person.define(key, value)
            self._add(agent_id, person)
            self._notes[agent_id] = notes
            self._generated.add(agent_id)

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
            frame = CHANNEL_FRAMES.get(
                delivery.channel, f"You receive a message ({delivery.channel})"
            )
            content = f'[{delivery.channel}] {frame}: "{delivery.content}"'
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
        """One round: everyone acts on the same state, then speech is handled."""
        self._ensure_worlds()
        if world.mode == "focus_group":
            return self._room_round(world, step_id, agent_ids)
        return self._isolated_round(world, step_id, agent_ids)

    def _room_round(
        self, world: WorldPlan, step_id: str, agent_ids: list[str]
    ) -> list[TranscriptEvent]:
        room = self._worlds[world.name]
        members = self._layout.worlds[world.name].members
        present = set(members)
        events: list[TranscriptEvent] = []

        def parallel_step() -> dict[str, Any]:
            targets = {
                agent_id: tuple(self._names[other] for other in members if other != agent_id)
                for agent_id in agent_ids
            }
            turns = self._parallel(
                agent_ids,
                lambda agent_id: self._people[agent_id].act(return_actions=True),
                functools.partial(_act_context, step_id, targets),
            )
            events.extend(self._collect(agent_ids, world.name, step_id, present=present))
            actions: dict[str, Any] = {}
            for agent_id, turn in zip(agent_ids, turns, strict=True):
                person = self._people[agent_id]
                actions[person.name] = turn
                latest = person.pop_latest_actions()
                addressed = self._talk_targets(latest, present)
                room._handle_actions(person, latest)
                events.extend(self._collect(members, world.name, step_id, addressed=addressed))
            return actions

        room.tiny_dsl_step = parallel_step
        try:
            room.run(1, randomize_agents_order=False, parallelize=True)
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

    def _extract(self, step: ExtractStep) -> list[dict[str, Any]]:
        self._ensure_worlds()
        plan = self._require_plan()
        world = self._world(step.world)
        fields = step.fields
        schema = extraction_schema(fields)
        hints = {f.name: _field_hint(f) for f in fields}

        def row(agent_id: str) -> dict[str, Any]:
            person = self._people[agent_id]
            extractor = self._require_tt().ResultsExtractor()
            values: dict[str, Any]
            missing: dict[str, str]
            try:
                answer = extractor.extract_results_from_agent(
                    person,
                    extraction_objective=_EXTRACTION_OBJECTIVE,
                    situation=world.context,
                    fields=[f.name for f in fields],
                    fields_hints=hints,
                    verbose=False,
                )
            except InvalidOutput as exc:
                reason = f"the model's answer did not match the schema: {exc}"
                values = {f.name: None for f in fields}
                missing = {f.name: reason for f in fields}
            else:
                values, missing = validate_answer(fields, answer)
            return build_row(
                agent=plan.agent(agent_id),
                name=person.name,
                world=step.world,
                persona=_persona(person),
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
            ),
        )

    # -- transcript ---------------------------------------------------------------

    def _say(self, agent_id: str, text: str, *, target: str | None) -> None:
        """Record a scripted line (a moderator's or interviewer's) as the agent's TALK.

        Stored exactly as `act()` stores an action, so the agent's memory (its
        prompt, extraction, the transcript) reads as if it had said it.
        """
        person = self._people[agent_id]
        person.store_in_memory(
            {
                "role": "assistant",
                "content": {"action": {"type": "TALK", "content": text, "target": target or ""}},
                "type": "action",
                "simulation_timestamp": person.iso_datetime(),
            }
        )

    def _collect(
        self,
        agent_ids: list[str],
        world: str | None,
        step_id: str,
        *,
        addressed: set[str] | None = None,
        present: set[str] | None = None,
        until: int | None = None,
    ) -> list[TranscriptEvent]:
        """Events for what the agents remembered since the last collection, agent by agent.

        Speech an agent heard is addressed to it (`target` is the listener) when
        the agent is in `addressed`; an action's target resolves to an agent
        only among `present` (whom TinyTroupe could deliver it to). `until`
        stops at that memory index (one agent only).
        """
        events: list[TranscriptEvent] = []
        for agent_id in agent_ids:
            items = self._people[agent_id].episodic_memory.retrieve_all()
            end = len(items) if until is None else until
            start, self._seen[agent_id] = self._seen[agent_id], end
            for item in items[start:end]:
                events += self._events(
                    agent_id,
                    item,
                    world,
                    step_id,
                    addressed=agent_id in (addressed or set()),
                    present=present or set(),
                )
        return events

    def _events(
        self,
        agent_id: str,
        item: Mapping[str, Any],
        world: str | None,
        step_id: str,
        *,
        addressed: bool,
        present: set[str],
    ) -> list[TranscriptEvent]:
        name = self._names[agent_id]
        stamp = item.get("simulation_timestamp")
        time = _iso(datetime.fromisoformat(stamp)) if stamp else self._clock(agent_id)
        content: Mapping[str, Any] = item.get("content") or {}
        event = functools.partial(
            TranscriptEvent, seq=0, step=step_id, world=world, agent=agent_id, agent_name=name
        )
        if item.get("type") == "stimulus":
            events = []
            for stimulus in content.get("stimuli", []):
                source, source_name = self._source(agent_id, str(stimulus.get("source") or ""))
                heard = addressed and stimulus.get("type") == "CONVERSATION"
                events.append(
                    event(
                        kind="stimulus",
                        type=str(stimulus.get("type")),
                        content=str(stimulus.get("content") or ""),
                        time=time,
                        source=source,
                        source_name=source_name,
                        target=agent_id if heard else None,
                        target_name=name if heard else None,
                    )
                )
            return events
        if item.get("type") == "action":
            action: Mapping[str, Any] = content.get("action") or {}
            target = self._ids.get(str(action.get("target") or "").strip())
            if target not in present:
                target = None
            return [
                event(
                    kind="action",
                    type=str(action.get("type")),
                    content=str(action.get("content") or ""),
                    time=time,
                    target=target,
                    target_name=self._names[target] if target else None,
                )
            ]
        return []  # TinyTroupe's system feedback (e.g. "action too repetitive")

    def _source(self, agent_id: str, source_name: str) -> tuple[str | None, str | None]:
        if not source_name or source_name == self._names[agent_id]:
            return None, None  # the world, or the agent itself (a thought)
        source = self._ids.get(source_name)
        if source is None:
            return source_name, None  # an intervention
        return source, source_name

    def _talk_targets(self, actions: list[dict[str, Any]], present: set[str]) -> set[str]:
        """Agents present that the TALK actions name (exactly, as TinyTroupe delivers)."""
        targets = set()
        for action in actions:
            if action.get("type") == "TALK":
                target = self._ids.get(str(action.get("target") or "").strip())
                if target in present:
                    targets.add(target)
        return targets

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

    # -- helpers ------------------------------------------------------------------

    def _stage(self, world: str, agent_id: str) -> Any:
        return self._worlds[self._layout.stage[(world, agent_id)]]

    def _clock_world(self, agent_id: str) -> Any:
        return self._worlds[self._layout.home[agent_id]]

    def _clock(self, agent_id: str) -> str:
        if not self._worlds:
            return _DEFAULT_START
        return _iso(self._clock_world(agent_id).current_datetime)

    def _world(self, name: str) -> WorldPlan:
        return self._require_plan().world(name)

    def _require_plan(self) -> Plan:
        if self._plan is None:
            raise RuntimeError("TinyTroupeEngine.setup(plan) must be called first")
        return self._plan

    def _require_tt(self) -> TinyTroupe:
        if self._tt is None:
            raise RuntimeError("TinyTroupeEngine.setup(plan) must be called first")
        return self._tt


def _layout(plan: Plan) -> _Layout:
    """The `TinyWorld`s for `plan` (see "Worlds and clocks" in the module docstring).

    Shared rooms are named after the plan world; an isolated participant's world
    is `world/agent`, an agent in no world gets `/agent`. Plan world names carry
    no `/`, so the names never clash.
    """
    layout = _Layout()
    starts = [world.start for world in plan.worlds]
    default_start = min(starts, key=datetime.fromisoformat) if starts else _DEFAULT_START
    for world in plan.worlds:
        present = list(world.agents)
        if world.moderator and world.moderator not in present:
            present.append(world.moderator)
        if world.mode == "focus_group":
            layout.worlds[world.name] = _WorldSpec(world.name, world.start, present, room=True)
            for agent_id in present:
                layout.stage[(world.name, agent_id)] = world.name
        else:
            for agent_id in present:
                name = f"{world.name}/{agent_id}"
                layout.worlds[name] = _WorldSpec(name, world.start, [agent_id], room=False)
                layout.stage[(world.name, agent_id)] = name
        for agent_id in present:
            layout.home.setdefault(agent_id, layout.stage[(world.name, agent_id)])
            layout.home_world.setdefault(agent_id, world.name)
    for agent in plan.agents:
        if agent.id not in layout.home:
            name = f"/{agent.id}"
            layout.worlds[name] = _WorldSpec(name, default_start, [agent.id], room=False)
            layout.home[agent.id] = name
            layout.home_world[agent.id] = None
    return layout


@functools.cache
def _world_class(base: type) -> type:
    """`TinyWorld` whose parallel step is the engine's while it runs a round.

    TinyTroupe's `_step_in_parallel` makes every agent act, logs and swallows an
    agent's exception, and uses a default-sized thread pool; the engine's step
    (`tiny_dsl_step`, set only while `run` is on) leaves out the moderator,
    raises failures and acts on its own threads. Everything else in `run`
    (clock, interventions, action handling) is TinyTroupe's.
    """

    class TinyDslWorld(base):
        def _step_in_parallel(self, timedelta_per_step: Any = None) -> Any:
            step = self.__dict__.get("tiny_dsl_step")
            if step is None:
                return super()._step_in_parallel(timedelta_per_step=timedelta_per_step)
            return step()

    return TinyDslWorld


def _install_bridge(tt: TinyTroupe) -> TinyDslClient:
    """Register our client in TinyTroupe's client registry, once per process."""
    global _bridge
    with _BRIDGE_LOCK:
        if _bridge is None:
            _bridge = TinyDslClient(tt.utils.dedent)
            tt.clients.register_client(API_TYPE, _bridge)
            tt.clients.force_api_type(API_TYPE)
        return _bridge


def _set_config(config: Any, key: str, value: Any) -> None:
    """Set a TinyTroupe setting read at call time.

    Written to the manager's table directly: `ConfigManager.update` also logs
    every change through the *root* logger, which is the host's.
    """
    config._config[key] = value


def _act_context(
    step_id: str, targets: Mapping[str, tuple[str, ...]], agent_id: str
) -> CallContext:
    """An agent's turn: its calls' seeds and whom its TALK may address."""
    return CallContext(
        purpose=f"act {agent_id}", seed_parts=(step_id, agent_id), targets=targets[agent_id]
    )


def _mergeable(
    base: Mapping[str, Any], fragment: Mapping[str, Any], notes: list[str], path: str
) -> dict[str, Any]:
    """The part of `fragment` TinyTroupe can merge into `base` without raising.

    `include_persona_definitions` raises on a scalar that differs from a set
    one, or on a type mismatch. A fragment is advice to the generator, not a
    contradiction to abort the run on, so (as in the built-in engine) the
    generated value is kept and a note says what was dropped.
    """
    kept: dict[str, Any] = {}
    for key, value in fragment.items():
        where = f"{path}.{key}" if path else key
        current = base.get(key)
        if current is None:
            kept[key] = copy.deepcopy(value)
        elif isinstance(current, dict) and isinstance(value, Mapping):
            kept[key] = _mergeable(current, value, notes, where)
        elif isinstance(current, list) and isinstance(value, list):
            kept[key] = copy.deepcopy(value)
        elif type(current) is type(value) and current == value:
            continue
        else:
            notes.append(
                f"fragment value for {where} ({json.dumps(value, ensure_ascii=False)}) "
                f"conflicts with the generated {json.dumps(current, ensure_ascii=False)}; "
                "kept the generated one"
            )
    return kept


def _persona(person: Any) -> dict[str, Any]:
    """The agent's persona; TinyTroupe keeps it in `_persona` with no public accessor."""
    persona: dict[str, Any] = copy.deepcopy(person._persona)
    return persona


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
    else:
        kind = "a short text"
    return f"{kind}. {field.description}" if field.description else kind


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
