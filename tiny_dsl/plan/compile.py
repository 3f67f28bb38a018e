"""Lowering a checked `Program` to an execution `Plan`.

`compile_plan` is pure and byte-for-byte deterministic: every random choice
(member attributes, A/B assignment) comes from generators seeded with sha256 of
the scenario seed and a name, declarations are ordered by where they are
written, never by set or hash order, and the plan's JSON is the same under any
PYTHONHASHSEED.

Each timeline step and analysis of the checked program maps to plan steps in
one place (`_Compiler._steps`, `_analysis`); the chained step hashes are
`tiny_dsl.plan.hashing`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

import tiny_dsl
from tiny_dsl.checks import model as checked
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
    StepEstimate,
    budget_diagnostics,
    call_limit_diagnostics,
    estimate_steps,
    model_name,
    price_for,
)
from tiny_dsl.plan.estimate import cost as tokens_cost
from tiny_dsl.plan.hashing import Digests, base_hash, plan_hash, source_hash, step_hash
from tiny_dsl.plan.model import (
    AgentPlan,
    AggregatePlan,
    AnalysisPlan,
    AnalyzeStep,
    AskStep,
    BracketPlan,
    BroadcastStep,
    CheckpointStep,
    ContextStep,
    ConverseStep,
    DeliverStep,
    Delivery,
    Estimate,
    ExternalAgentPlan,
    ExtractOverallStep,
    ExtractStep,
    FieldPlan,
    GenerateStep,
    GoalStep,
    InterventionPlan,
    InterviewStep,
    Origin,
    OutputPlan,
    Plan,
    PlanSettings,
    PopulationPlan,
    ProposeStep,
    ReplicateStep,
    RowFilterPlan,
    RunStep,
    Step,
    TellStep,
    ThinkStep,
    TouchPlan,
    VariantPlan,
    VaryPlan,
    WaitStep,
    WorldPlan,
    replicate_id,
)
from tiny_dsl.plan.sampling import (
    MemberSampler,
    assign_arms,
    member_rng,
    sample_loaded,
    vary_slots,
)
from tiny_dsl.source import Span


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
            if isinstance(step, checked.InterviewStep):
                refs.extend(step.group)
                if step.interviewer not in program.external_agents:
                    persona_names.add(step.interviewer)
            elif isinstance(step, checked.ThinkStep | checked.TellStep | checked.GoalStep):
                refs.extend(step.group)
            elif isinstance(step, checked.ConverseStep):
                refs.extend(step.group)
                if step.partner not in program.external_agents:
                    persona_names.add(step.partner)
        persona_names.update(ref.name for ref in refs if ref.kind == "persona")
        population_names = {ref.name for ref in refs if ref.kind != "persona"}
        personas = [program.personas[name] for name in persona_names]
        populations = [program.populations[name] for name in population_names]
        return _in_declaration_order(personas), _in_declaration_order(populations)

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

    def _persona_agent(self, persona: Persona) -> AgentPlan:
        # A generated persona's fragments merge after generation, so the plan carries them.
        fragments = (
            [_jsonable(self.program.fragments[name].spec) for name in persona.fragments]
            if persona.generate is not None
            else []
        )
        return AgentPlan(
            id=persona.name,
            kind="persona",
            persona=_jsonable(persona.spec),
            fragments=fragments,
            fragment_names=list(persona.fragments),
            generate=persona.generate,
            generate_context=persona.generate_context,
            **_agent_model(persona.llm),
        )

    def _load(self, population: Population) -> None:
        """Members of a population read from files: all of them in file order, or a
        seeded sample of `size` of them, kept in file order."""
        chosen = sample_loaded(self.seed, population.name, len(population.members), population.size)
        segment = population.segments[0]  # the one segment of everyone read
        members: list[AgentPlan] = []
        for index in chosen:
            loaded = population.members[index]
            members.append(
                AgentPlan(
                    id=f"{population.name}/{loaded.id}",
                    kind="member",
                    # Decoded JSON already, unless fragments (which may hold tuples) merged in.
                    persona=_jsonable(loaded.spec) if segment.fragments else loaded.spec,
                    population=population.name,
                    segment=segment.name,
                    index=index + 1,
                    fragment_names=list(segment.fragments),
                    model=loaded.model,
                    temperature=loaded.temperature,
                )
            )
        self.members[population.name] = members
        self.segment_members[(population.name, segment.name)] = [m.id for m in members]

    def _sample(self, population: Population) -> None:
        """Members of a population, segment by segment in declaration order."""
        if population.source_path is not None:
            self._load(population)
            return
        program = self.program
        # A population without `from` has no demographics: its members get no attributes.
        demographics = program.demographics.get(population.demographics) or checked.Demographics(
            "", "", "", "", (), population.span
        )
        width = max(3, len(str(population.size)))
        members: list[AgentPlan] = []
        slots = {
            dimension.name: vary_slots(
                self.seed, population.name, dimension.name, dimension.values, population.size
            )
            for dimension in population.vary
        }
        llm = _agent_model(population.llm)
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
                    particularities=_particularities(population, segment),
                    fragments=fragments,
                    fragment_names=list(segment.fragments),
                    vary_slots={name: slot[index - 1] for name, slot in slots.items()},
                    **llm,
                )
                members.append(member)
                ids.append(member.id)
        self.members[population.name] = members

    # ---------------------------------------------------- worlds, interventions

    def _population(self, population: Population) -> PopulationPlan:
        demographics = self.program.demographics.get(population.demographics)
        return PopulationPlan(
            name=population.name,
            demographics=population.demographics,
            demographics_description=demographics.description if demographics else "",
            size=population.size,
            segments={segment.name: segment.size for segment in population.segments},
            context=population.context,
            members=[member.id for member in self.members[population.name]],
            particularities=population.particularities,
            vary=_vary_plans(population),
            source_path=population.source_path,
        )

    def _world(self, world: World) -> WorldPlan:
        return WorldPlan(
            name=world.name,
            mode=world.mode,
            agents=self._expand(world.agents),
            moderator=world.moderator,
            context=world.context,
            start=_iso(world.start),
            turns=world.turns,
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
                VariantPlan(
                    name=variant.name,
                    content=variant.content,
                    timing=variant.timing,
                    touches=[
                        TouchPlan(
                            name=touch.name,
                            content=touch.content,
                            timing=touch.timing,
                            channel=touch.channel,
                        )
                        for touch in variant.touches
                    ],
                )
                for variant in intervention.variants
            ],
            targets=targets,
            assignment=assignment,
        )

    # ----------------------------------------------------------------- steps

    def _steps(
        self,
        step: checked.Step,
        worlds: Mapping[str, WorldPlan],
        interventions: Mapping[str, InterventionPlan],
    ) -> list[tuple[str, Step]]:
        """The plan steps of one timeline step, as (subject, step), ids still to be numbered."""
        origin = Origin.of(step.span)
        match step:
            case checked.BroadcastStep():
                speaker = worlds[step.world].moderator
                broadcast = BroadcastStep(
                    id="", origin=origin, world=step.world, text=step.text, speaker=speaker
                )
                return [(step.world, broadcast)]
            case checked.DeliverStep():
                now = self.program.worlds[step.world].start + step.elapsed
                intervention = interventions[step.intervention]
                channels = _variant_channels(self.program.interventions[step.intervention])
                deliver = self._deliver(origin, intervention, step.world, now, channels, step.touch)
                subject = step.intervention + (f"-{step.touch}" if step.touch else "")
                return [(subject, deliver)]
            case checked.AskStep():
                agents = worlds[step.world].agents
                ask = AskStep(
                    id="", origin=origin, world=step.world, question=step.question, agents=agents
                )
                return [(step.world, ask)]
            case checked.RunStep():
                agents = worlds[step.world].agents
                return [
                    (
                        f"{step.world}-r{number}",
                        RunStep(
                            id="",
                            origin=origin,
                            world=step.world,
                            round=number,
                            of=step.rounds,
                            agents=agents,
                            every=step.every.total_seconds() if step.every else None,
                        ),
                    )
                    for number in range(1, step.rounds + 1)
                ]
            case checked.WaitStep():
                wait = WaitStep(id="", origin=origin, seconds=step.seconds, text=step.written)
                return [(step.written.replace(" ", "-"), wait)]
            case checked.InterviewStep():
                interview = InterviewStep(
                    id="",
                    origin=origin,
                    interviewer=step.interviewer,
                    agents=self._expand(step.group),
                    questions=list(step.questions),
                )
                return [("+".join(ref.text() for ref in step.group), interview)]
            case checked.ThinkStep():
                agents = self._expand(step.group)
                think = ThinkStep(id="", origin=origin, agents=agents, text=step.text)
                return [(_subject(step.group), think)]
            case checked.CheckpointStep():
                return [(step.name, CheckpointStep(id="", origin=origin, name=step.name))]
            case checked.TellStep():
                agents = self._expand(step.group)
                tell = TellStep(id="", origin=origin, agents=agents, text=step.text)
                return [(_subject(step.group), tell)]
            case checked.ConverseStep():
                converse = ConverseStep(
                    id="",
                    origin=origin,
                    agents=self._expand(step.group),
                    partner=step.partner,
                    turns=step.turns,
                    goal=step.goal,
                )
                return [(_subject(step.group), converse)]
            case checked.GoalStep():
                agents = self._expand(step.group)
                goal = GoalStep(id="", origin=origin, agents=agents, text=step.text)
                return [(_subject(step.group), goal)]
            case checked.ContextStep():
                context = ContextStep(
                    id="",
                    origin=origin,
                    world=step.world,
                    agents=worlds[step.world].agents,
                    text=step.text,
                )
                return [(step.world, context)]

    @staticmethod
    def _deliver(
        origin: Origin,
        intervention: InterventionPlan,
        world: str,
        now: datetime,
        channels: Mapping[str, str],
        touch: str | None,
    ) -> DeliverStep:
        """Each treated target's variant (or that variant's `touch`) at its time on the
        current simulated day. The arms are the intervention's one assignment, so every
        touch reaches each target in the arm it got for the first."""
        variants = {variant.name: variant for variant in intervention.variants}
        deliveries: list[Delivery] = []
        control: list[str] = []
        for agent in intervention.targets:
            arm = intervention.assignment[agent]
            if arm == "control":
                control.append(agent)
                continue
            variant = variants[arm]
            if touch is None:
                content, timing, channel = variant.content, variant.timing, channels[arm]
            else:
                chosen = next(t for t in variant.touches if t.name == touch)
                content, timing, channel = chosen.content, chosen.timing, chosen.channel
            deliveries.append(
                Delivery(
                    agent=agent,
                    variant=arm,
                    content=content,
                    channel=channel,
                    time=_iso(_at(now, timing)),
                )
            )
        return DeliverStep(
            id="",
            origin=origin,
            intervention=intervention.name,
            world=world,
            deliveries=deliveries,
            control=control,
            touch=touch,
        )

    def _extract(
        self, extraction: Extraction, worlds: Mapping[str, WorldPlan]
    ) -> tuple[str, ExtractStep | ExtractOverallStep]:
        """The step of one `extract` block, with its id subject (the source)."""
        fields = [
            FieldPlan(
                name=spec.name,
                kind=spec.kind,
                description=spec.description,
                low=spec.low,
                high=spec.high,
                members=list(spec.members),
            )
            for spec in extraction.fields
        ]
        origin = Origin.of(extraction.span)
        if extraction.world is None:
            group = [ref.text() for ref in extraction.group]
            from_group = ExtractStep(
                id="",
                origin=origin,
                world=None,
                agents=self._expand(extraction.group),
                fields=fields,
                group=group,
                at=extraction.at,
            )
            return "+".join(group), from_group
        kind = ExtractOverallStep if extraction.overall else ExtractStep
        step = kind(
            id="",
            origin=origin,
            world=extraction.world,
            agents=worlds[extraction.world].agents,
            fields=fields,
            at=extraction.at,
        )
        return extraction.world, step

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

        drafts: list[tuple[str, Step]] = []
        generated = [persona for persona in personas if persona.generate is not None]
        if generated:
            # One step for every persona the model writes, before the populations'.
            personas_step = GenerateStep(
                id="",
                origin=Origin.of(generated[0].span),
                population=None,
                agents=[persona.name for persona in generated],
            )
            drafts.append(("personas", personas_step))
        for population in populations:
            if population.source_path is not None:
                continue  # members read from files are whole already: nothing to generate
            if population.vary:
                propose = ProposeStep(
                    id="",
                    origin=Origin.of(population.vary[0].span),
                    population=population.name,
                    dimensions=_vary_plans(population),
                )
                drafts.append((population.name, propose))
            drafts.append(
                (
                    population.name,
                    GenerateStep(
                        id="",
                        origin=Origin.of(population.span),
                        population=population.name,
                        agents=[member.id for member in self.members[population.name]],
                    ),
                )
            )
        # An extraction `at` a checkpoint comes right after it, so that it reads what
        # happened up to there; the others after the whole timeline.
        at_checkpoint: dict[str | None, list[Extraction]] = {}
        for extraction in program.extractions:
            at_checkpoint.setdefault(extraction.at, []).append(extraction)
        for timeline_step in program.timeline:
            drafts.extend(self._steps(timeline_step, worlds, interventions))
            if isinstance(timeline_step, checked.CheckpointStep):
                for extraction in at_checkpoint.get(timeline_step.name, []):
                    drafts.append(self._extract(extraction, worlds))
        for extraction in at_checkpoint.get(None, []):
            drafts.append(self._extract(extraction, worlds))
        if program.analyses:
            origin = Origin.of(program.analyses[0].span)
            analyses = [_analysis(item, self._expand) for item in program.analyses]
            drafts.append(("", AnalyzeStep(id="", origin=origin, analyses=analyses)))

        externals = {
            name: _external_agent(external)
            for name, external in program.external_agents.items()
            if name in self._externals_used()
        }
        estimates = estimate_steps(
            [step for _, step in drafts],
            agents,
            worlds,
            populations_by_name,
            externals,
            judge=settings.judge,
        )
        width = max(2, len(str(len(drafts))))
        digests = Digests(agents, worlds, interventions, populations_by_name, externals)
        previous = base_hash(settings)
        steps: list[Step] = []
        numbered = [
            (f"{ordinal:0{width}d}-{draft.kind}" + (f"-{subject}" if subject else ""), draft, guess)
            for ordinal, ((subject, draft), guess) in enumerate(
                zip(drafts, estimates, strict=True), 1
            )
        ]
        origin = Origin.of(program.settings.replicates_span or program.settings.span)
        for step_id, draft, estimate in replicated(numbered, settings.replicates, origin):
            previous = step_hash(previous, draft, digests.dependencies(draft))
            steps.append(
                draft.model_copy(
                    update={
                        "id": step_id,
                        "hash": previous,
                        "calls": estimate.calls,
                        "input_tokens": estimate.input_tokens,
                        "output_tokens": estimate.output_tokens,
                        "external_calls": estimate.external_calls,
                        "judge_calls": estimate.judge_calls,
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
            plan_hash=plan_hash(previous, program.params),
            params=_jsonable(program.params),
            external_agents=list(externals.values()),
        )

    def _externals_used(self) -> set[str]:
        """The external agents some step talks to (an unused one is left out of the plan)."""
        used = set()
        for step in self.program.timeline:
            if isinstance(step, checked.InterviewStep):
                used.add(step.interviewer)
            elif isinstance(step, checked.ConverseStep):
                used.add(step.partner)
        return used & set(self.program.external_agents)


def _external_agent(external: checked.ExternalAgent) -> ExternalAgentPlan:
    return ExternalAgentPlan(
        name=external.name,
        url=external.url,
        protocol=external.protocol,
        model=external.model,
        request=external.request,
        reply=external.reply,
        headers=dict(external.headers),
        timeout_s=external.timeout_s,
    )


def _agent_model(llm: checked.AgentModel | None) -> dict[str, Any]:
    """The AgentPlan fields of a persona's or population's own `model` / `temperature`."""
    if llm is None:
        return {}
    return {
        "model": llm.model,
        "temperature": llm.temperature,
        "model_origin": Origin.of(llm.span),
    }


def _particularities(population: Population, segment: checked.Segment) -> str:
    """A member's particularities: the population's, then its segment's."""
    return "; ".join(text for text in (population.particularities, segment.particularities) if text)


