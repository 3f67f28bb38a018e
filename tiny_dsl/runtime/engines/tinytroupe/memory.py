"""The TinyTroupe engine's transcript: TinyTroupe's episodic memories read as events.

Events are read from the agents' episodic memories at deterministic points
(after each phase of a step, agents in plan order), so their order never
depends on which model call finished first.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tiny_dsl.runtime.engines.core import TranscriptEvent, iso_time
from tiny_dsl.runtime.engines.tinytroupe.worlds import TinyTroupeWorlds

__all__ = ["TinyTroupeMemory"]

# TinyTroupe's stimulus types as transcripts name them, where the built-in engine's differ.
_STIMULUS_TYPES = {"INTERNAL_GOAL_FORMULATION": "GOAL"}


class TinyTroupeMemory(TinyTroupeWorlds):
    """Records scripted lines and collects what agents remembered into `TranscriptEvent`s."""

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
        time = iso_time(datetime.fromisoformat(stamp)) if stamp else self._clock(agent_id)
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
                        type=_STIMULUS_TYPES.get(
                            str(stimulus.get("type")), str(stimulus.get("type"))
                        ),
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
