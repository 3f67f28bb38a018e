"""TinyTroupe for one engine: its process-wide globals, its threads, its person registry.

TinyTroupe's registries, configuration and client are process-wide, so engines
take turns: each step runs in a worker thread holding a process lock, with this
engine's agent and world registries, display flags, memory cut and log handler
swapped in (`_run`). The person registry maps agent ids to `TinyPerson`s and
names, and creates them: declared personas at setup, population members from
their generated personas.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import copy
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tiny_dsl.plan.model import GenerateStep, Plan, WorldPlan
from tiny_dsl.runtime.engines.core import EngineCore, ExternalReplies, NoExternalAgents
from tiny_dsl.runtime.engines.personas import keep_written_fields, unique_name
from tiny_dsl.runtime.engines.profile import MemoryWindow
from tiny_dsl.runtime.engines.tinytroupe.bridge import (
    FULL_ANSWER,
    AgentSettings,
    CallContext,
    CompletingClient,
    TinyDslClient,
    call_context,
)
from tiny_dsl.runtime.engines.tinytroupe.layout import Layout
from tiny_dsl.runtime.engines.tinytroupe.loader import API_TYPE, TinyTroupe
from tiny_dsl.runtime.quality import regenerate_note

__all__ = ["TinyTroupeSession", "install_bridge", "mergeable", "persona_of"]

T = TypeVar("T")

_SESSION_LOCK = threading.Lock()
_bridge: TinyDslClient | None = None
_BRIDGE_LOCK = threading.Lock()


class TinyTroupeSession(EngineCore):
    """The TinyTroupe engine's session and person registry (see the module docstring).

    The layers above add the worlds (`worlds`), the transcript (`memory`), the
    step handlers (`steps`) and the engine interface (`engine`).
    """

    def __init__(
        self,
        client: CompletingClient,
        *,
        memory: MemoryWindow | None = None,
        verbose: bool = False,
        log_dir: Path | None = None,
        max_threads: int = 64,
        externals: ExternalReplies | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        self._externals: ExternalReplies = externals or NoExternalAgents()
        self._memory = memory
        self._verbose = verbose
        self._log_dir = log_dir
        self._max_threads = max_threads
        self._tt: TinyTroupe | None = None
        self._plan: Plan | None = None
        # The agents with their own model or temperature, for the bridge (set by `setup`).
        self._agent_settings: dict[str, AgentSettings] = {}
        self._layout = Layout()
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
        # Member -> its values of its population's `vary` dimensions, once proposed.
        self._varied: dict[str, dict[str, str]] = {}
        self._worlds: dict[str, Any] = {}  # TinyWorld name -> TinyWorld, once built
        self._seen: dict[str, int] = {}  # agent id -> memory items already in the transcript
        self._seq = 0
        self._agent_registry.clear()
        self._world_registry.clear()
        self._pending_state: dict[str, Any] | None = None

    @abc.abstractmethod
    def _restore(self, state: dict[str, Any]) -> None:
        """Apply a saved state (`load_state`'s); runs in a step's session, before the step."""

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
        bridge = install_bridge(self._require_tt())
        with (
            _SESSION_LOCK,
            self._tinytroupe_globals(),
            bridge.attached(
                self._client,
                loop,
                seed=plan.settings.seed,
                temperature=plan.settings.temperature,
                agents=self._agent_settings,
                regenerate=plan.settings.regenerate,
            ) as calls,
        ):
            if self._pending_state is not None:
                state, self._pending_state = self._pending_state, None
                self._restore(state)
            result = work()
        self._notes_to_take.extend(
            f"{turns} agent turn{'' if turns == 1 else 's'} allowed {limits} "
            f"instead of {FULL_ANSWER}, to fit the model's context window"
            for limits, turns in sorted(calls.shortened.items(), reverse=True)
        )
        if calls.regenerated["asked again"]:
            self._notes_to_take.append(
                regenerate_note(
                    calls.regenerated["asked again"], calls.regenerated["still flagged"]
                )
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

    # -- the person registry --------------------------------------------------------

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
            if not agent.defined:
                self._names[agent.id] = agent.id  # until the `generate` step names it
                continue
            persona = copy.deepcopy(agent.persona or {})
            name = unique_name(str(persona.get("name") or agent.id), taken)
            taken.add(name.casefold())
            persona["name"] = name
            person = self._new_person(name)
            person.include_persona_definitions(persona)
            self._add(agent.id, person)

    def _create_members(self, step: GenerateStep, answers: list[dict[str, Any]]) -> None:
        plan = self._require_plan()
        # Settled in member order after all answers are in, so a clashing name's
        # suffix never depends on completion order (as in the built-in engine).
        taken = {
            self._names[agent.id].casefold()
            for agent in plan.agents
            if agent.defined or agent.id in self._generated
        }
        for agent_id, answer in zip(step.agents, answers, strict=True):
            agent = plan.agent(agent_id)
            if step.population is None:
                # A `generate` persona: the fields written are set over the answer.
                answer = keep_written_fields(answer, agent.persona or {})
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
                    mergeable(persona_of(person), fragment, notes, "")
                )
            for key, value in {**agent.attributes, **self._varied.get(agent_id, {})}.items():
                occupation = persona_of(person).get("occupation")
                if key == "occupation" and isinstance(occupation, dict):
                    person.define("occupation", {**occupation, "title": value})
                else:
                    person.define(key, value)
            self._add(agent_id, person)
            self._notes[agent_id] = notes
            self._generated.add(agent_id)

    # -- helpers ------------------------------------------------------------------

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


def install_bridge(tt: TinyTroupe) -> TinyDslClient:
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


def mergeable(
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
            kept[key] = mergeable(current, value, notes, where)
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


def persona_of(person: Any) -> dict[str, Any]:
    """The agent's persona; TinyTroupe keeps it in `_persona` with no public accessor."""
    persona: dict[str, Any] = copy.deepcopy(person._persona)
    return persona