def _vary_plans(population: Population) -> list[VaryPlan]:
    return [
        VaryPlan(name=dimension.name, description=dimension.description, values=dimension.values)
        for dimension in population.vary
    ]


# Steps that make the people (members generated, values proposed): they run once,
# before the replicates, which all start from the state they leave.
PEOPLE_KINDS = frozenset({"generate", "propose"})
_NO_CALLS = StepEstimate(0, 0, 0)


def replicated(
    numbered: Sequence[tuple[str, Step, StepEstimate]], replicates: int, origin: Origin
) -> list[tuple[str, Step, StepEstimate]]:
    """The steps of `replicates` replicates, in run order: the people steps once, the
    timeline and its extractions once per replicate (replicate r >= 2 opened by a
    `replicate` step, its copies' ids marked `@r<r>`), the analysis once, last,
    over the rows of all of them. Replicate 1 is exactly the single-replicate plan."""
    people = 0
    while people < len(numbered) and numbered[people][1].kind in PEOPLE_KINDS:
        people += 1
    end = len(numbered)
    if end > people and isinstance(numbered[-1][1], AnalyzeStep):
        end -= 1
    steps = list(numbered[:end])
    after = numbered[people - 1][0] if people else None
    for replicate in range(2, replicates + 1):
        opening = ReplicateStep(id="", origin=origin, replicate=replicate, after=after)
        steps.append((replicate_id("replicate", replicate), opening, _NO_CALLS))
        steps.extend(
            (replicate_id(step_id, replicate), step, guess)
            for step_id, step, guess in numbered[people:end]
        )
    steps.extend(numbered[end:])
    return steps


