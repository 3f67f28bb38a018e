"""Which `TinyWorld`s a plan needs, and the `TinyWorld` subclass the engine runs them as.

Pure functions of the plan and of TinyTroupe's `TinyWorld` class; building the
worlds is `worlds.TinyTroupeWorlds`'s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tiny_dsl.plan.model import Plan
from tiny_dsl.runtime.engines.core import DEFAULT_START

__all__ = ["Layout", "WorldSpec", "plan_layout", "world_class_for"]


@dataclass
class WorldSpec:
    name: str
    start: str
    members: list[str]
    room: bool  # a shared focus-group room (everyone accessible)


@dataclass
class Layout:
    """Which `TinyWorld`s a plan needs; a pure function of the plan (see `plan_layout`)."""

    worlds: dict[str, WorldSpec] = field(default_factory=dict)
    stage: dict[tuple[str, str], str] = field(default_factory=dict)  # (plan world, agent)
    home: dict[str, str] = field(default_factory=dict)  # agent -> TinyWorld with its clock
    home_world: dict[str, str | None] = field(default_factory=dict)  # agent -> plan world


def plan_layout(plan: Plan) -> Layout:
    """The `TinyWorld`s for `plan` (see "Worlds and clocks" in the module docstring).

    Shared rooms are named after the plan world; an isolated participant's world
    is `world/agent`, an agent in no world gets `/agent`. Plan world names carry
    no `/`, so the names never clash.
    """
    layout = Layout()
    starts = [world.start for world in plan.worlds]
    default_start = min(starts, key=datetime.fromisoformat) if starts else DEFAULT_START
    for world in plan.worlds:
        present = list(world.agents)
        if world.moderator and world.moderator not in present:
            present.append(world.moderator)
        if world.mode == "focus_group":
            layout.worlds[world.name] = WorldSpec(world.name, world.start, present, room=True)
            for agent_id in present:
                layout.stage[(world.name, agent_id)] = world.name
        else:
            for agent_id in present:
                name = f"{world.name}/{agent_id}"
                layout.worlds[name] = WorldSpec(name, world.start, [agent_id], room=False)
                layout.stage[(world.name, agent_id)] = name
        for agent_id in present:
            layout.home.setdefault(agent_id, layout.stage[(world.name, agent_id)])
            layout.home_world.setdefault(agent_id, world.name)
    for agent in plan.agents:
        if agent.id not in layout.home:
            name = f"/{agent.id}"
            layout.worlds[name] = WorldSpec(name, default_start, [agent.id], room=False)
            layout.home[agent.id] = name
            layout.home_world[agent.id] = None
    return layout


@functools.cache
def world_class_for(base: type) -> type:
    """`TinyWorld` whose parallel and sequential steps are the engine's while it runs a round.

    TinyTroupe's `_step_in_parallel` makes every agent act, logs and swallows an
    agent's exception, and uses a default-sized thread pool; the engine's step
    (`tiny_dsl_step`, set only while `run` is on) leaves out the moderator,
    raises failures and acts on its own threads. `_step_sequentially` (a world
    with `turns sequential`) would also make the moderator act; the engine's
    step leaves it out and keeps the agents' order. Everything else in `run`
    (clock, interventions, action handling) is TinyTroupe's.
    """

    class TinyDslWorld(base):
        def _step_in_parallel(self, timedelta_per_step: Any = None) -> Any:
            step = self.__dict__.get("tiny_dsl_step")
            if step is None:
                return super()._step_in_parallel(timedelta_per_step=timedelta_per_step)
            return step()

        def _step_sequentially(
            self, timedelta_per_step: Any = None, randomize_agents_order: bool = True
        ) -> Any:
            step = self.__dict__.get("tiny_dsl_step")
            if step is None:
                return super()._step_sequentially(
                    timedelta_per_step=timedelta_per_step,
                    randomize_agents_order=randomize_agents_order,
                )
            return step()

    return TinyDslWorld
