"""The TinyTroupe engine's worlds: built once every agent exists, and each agent's clock.

See "Worlds and clocks" in `engine`'s docstring for the layout (`layout`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tiny_dsl.runtime.engines.core import DEFAULT_START, iso_time
from tiny_dsl.runtime.engines.tinytroupe.layout import world_class_for
from tiny_dsl.runtime.engines.tinytroupe.session import TinyTroupeSession

__all__ = ["TinyTroupeWorlds"]


class TinyTroupeWorlds(TinyTroupeSession):
    """Builds the plan's `TinyWorld`s and finds an agent's stage and clock."""

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
        world_class = world_class_for(self._require_tt().TinyWorld)
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

    def _stage(self, world: str, agent_id: str) -> Any:
        return self._worlds[self._layout.stage[(world, agent_id)]]

    def _clock_world(self, agent_id: str) -> Any:
        return self._worlds[self._layout.home[agent_id]]

    def _clock(self, agent_id: str) -> str:
        if not self._worlds:
            return DEFAULT_START
        return iso_time(self._clock_world(agent_id).current_datetime)