def _subject(group: Sequence[GroupRef]) -> str:
    """A group in a step id: `think-lisa`, `tell-folk.young+tom`."""
    return "+".join(ref.text() for ref in group)


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
        replicates=s.replicates,
        regenerate=s.quality.regenerate,
        judge=list(s.quality.judge),
        judge_threshold=s.quality.threshold,
    )


def _total(steps: Sequence[Step], settings: PlanSettings) -> Estimate:
    model = model_name(settings.model, settings.provider)
    prices = price_for(model)
    input_tokens = sum(step.input_tokens for step in steps)
    output_tokens = sum(step.output_tokens for step in steps)
    return Estimate(
        calls=sum(step.calls for step in steps),
        external_calls=sum(step.external_calls for step in steps),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=round(tokens_cost(input_tokens, output_tokens, prices), 6) if prices else 0.0,
        model=model,
        priced=prices is not None,
    )


def _variant_channels(intervention: Intervention) -> dict[str, str]:
    """Each single-content variant's channel: its own, else the intervention's."""
    return {
        variant.name: channel
        for variant in intervention.variants
        if (channel := variant.channel or intervention.channel) is not None
    }


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


def _analysis(
    analysis: checked.Analysis, expand: Callable[[Iterable[GroupRef]], list[str]]
) -> AnalysisPlan:
    """The plan form of one checked `analyze` statement; `expand` gives a group's agents."""
    common: dict[str, Any] = {"origin": Origin.of(analysis.span), "text": analysis.text}
    match analysis:
        case checked.CompareAnalysis() | checked.SummarizeAnalysis():
            kind: Literal["compare", "summarize"] = (
                "compare" if isinstance(analysis, checked.CompareAnalysis) else "summarize"
            )
            return AnalysisPlan(
                kind=kind,
                field=analysis.field,
                by=analysis.by,
                **_grouping(analysis.grouping),
                **common,
            )
        case checked.FunnelAnalysis():
            return AnalysisPlan(kind="funnel", fields=list(analysis.fields), **common)
        case checked.ValidateAnalysis():
            grouping = analysis.grouping
            return AnalysisPlan(
                kind="validate",
                field=analysis.field,
                by=grouping.name if grouping is not None else None,
                **_grouping(grouping),
                path=analysis.path,
                sha256=analysis.sha256,
                real_column=analysis.column,
                real=list(analysis.real),
                statistic=analysis.statistic,
                margins=dict(analysis.margins),
                **common,
            )
        case checked.ExpectAnalysis():
            aggregate = analysis.aggregate
            other = analysis.other
            return AnalysisPlan(
                kind="expect",
                field=aggregate.field,
                aggregate=aggregate.function,
                match_comparator=aggregate.comparator,
                match_value=aggregate.member,
                match_values=list(aggregate.members),
                filter=_row_filter(aggregate.filter, expand),
                comparator=analysis.comparator,
                low=analysis.low,
                high=analysis.high,
                bound=analysis.bound,
                other=(
                    AggregatePlan(
                        aggregate=other.function,
                        field=other.field,
                        match_comparator=other.comparator,
                        match_value=other.member,
                        match_values=list(other.members),
                        filter=_row_filter(other.filter, expand),
                    )
                    if other is not None
                    else None
                ),
                **common,
            )


