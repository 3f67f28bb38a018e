"""Lowering a checked `Program` to an execution `Plan`.

`compile_plan` is pure and byte-for-byte deterministic: every random choice
(member attributes, A/B assignment) comes from generators seeded with sha256 of
the scenario seed and a name, declarations are ordered by where they are
written, never by set or hash order, and the plan's JSON is the same under any
PYTHONHASHSEED.

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
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import tiny_dsl
from tiny_dsl.checks.model import (
    TIMING_HOURS,
    Extraction,
    GroupRef,
    Intervention,
    Persona,
    Population,
    Program,
    World,
)
from tiny_dsl.diagnostics import Diagnostic
from tiny_dsl.plan.estimate import (
    budget_diagnostics,
    call_limit_diagnostics,
    estimate_steps,
    model_name,
    price_for,
)
from tiny_dsl.plan.estimate import cost as tokens_cost
from tiny_dsl.plan.model import (
    AgentPlan,
    AnalysisPlan,
    AnalyzeStep,
    AskStep,
    BroadcastStep,
    CheckpointStep,
    DeliverStep,
    Delivery,
    Estimate,
    ExtractStep,
    FieldPlan,
    GenerateStep,
    InterventionPlan,
    InterviewStep,
    Origin,
    OutputPlan,
    Plan,
    PlanSettings,
    PopulationPlan,
    RunStep,
    Step,
    ThinkStep,
    VariantPlan,
    WaitStep,
    WorldPlan,
)
from tiny_dsl.plan.sampling import MemberSampler, assign_arms, member_rng
from tiny_dsl.source import SourceFile, Span
from tiny_dsl.syntax import ast

# Bumped by the runtime whenever its prompts change, so that cached steps
# produced with the old prompts are not reused.
PROMPT_VERSION = "1"

# Step fields that do not change what a step does (see the module docstring).
_UNHASHED = frozenset({"id", "origin", "hash", "calls", "input_tokens", "output_tokens", "of"})


def canonical_json(value: object) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def source_hash(sources: Mapping[str, SourceFile]) -> str:
    """sha256 over the sorted (path, sha256(text)) pairs of every source file."""
    return _sha256(
        canonical_json(sorted((path, source.sha256) for path, source in sources.items()))
    )


def base_hash(settings: PlanSettings) -> str:
    """The hash the step chain starts from: every setting, and the prompt version."""
    return _sha256(canonical_json(settings.model_dump(mode="json")) + PROMPT_VERSION)


def compile_plan(program: Program) -> Plan:
    """The execution plan of a checked program."""
    return _Compiler(program).compile()


class _Declared(Protocol):
    @property
    def span(self) -> Span: ...


_D = TypeVar("_D", bound=_Declared)


def _in_declaration_order(declarations: Iterable[_D]) -> list[_D]:
    """Declarations ordered by where they are written (file, then offset), so the plan
    does not depend on the order in which the checker happened to collect them."""
    return sorted(declarations, key=lambda d: (d.span.file, d.span.start))


def _jsonable(value: Any) -> Any:
    """A JSON value with lists for tuples, so a plan equals itself after a JSON round trip."""
    return json.loads(json.dumps(value, ensure_ascii=False))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class _Compiler:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.seed = program.settings.seed
        self.members: dict[str, list[AgentPlan]] = {}
        self.segment_members: dict[tuple[str, str], list[str]] = {}
        self._digests: dict[object, str] = {}

    # -------------------------------------------------------------- agents

    def _used(self) -> tuple[list[Persona], list[Population]]:
        """Personas and populations that a world, an intervention or a step refers to."""
        program = self.program
        refs: list[GroupRef] = []
        persona_names: set[str] = set()
        for world in program.worlds.values():
            refs.extend(world.agents)
            if world.moderator is not None:
                persona_names.add(world.moderator)
        for intervention in program.interventions.values():
            refs.extend(intervention.targets)
        for step in program.timeline:
            if isinstance(step, ast.InterviewStep):
                refs.extend(self._group(step.group))
                persona_names.add(step.interviewer.name)
            elif isinstance(step, ast.ThinkStep):
                refs.append(self._named_group(step.persona.name))
        persona_names.update(ref.name for ref in refs if ref.kind == "persona")
        population_names = {ref.name for ref in refs if ref.kind != "persona"}
        personas = [program.personas[name] for name in persona_names]
        populations = [program.populations[name] for name in population_names]
        return _in_declaration_order(personas), _in_declaration_order(populations)

    def _named_group(self, name: str) -> GroupRef:
        """`think NAME`: a persona, or a whole population."""
        if name in self.program.personas:
            return GroupRef("persona", name)
        return GroupRef("population", name)

    def _group(self, refs: Sequence[ast.Ref]) -> list[GroupRef]:
        """An interview's group, written as references: `lisa`, `users`, `users.power`."""
        group = []
        for ref in refs:
            if len(ref.parts) == 2:
                group.append(GroupRef("segment", ref.parts[0], ref.parts[1], ref.span))
            else:
                group.append(self._named_group(ref.parts[0]))
        return group

    def _expand(self, refs: Iterable[GroupRef]) -> list[str]:
        """Agent ids of a group, in the order written, each once."""
        ids: dict[str, None] = {}
        for ref in refs:
            if ref.kind == "persona":
                ids[ref.name] = None
            elif ref.kind == "population":
                ids.update(dict.fromkeys(member.id for member in self.members[ref.name]))
            else:
                assert ref.segment is not None
                ids.update(dict.fromkeys(self.segment_members[(ref.name, ref.segment)]))
        return list(ids)

    @staticmethod
    def _persona_agent(persona: Persona) -> AgentPlan:
        return AgentPlan(
            id=persona.name,
            kind="persona",
            persona=_jsonable(persona.spec),
            fragment_names=list(persona.fragments),
        )

    def _sample(self, population: Population) -> None:
        """Members of a population, segment by segment in declaration order."""
        program = self.program
        demographics = program.demographics[population.demographics]
        width = max(3, len(str(population.size)))
        members: list[AgentPlan] = []
        for segment in population.segments:
            sampler = MemberSampler(demographics, segment.constraints)
            fragments = [_jsonable(program.fragments[name].spec) for name in segment.fragments]
            ids = self.segment_members[(population.name, segment.name)] = []
            for _ in range(segment.size):
                index = len(members) + 1
                member = AgentPlan(
                    id=f"{population.name}/{index:0{width}d}",
                    kind="member",
                    population=population.name,
                    segment=segment.name,
                    index=index,
                    attributes=sampler.sample(member_rng(self.seed, population.name, index)),
                    particularities=segment.particularities,
                    fragments=fragments,
                    fragment_names=list(segment.fragments),
                )
                members.append(member)
                ids.append(member.id)
        self.members[population.name] = members

    # ---------------------------------------------------- worlds, interventions

    def _population(self, population: Population) -> PopulationPlan:
        return PopulationPlan(
            name=population.name,
            demographics=population.demographics,
            demographics_description=self.program.demographics[population.demographics].description,
            size=population.size,
            segments={segment.name: segment.size for segment in population.segments},
            context=population.context,
            members=[member.id for member in self.members[population.name]],
        )

    def _world(self, world: World) -> WorldPlan:
        return WorldPlan(
            name=world.name,
            mode=world.mode,
            agents=self._expand(world.agents),
            moderator=world.moderator,
            context=world.context,
            start=_iso(world.start),
        )

    def _intervention(
        self, intervention: Intervention, agents: Mapping[str, AgentPlan]
    ) -> InterventionPlan:
        targets = self._expand(intervention.targets)
        if intervention.assign == "stratified":
            strata = [_stratum(agents[target]) for target in targets]
        else:
            strata = [""] * len(targets)
        assignment = assign_arms(
            self.seed,
            intervention.name,
            targets,
            strata,
            intervention.control,
            [variant.name for variant in intervention.variants],
        )
        return InterventionPlan(
            name=intervention.name,
            channel=intervention.channel,
            control=intervention.control,
            assign=intervention.assign,
            variants=[
                VariantPlan(name=variant.name, content=variant.content, timing=variant.timing)
                for variant in intervention.variants
            ],
            targets=targets,
            assignment=assignment,
        )

    # ----------------------------------------------------------------- steps

    def _timeline(
        self,
        worlds: Mapping[str, WorldPlan],
        interventions: Mapping[str, InterventionPlan],
    ) -> list[tuple[str, Step]]:
        """The timeline's steps as (subject, step), ids still to be numbered."""
        program = self.program
        drafts: list[tuple[str, Step]] = []
        elapsed = timedelta()
        for statement in program.timeline:
            origin = Origin.of(statement.span)
            match statement:
                case ast.BroadcastStep(world=world, text=text):
                    step: Step = BroadcastStep(
                        id="",
                        origin=origin,
                        world=world.name,
                        text=text.value,
                        speaker=worlds[world.name].moderator,
                    )
                    drafts.append((world.name, step))
                case ast.DeliverStep(intervention=intervention, world=world):
                    now = program.worlds[world.name].start + elapsed
                    step = self._deliver(origin, interventions[intervention.name], world.name, now)
                    drafts.append((intervention.name, step))
                case ast.AskStep(world=world, text=text):
                    step = AskStep(
                        id="",
                        origin=origin,
                        world=world.name,
                        question=text.value,
                        agents=worlds[world.name].agents,
                    )
                    drafts.append((world.name, step))
                case ast.RunStep(world=world, rounds=rounds):
                    count = int(rounds.value)
                    for number in range(1, count + 1):
                        step = RunStep(
                            id="",
                            origin=origin,
                            world=world.name,
                            round=number,
                            of=count,
                            agents=worlds[world.name].agents,
                        )
                        drafts.append((f"{world.name}-r{number}", step))
                case ast.WaitStep(duration=duration):
                    elapsed += timedelta(seconds=duration.seconds)
                    written = f"{duration.amount.raw} {duration.unit}"
                    step = WaitStep(id="", origin=origin, seconds=duration.seconds, text=written)
                    drafts.append((written.replace(" ", "-"), step))
                case ast.InterviewStep(group=group, interviewer=interviewer, questions=questions):
                    step = InterviewStep(
                        id="",
                        origin=origin,
                        interviewer=interviewer.name,
                        agents=self._expand(self._group(group)),
                        questions=[question.value for question in questions],
                    )
                    drafts.append(("+".join(ref.dotted for ref in group), step))
                case ast.ThinkStep(persona=persona, text=text):
                    agents = self._expand([self._named_group(persona.name)])
                    step = ThinkStep(id="", origin=origin, agents=agents, text=text.value)
                    drafts.append((persona.name, step))
                case ast.CheckpointStep(name=name):
                    step = CheckpointStep(id="", origin=origin, name=name.name)
                    drafts.append((name.name, step))
        return drafts

    @staticmethod
    def _deliver(
        origin: Origin, intervention: InterventionPlan, world: str, now: datetime
    ) -> DeliverStep:
        """Each treated target's variant at the variant's time on the current simulated day."""
        variants = {variant.name: variant for variant in intervention.variants}
        deliveries: list[Delivery] = []
        control: list[str] = []
        for agent in intervention.targets:
            arm = intervention.assignment[agent]
            if arm == "control":
                control.append(agent)
                continue
            variant = variants[arm]
            deliveries.append(
                Delivery(
                    agent=agent,
                    variant=arm,
                    content=variant.content,
                    channel=intervention.channel,
                    time=_iso(_at(now, variant.timing)),
                )
            )
        return DeliverStep(
            id="",
            origin=origin,
            intervention=intervention.name,
            world=world,
            deliveries=deliveries,
            control=control,
        )

    @staticmethod
    def _extract(extraction: Extraction, world: WorldPlan) -> ExtractStep:
        return ExtractStep(
            id="",
            origin=Origin.of(extraction.span),
            world=extraction.world,
            agents=world.agents,
            fields=[
                FieldPlan(
                    name=spec.name,
                    kind=spec.kind,
                    description=spec.description,
                    low=spec.low,
                    high=spec.high,
                    members=list(spec.members),
                )
                for spec in extraction.fields
            ],
        )

    # ----------------------------------------------------------------- hashes

    def _digest(self, key: object, content: Any) -> str:
        """sha256 of a definition's canonical JSON, computed once per definition."""
        digest = self._digests.get(key)
        if digest is None:
            digest = self._digests[key] = _sha256(canonical_json(content))
        return digest

    def _agents_digest(self, ids: Sequence[str], agents: Mapping[str, AgentPlan]) -> str:
        key = ("agents", tuple(ids))
        digest = self._digests.get(key)
        if digest is None:
            parts = [
                agent_id
                + "="
                + self._digest(("agent", agent_id), agents[agent_id].model_dump(mode="json"))
                for agent_id in ids
            ]
            digest = self._digests[key] = _sha256("\n".join(parts))
        return digest

    def _dependencies(
        self,
        step: Step,
        agents: Mapping[str, AgentPlan],
        worlds: Mapping[str, WorldPlan],
        interventions: Mapping[str, InterventionPlan],
        populations: Mapping[str, PopulationPlan],
    ) -> dict[str, str]:
        """Digests of the definitions a step touches, by role."""

        def world(name: str) -> str:
            return self._digest(("world", name), worlds[name].model_dump(mode="json"))

        def intervention(name: str) -> str:
            return self._digest(("intervention", name), interventions[name].model_dump(mode="json"))

        match step:
            case GenerateStep():
                population = populations[step.population]
                return {
                    "population": self._digest(
                        ("population", population.name), population.model_dump(mode="json")
                    ),
                    "agents": self._agents_digest(step.agents, agents),
                }
            case BroadcastStep():
                listeners = worlds[step.world].agents
                speaker = [step.speaker] if step.speaker is not None else []
                return {
                    "world": world(step.world),
                    "agents": self._agents_digest([*listeners, *speaker], agents),
                }
            case DeliverStep():
                return {
                    "world": world(step.world),
                    "intervention": intervention(step.intervention),
                    "agents": self._agents_digest(worlds[step.world].agents, agents),
                }
            case AskStep() | RunStep() | ExtractStep():
                return {
                    "world": world(step.world),
                    "agents": self._agents_digest(step.agents, agents),
                }
            case InterviewStep():
                return {"agents": self._agents_digest([step.interviewer, *step.agents], agents)}
            case ThinkStep():
                return {"agents": self._agents_digest(step.agents, agents)}
            case AnalyzeStep():
                used = sorted({a.by for a in step.analyses if a.kind == "compare" and a.by})
                return {name: intervention(name) for name in used}
        return {}

    # --------------------------------------------------------------- compile

    def compile(self) -> Plan:
        program = self.program
        settings = _settings(program)
        personas, populations = self._used()
        for population in populations:
            self._sample(population)
        agent_list = [self._persona_agent(persona) for persona in personas]
        for population in populations:
            agent_list.extend(self.members[population.name])
        agents = {agent.id: agent for agent in agent_list}

        population_plans = [self._population(population) for population in populations]
        world_plans = [
            self._world(world) for world in _in_declaration_order(program.worlds.values())
        ]
        intervention_plans = [
            self._intervention(intervention, agents)
            for intervention in _in_declaration_order(program.interventions.values())
        ]
        populations_by_name = {plan.name: plan for plan in population_plans}
        worlds = {plan.name: plan for plan in world_plans}
        interventions = {plan.name: plan for plan in intervention_plans}

        drafts: list[tuple[str, Step]] = [
            (
                population.name,
                GenerateStep(
                    id="",
                    origin=Origin.of(population.span),
                    population=population.name,
                    agents=[member.id for member in self.members[population.name]],
                ),
            )
            for population in populations
        ]
        drafts.extend(self._timeline(worlds, interventions))
        for extraction in program.extractions:
            drafts.append((extraction.world, self._extract(extraction, worlds[extraction.world])))
        if program.analyses:
            origin = Origin.of(program.analyses[0].span)
            analyses = [_analysis(item, program.sources) for item in program.analyses]
            drafts.append(("", AnalyzeStep(id="", origin=origin, analyses=analyses)))

        estimates = estimate_steps(
            [step for _, step in drafts], agents, worlds, populations_by_name
        )
        width = max(2, len(str(len(drafts))))
        previous = base_hash(settings)
        steps: list[Step] = []
        for ordinal, ((subject, draft), estimate) in enumerate(
            zip(drafts, estimates, strict=True), 1
        ):
            payload = draft.model_dump(mode="json", exclude=set(_UNHASHED))
            if isinstance(draft, AnalyzeStep):
                for analysis in payload["analyses"]:
                    del analysis["origin"]
            content = {
                "step": payload,
                "uses": self._dependencies(
                    draft, agents, worlds, interventions, populations_by_name
                ),
            }
            previous = _sha256(previous + canonical_json(content))
            step_id = f"{ordinal:0{width}d}-{draft.kind}" + (f"-{subject}" if subject else "")
            steps.append(
                draft.model_copy(
                    update={
                        "id": step_id,
                        "hash": previous,
                        "calls": estimate.calls,
                        "input_tokens": estimate.input_tokens,
                        "output_tokens": estimate.output_tokens,
                    }
                )
            )

        return Plan(
            tiny_dsl_version=tiny_dsl.__version__,
            source_file=program.root,
            source_hash=source_hash(program.sources),
            settings=settings,
            agents=agent_list,
            populations=population_plans,
            worlds=world_plans,
            interventions=intervention_plans,
            steps=steps,
            output=OutputPlan(
                formats=list(program.output.formats),
                dir=program.output.dir or f"outputs/{program.settings.name}",
            ),
            estimate=_total(steps, settings),
            plan_hash=previous,
        )


