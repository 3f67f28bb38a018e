"""The hashes of a plan: of its sources, of its settings, and the chain over its steps.

Each step carries a chained hash so that a run can resume from the longest
unchanged prefix of a plan:

    base   = sha256(canonical(settings) + PROMPT_VERSION)
    hash_k = sha256(hash_{k-1} + canonical(content_k))

`content_k` is what makes step k behave as it does: its payload (the question,
the deliveries, the round...) and digests of the full definitions of the
agents, world, intervention or population it touches. It leaves out what does
not change behaviour: the step id (its ordinal moves when a step is inserted
earlier, which already changes the chain), the source origin (moving a
statement or adding a comment must not invalidate a cached run), the
estimates, and a run step's `of` (round 2 of a `run` behaves the same whether
the run was written with 2 or 3 rounds, so extending a run keeps its cached
rounds; the runtime must not show agents the total).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tiny_dsl.plan.model import (
    AgentPlan,
    AnalyzeStep,
    AskStep,
    BroadcastStep,
    ContextStep,
    ConverseStep,
    DeliverStep,
    ExternalAgentPlan,
    ExtractOverallStep,
    ExtractStep,
    GenerateStep,
    GoalStep,
    InterventionPlan,
    InterviewStep,
    PlanSettings,
    PopulationPlan,
    ProposeStep,
    RunStep,
    Step,
    TellStep,
    ThinkStep,
    WorldPlan,
)
from tiny_dsl.source import SourceFile

# Bumped by the runtime whenever its prompts change, so that cached steps
# produced with the old prompts are not reused.
PROMPT_VERSION = "3"

# Step fields that do not change what a step does (see the module docstring).
_UNHASHED = frozenset(
    {
        "id",
        "origin",
        "hash",
        "calls",
        "input_tokens",
        "output_tokens",
        "external_calls",
        "judge_calls",
        "of",
    }
)


# Settings the chain does not start from (see `base_hash`).
_RUN_SHAPE = frozenset({"replicates"})


def canonical_json(value: object) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def source_hash(sources: Mapping[str, SourceFile]) -> str:
    """sha256 over the sorted (path, sha256(text)) pairs of every source file."""
    return sha256(canonical_json(sorted((path, source.sha256) for path, source in sources.items())))


def base_hash(settings: PlanSettings) -> str:
    """The hash the step chain starts from: every setting (but `replicates`, which
    the replicates' steps stand for), and the prompt version."""
    return sha256(canonical_json(settings.hash_form(exclude=_RUN_SHAPE)) + PROMPT_VERSION)


def plan_hash(last: str, params: Mapping[str, object]) -> str:
    """The plan's hash: the last chained hash, and the params' values when there are
    any. A param changes the steps that use it (its value is substituted there); one
    no step uses still tells the runs apart, without invalidating any checkpoint."""
    if not params:
        return last
    return sha256(last + canonical_json({"params": dict(params)}))


def step_hash(previous: str, step: Step, uses: Mapping[str, str]) -> str:
    """The chained hash of `step` after the step whose hash is `previous`; `uses`
    are the digests of the definitions it touches (`Digests.dependencies`)."""
    payload = step.hash_form(exclude=_UNHASHED)
    if isinstance(step, AnalyzeStep):
        for analysis in payload["analyses"]:
            del analysis["origin"]
    return sha256(previous + canonical_json({"step": payload, "uses": dict(uses)}))


class Digests:
    """sha256 digests of the definitions steps depend on, each computed once.

    A plan's agents, worlds, interventions and populations are fixed before its
    steps are hashed; many steps touch the same world or agents, so digests are
    cached by definition.
    """

    def __init__(
        self,
        agents: Mapping[str, AgentPlan],
        worlds: Mapping[str, WorldPlan],
        interventions: Mapping[str, InterventionPlan],
        populations: Mapping[str, PopulationPlan],
        externals: Mapping[str, ExternalAgentPlan] | None = None,
    ) -> None:
        self.agents = agents
        self.worlds = worlds
        self.interventions = interventions
        self.populations = populations
        self.externals = externals or {}
        self._cache: dict[object, str] = {}

    def _digest(self, key: object, content: Any) -> str:
        """sha256 of a definition's canonical JSON."""
        digest = self._cache.get(key)
        if digest is None:
            digest = self._cache[key] = sha256(canonical_json(content))
        return digest

    def _agents(self, ids: Sequence[str]) -> str:
        key = ("agents", tuple(ids))
        digest = self._cache.get(key)
        if digest is None:
            parts = [
                agent_id
                + "="
                + self._digest(("agent", agent_id), self.agents[agent_id].hash_form())
                for agent_id in ids
            ]
            digest = self._cache[key] = sha256("\n".join(parts))
        return digest

    def _world(self, name: str) -> str:
        return self._digest(("world", name), self.worlds[name].hash_form())

    def _intervention(self, name: str) -> str:
        return self._digest(("intervention", name), self.interventions[name].hash_form())

    def _external(self, name: str) -> dict[str, str]:
        # How long to wait for the bot changes no answer it gives.
        external = self.externals[name].hash_form(exclude=frozenset({"timeout_s"}))
        return {"external": self._digest(("external", name), external)}

    def dependencies(self, step: Step) -> dict[str, str]:
        """Digests of the definitions a step touches, by role."""
        match step:
            case GenerateStep() if step.population is None:
                return {"agents": self._agents(step.agents)}
            case ProposeStep():
                population = self.populations[step.population]
                return {
                    "population": self._digest(
                        ("population", population.name), population.hash_form()
                    )
                }
            case GenerateStep():
                assert step.population is not None  # the personas' step is handled above
                population = self.populations[step.population]
                return {
                    "population": self._digest(
                        ("population", population.name), population.hash_form()
                    ),
                    "agents": self._agents(step.agents),
                }
            case BroadcastStep():
                listeners = self.worlds[step.world].agents
                speaker = [step.speaker] if step.speaker is not None else []
                return {
                    "world": self._world(step.world),
                    "agents": self._agents([*listeners, *speaker]),
                }
            case DeliverStep():
                return {
                    "world": self._world(step.world),
                    "intervention": self._intervention(step.intervention),
                    "agents": self._agents(self.worlds[step.world].agents),
                }
            case ExtractStep():
                # A group source depends on its members only, a world source on the world too.
                world = {} if step.world is None else {"world": self._world(step.world)}
                return {**world, "agents": self._agents(step.agents)}
            case AskStep() | RunStep() | ExtractOverallStep():
                return {"world": self._world(step.world), "agents": self._agents(step.agents)}
            case InterviewStep() if step.interviewer in self.externals:
                return {**self._external(step.interviewer), "agents": self._agents(step.agents)}
            case InterviewStep():
                return {"agents": self._agents([step.interviewer, *step.agents])}
            case ThinkStep() | TellStep() | GoalStep():
                return {"agents": self._agents(step.agents)}
            case ConverseStep() if step.partner in self.externals:
                return {**self._external(step.partner), "agents": self._agents(step.agents)}
            case ConverseStep():
                return {"agents": self._agents([step.partner, *step.agents])}
            case ContextStep():
                return {"world": self._world(step.world), "agents": self._agents(step.agents)}
            case AnalyzeStep():
                # Arms compared: the assignment is part of what the analysis reads.
                used = sorted(
                    {
                        a.by
                        for a in step.analyses
                        if a.kind == "compare" and a.by is not None and a.by in self.interventions
                    }
                )
                return {name: self._intervention(name) for name in used}
        return {}