def _grouping(grouping: checked.Grouping | None) -> dict[str, Any]:
    """The plan fields of `by` an attribute: its row column and numeric brackets. Groupings
    the analysis finds from `by` alone (arms, `segment`, `world`...) need none, which
    keeps v1 plans as they were."""
    if grouping is None or grouping.column is None or grouping.column == grouping.name:
        return {}
    brackets = [
        BracketPlan(label=share.label, low=share.low, high=share.high)
        for share in grouping.brackets
        if share.low is not None and share.high is not None
    ]
    return {"column": grouping.column, "brackets": brackets}


def _row_filter(
    row_filter: checked.RowFilter | None, expand: Callable[[Iterable[GroupRef]], list[str]]
) -> RowFilterPlan | None:
    if row_filter is None:
        return None
    if row_filter.group:
        return RowFilterPlan(text=row_filter.text, agents=expand(row_filter.group))
    return RowFilterPlan(
        text=row_filter.text,
        column=row_filter.column,
        comparator=row_filter.comparator,
        value=row_filter.value,
    )


def plan_diagnostics(program: Program, plan: Plan | None = None) -> list[Diagnostic]:
    """Every warning of the plan stage: the budget's and the call limit's. Pass `plan`
    when it is compiled already; without it the program is compiled here."""
    compiled = plan if plan is not None else compile_plan(program)
    return [
        *budget_diagnostics(compiled, program),
        *call_limit_diagnostics(compiled, program),
    ]