def _settings(program: Program) -> PlanSettings:
    s = program.settings
    return PlanSettings(
        scenario=s.name,
        title=s.title,
        description=s.description,
        seed=s.seed,
        model=s.model,
        provider=s.provider,
        base_url=s.base_url,
        temperature=s.temperature,
        budget_usd=s.budget_usd,
        max_concurrency=s.max_concurrency,
        max_calls=s.max_calls,
        engine=s.engine,
    )


def _total(steps: Sequence[Step], settings: PlanSettings) -> Estimate:
    model = model_name(settings.model, settings.provider)
    prices = price_for(model)
    input_tokens = sum(step.input_tokens for step in steps)
    output_tokens = sum(step.output_tokens for step in steps)
    return Estimate(
        calls=sum(step.calls for step in steps),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=round(tokens_cost(input_tokens, output_tokens, prices), 6) if prices else 0.0,
        model=model,
        priced=prices is not None,
    )


def _stratum(agent: AgentPlan) -> str:
    """Stratum of a target under `assign stratified by segment`; personas form one stratum."""
    if agent.population is None:
        return ""
    return f"{agent.population}.{agent.segment}"


def _at(now: datetime, timing: str | None) -> datetime:
    """The moment a variant is delivered: its timing on the simulated day of `now`."""
    if timing is None:
        return now
    if timing in TIMING_HOURS:
        hour, minute = TIMING_HOURS[timing], 0
    else:
        hour_text, minute_text = timing.split(":")
        hour, minute = int(hour_text), int(minute_text)
    return now.replace(hour=hour, minute=minute, second=0, microsecond=0)


def _statement_text(span: Span, sources: Mapping[str, SourceFile]) -> str:
    """A statement as its author wrote it, whitespace collapsed (reformatting changes nothing)."""
    return " ".join(sources[span.file].text[span.start : span.end].split())


def _bound(value: ast.Number | ast.Percent) -> float:
    return value.fraction if isinstance(value, ast.Percent) else float(value.value)


def _member(value: ast.Value) -> str:
    """The enum member in `share(field == member)`, written as a name or as a string."""
    if isinstance(value, ast.Str):
        return value.value
    if isinstance(value, ast.Ref):
        return value.dotted
    raise ValueError(f"an aggregate compares with an enum member, not {value!r}")


def _analysis(statement: ast.Analysis, sources: Mapping[str, SourceFile]) -> AnalysisPlan:
    common: dict[str, Any] = {
        "origin": Origin.of(statement.span),
        "text": _statement_text(statement.span, sources),
    }
    match statement:
        case ast.CompareStmt(field=compared, by=by):
            return AnalysisPlan(kind="compare", field=compared.name, by=by.name, **common)
        case ast.SummarizeStmt(field=summarized, by=by):
            return AnalysisPlan(kind="summarize", field=summarized.name, by=by.name, **common)
        case ast.FunnelStmt(fields=fields):
            return AnalysisPlan(kind="funnel", fields=[f.name for f in fields], **common)
    aggregate = statement.aggregate
    common.update(
        field=aggregate.field.name,
        aggregate=aggregate.function.name,
        match_comparator=aggregate.comparator,
        match_value=_member(aggregate.value) if aggregate.value is not None else None,
    )
    if isinstance(statement, ast.ExpectBetween):
        return AnalysisPlan(
            kind="expect",
            comparator="between",
            low=_bound(statement.low),
            high=_bound(statement.high),
            **common,
        )
    return AnalysisPlan(
        kind="expect", comparator=statement.comparator, bound=_bound(statement.bound), **common
    )


def plan_diagnostics(program: Program, plan: Plan | None = None) -> list[Diagnostic]:
    """Every warning of the plan stage: the budget's and the call limit's. Pass `plan`
    when it is compiled already; without it the program is compiled here."""
    compiled = plan if plan is not None else compile_plan(program)
    return [
        *budget_diagnostics(compiled, program),
        *call_limit_diagnostics(compiled, program),
    ]
