"""LLM calls, tokens and cost a plan will spend, estimated before anything runs.

The model of a call is TinyTroupe's: an agent acts with a prompt made of a
fixed instruction overhead, its persona as JSON, the world's context, the
stimulus, and its recent episodic memory. Stimuli (`broadcast`, `deliver`,
`think`) cost nothing when they happen, as in TinyTroupe where `listen` only
stores; they cost later, as memory that every following prompt of that agent
carries. Tokens are counted as characters / 4, the usual rule of thumb for
English with GPT tokenizers: the estimate is for budgeting, not billing.

Memory follows TinyTroupe's `EpisodicMemory` retrieval: the first
`MEMORY_PREFIX_ITEMS` items an agent stored plus its last
`MEMORY_LOOKBACK_ITEMS` (its config defaults, 10 and 20) are in every prompt;
items in between are dropped. That bound is the "memory window": prompts grow
with the timeline until the window is full, then stay flat.
"""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tiny_dsl.checks.model import Program
from tiny_dsl.diagnostics import Diagnostic, Label, error, warning
from tiny_dsl.plan.codes import (
    BUDGET_EXCEEDED,
    BUDGET_UNPRICED,
    CALLS_EXCEED_LIMIT,
    RUN_CALLS_EXCEED_LIMIT,
    RUN_OVER_BUDGET,
)
from tiny_dsl.plan.model import (
    TURN_STEP_KINDS,
    AgentPlan,
    AnalyzeStep,
    AskStep,
    BroadcastStep,
    CheckpointStep,
    ContextStep,
    ConverseStep,
    DeliverStep,
    ExtractOverallStep,
    ExtractStep,
    GenerateStep,
    GoalStep,
    InterviewStep,
    Plan,
    PopulationPlan,
    ProposeStep,
    RunStep,
    Step,
    TellStep,
    ThinkStep,
    WaitStep,
    WorldPlan,
)
from tiny_dsl.source import Span

# The model a scenario runs on when it names none: the runtime's embedded provider.
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"

# Fixed prompt parts, in tokens: TinyTroupe's action instructions and output
# schema; the extraction instructions; the factory's sampling directives.
ACT_PROMPT_TOKENS = 700
EXTRACT_PROMPT_TOKENS = 300
GENERATE_PROMPT_TOKENS = 600
# Output per call: one action with its cognitive state; one JSON record; one persona.
ACT_OUTPUT_TOKENS = 150
EXTRACT_OUTPUT_TOKENS = 120
GENERATE_OUTPUT_TOKENS = 400
# A judge call (`quality { judge }`): its instructions, and per criterion a reason and
# a score; it also reads the persona, what the agent heard, its turn and the one before.
JUDGE_PROMPT_TOKENS = 250
JUDGE_CRITERION_TOKENS = 70
# A `propose` call: its instructions, and each proposed value (a short phrase, quoted).
PROPOSE_PROMPT_TOKENS = 150
VARY_VALUE_TOKENS = 8
# The memory window (see the module docstring).
MEMORY_PREFIX_ITEMS = 10
MEMORY_LOOKBACK_ITEMS = 20

# The most LLM calls a plan may make when the scenario sets no `max_calls`:
# sixty times the largest example, so that a typo such as a population of
# `size 12000` is caught before anything is spent, not after.
DEFAULT_MAX_CALLS = 10_000

# USD per 1M tokens (input, output), list prices. The embedded model runs locally.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "embedded": (0.0, 0.0),
    EMBEDDED_MODEL.lower(): (0.0, 0.0),
}
# Providers report dated snapshots ("gpt-4o-mini-2024-07-18") and some callers
# prefix the vendor ("openai/gpt-4o"); both are priced as the base model.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def price_for(model: str | None) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for a model name, or None when not in the table.

    `None` is the embedded model, which is free. The runtime uses this for its
    cost accounting too, so a plan and a run price the same call the same way.
    """
    if model is None:
        return PRICES["embedded"]
    name = model.strip().lower().rsplit("/", 1)[-1]
    return PRICES.get(name) or PRICES.get(_SNAPSHOT_SUFFIX.sub("", name))


def model_name(model: str | None, provider: str | None) -> str:
    """The model a scenario's settings select, as it is priced and shown."""
    if model is not None:
        return model
    if provider in (None, "embedded"):
        return EMBEDDED_MODEL
    return f"{provider} default model"


def tokens(text: str) -> int:
    """Estimated tokens in a text: characters / 4, rounded up."""
    return (len(text) + 3) // 4


def json_tokens(value: object) -> int:
    """Estimated tokens of a value as the compact JSON a prompt would carry."""
    return tokens(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


@dataclass(frozen=True)
class StepEstimate:
    calls: int
    input_tokens: int
    output_tokens: int
    external_calls: int = 0  # to systems under test: neither tokens nor cost of ours
    judge_calls: int = 0  # of `calls`: the judge's, one per agent turn


class _Memory:
    """An episodic memory, reduced to the token sizes of what is in the window.

    Agents with the same history share one (`holders` of them): a survey's members
    hear the same things, so the estimate stores into one memory for all of them.
    """

    __slots__ = ("_prefix", "_prefix_count", "_recent", "_recent_tokens", "holders")

    def __init__(self) -> None:
        self._prefix = 0
        self._prefix_count = 0
        self._recent: deque[int] = deque(maxlen=MEMORY_LOOKBACK_ITEMS)
        self._recent_tokens = 0
        self.holders = 0

    def split(self, holders: int) -> _Memory:
        """A copy for `holders` of this memory's holders, who stop sharing this one."""
        copy = _Memory()
        copy._prefix, copy._prefix_count = self._prefix, self._prefix_count
        copy._recent.extend(self._recent)
        copy._recent_tokens = self._recent_tokens
        copy.holders = holders
        self.holders -= holders
        return copy

    def store(self, size: int, times: int = 1) -> None:
        """Store `times` items of `size` tokens (a round of a focus group: one per speaker)."""
        into_prefix = min(times, MEMORY_PREFIX_ITEMS - self._prefix_count)
        self._prefix += into_prefix * size
        self._prefix_count += into_prefix
        rest = times - into_prefix
        if rest:
            self._recent.extend([size] * min(rest, MEMORY_LOOKBACK_ITEMS))
            self._recent_tokens = sum(self._recent)

    @property
    def tokens(self) -> int:
        return self._prefix + self._recent_tokens


class _Estimator:
    """Walks the steps in order, tracking what each agent remembers."""

    def __init__(
        self,
        agents: Mapping[str, AgentPlan],
        worlds: Mapping[str, WorldPlan],
        populations: Mapping[str, PopulationPlan],
        externals: Collection[str] = (),
    ) -> None:
        self.agents = agents
        self.worlds = worlds
        self.populations = populations
        self.externals = externals
        self.memory: dict[str, _Memory] = {}
        self._empty = _Memory()  # held by every agent that has remembered nothing yet
        self.persona_tokens: dict[str, int] = {}
        self.fragment_tokens: dict[tuple[str, ...], int] = {}

    def _remember(self, agent: str) -> _Memory:
        """The memory `agent` holds (perhaps with others): to read, not to store into."""
        memory = self.memory.get(agent)
        if memory is None:
            memory = self.memory[agent] = self._empty
            memory.holders += 1
        return memory

    def _memories(self, agents: Iterable[str]) -> list[tuple[_Memory, list[str]]]:
        """The memories of `agents`, each with those of `agents` that hold it, made
        theirs alone to store into: agents that store the same thing keep sharing one."""
        holding: dict[int, list[str]] = {}
        for agent in agents:
            holding.setdefault(id(self._remember(agent)), []).append(agent)
        groups = []
        for group in holding.values():
            memory = self.memory[group[0]]
            if memory is self._empty or len(group) < memory.holders:
                memory = memory.split(len(group))
                for agent in group:
                    self.memory[agent] = memory
            groups.append((memory, group))
        return groups

    def _in_turn(self, agents: Sequence[str]) -> Iterable[tuple[_Memory, list[str]]]:
        """`_memories(agents)`, or where an agent is listed twice, each mention's memory
        in order (lazily, so that a later mention sees what an earlier one stored)."""
        if len(set(agents)) == len(agents):
            return self._memories(agents)
        return ((self._own(agent), [agent]) for agent in agents)

    def _store(self, agents: Sequence[str], size: int, times: int = 1) -> None:
        """Each of `agents` stores `times` items of `size` tokens."""
        for memory, _group in self._in_turn(agents):
            memory.store(size, times)

    def _own(self, agent: str) -> _Memory:
        """`agent`'s memory, made its alone to store into."""
        ((memory, _group),) = self._memories([agent])
        return memory

    def _persona(self, agent_id: str) -> int:
        """Tokens of an agent's persona in a prompt: its spec, or for a population
        member the persona the factory will write (plus its fragments)."""
        size = self.persona_tokens.get(agent_id)
        if size is None:
            agent = self.agents[agent_id]
            if agent.generate is not None:
                # The model writes the persona: counted as a member's, fields written aside.
                size = GENERATE_OUTPUT_TOKENS + self._fragments(agent)
            elif agent.persona is not None:
                size = json_tokens(agent.persona)
            else:
                size = GENERATE_OUTPUT_TOKENS + self._fragments(agent)
            self.persona_tokens[agent_id] = size
        return size

    def _fragments(self, member: AgentPlan) -> int:
        """Tokens of a member's fragments, counted once per combination of fragments."""
        key = tuple(member.fragment_names)
        size = self.fragment_tokens.get(key)
        if size is None:
            size = self.fragment_tokens[key] = json_tokens(member.fragments) if key else 0
        return size

    def _act(self, agents: Sequence[str], context: int, stimulus: int) -> int:
        """Input tokens of one act call per agent; each remembers the stimulus and its answer."""
        total = 0
        for memory, group in self._in_turn(agents):
            total += sum(self._persona(agent) for agent in group)
            total += len(group) * (ACT_PROMPT_TOKENS + memory.tokens + context + stimulus)
            if stimulus:
                memory.store(stimulus)
            memory.store(ACT_OUTPUT_TOKENS)
        return total

    def _hear_each_other(self, world: WorldPlan) -> None:
        """In a focus group every agent also hears the others' answers."""
        if world.mode == "focus_group" and len(world.agents) > 1:
            self._store(world.agents, ACT_OUTPUT_TOKENS, len(world.agents) - 1)

    def _converse(self, step: ConverseStep) -> StepEstimate:
        """Per agent, `turns` turns of the agent and as many of the partner, each
        hearing the other's last line; the partner forgets every conversation. An
        external partner's replies are external calls, of a reply's length."""
        goal = tokens(step.goal)
        if step.partner in self.externals:
            total = 0
            for agent in step.agents:
                memory = self._own(agent)
                memory.store(goal)
                for _ in range(step.turns):
                    total += ACT_PROMPT_TOKENS + self._persona(agent) + memory.tokens + goal
                    memory.store(ACT_OUTPUT_TOKENS, 2)
            calls = step.turns * len(step.agents)
            return StepEstimate(calls, total, calls * ACT_OUTPUT_TOKENS, external_calls=calls)
        partner = self._persona(step.partner) + self._remember(step.partner).tokens
        total = 0
        for agent in step.agents:
            memory = self._own(agent)
            memory.store(goal)
            heard = 0  # what the partner has heard of this conversation so far
            for _ in range(step.turns):
                total += ACT_PROMPT_TOKENS + self._persona(agent) + memory.tokens + goal
                memory.store(ACT_OUTPUT_TOKENS)
                heard += ACT_OUTPUT_TOKENS
                total += ACT_PROMPT_TOKENS + partner + heard
                heard += ACT_OUTPUT_TOKENS
                memory.store(ACT_OUTPUT_TOKENS)
        calls = 2 * step.turns * len(step.agents)
        return StepEstimate(calls, total, calls * ACT_OUTPUT_TOKENS)

    def _generate_personas(self, step: GenerateStep) -> StepEstimate:
        """One call per `persona { generate ... }`: its description, context and fields."""
        total = 0
        for agent_id in step.agents:
            agent = self.agents[agent_id]
            total += (
                GENERATE_PROMPT_TOKENS
                + tokens(agent.generate or "")
                + tokens(agent.generate_context)
                + json_tokens(agent.persona or {})
            )
        calls = len(step.agents)
        return StepEstimate(calls, total, calls * GENERATE_OUTPUT_TOKENS)

    def _propose(self, step: ProposeStep) -> StepEstimate:
        """One call for all of a population's dimensions: N short values each."""
        population = self.populations[step.population]
        prompt = (
            PROPOSE_PROMPT_TOKENS
            + tokens(population.context)
            + tokens(population.particularities)
            + tokens(population.demographics_description)
            + sum(tokens(d.description) for d in step.dimensions)
        )
        output = sum(d.values * VARY_VALUE_TOKENS for d in step.dimensions) + 8
        return StepEstimate(1, prompt, output)

    def judged(self, step: Step, estimate: StepEstimate, criteria: int) -> StepEstimate:
        """`estimate` plus one judge call per agent turn of the step."""
        turns = estimate.calls
        agents = [a for a in getattr(step, "agents", []) if a not in self.externals]
        persona = sum(self._persona(a) for a in agents) // len(agents) if agents else 0
        prompt = JUDGE_PROMPT_TOKENS + persona + 3 * ACT_OUTPUT_TOKENS
        return StepEstimate(
            estimate.calls + turns,
            estimate.input_tokens + turns * prompt,
            estimate.output_tokens + turns * criteria * JUDGE_CRITERION_TOKENS,
            external_calls=estimate.external_calls,
            judge_calls=turns,
        )

    def step(self, step: Step) -> StepEstimate:
        if isinstance(step, GenerateStep) and step.population is None:
            return self._generate_personas(step)
        if isinstance(step, ProposeStep):
            return self._propose(step)
        if isinstance(step, GenerateStep):
            assert step.population is not None  # the personas' step is handled above
            population = self.populations[step.population]
            shared = tokens(population.context) + tokens(population.demographics_description)
            total = 0
            for agent_id in step.agents:
                member = self.agents[agent_id]
                total += (
                    GENERATE_PROMPT_TOKENS
                    + shared
                    + json_tokens(member.attributes)
                    + tokens(member.particularities)
                    + VARY_VALUE_TOKENS * len(member.vary_slots)
                )
            calls = len(step.agents)
            return StepEstimate(calls, total, calls * GENERATE_OUTPUT_TOKENS)
        if isinstance(step, BroadcastStep):
            size = tokens(step.text)
            listeners = [*self.worlds[step.world].agents]
            if step.speaker is not None:
                listeners.append(step.speaker)
            self._store(listeners, size)
            return StepEstimate(0, 0, 0)
        if isinstance(step, DeliverStep):
            # Round k holds each agent's k-th delivery, grouped by size: an agent's stay in order.
            rounds: list[dict[int, list[str]]] = []
            delivered: Counter[str] = Counter()
            for delivery in step.deliveries:
                k = delivered[delivery.agent]
                delivered[delivery.agent] += 1
                if k == len(rounds):
                    rounds.append({})
                rounds[k].setdefault(tokens(delivery.content), []).append(delivery.agent)
            for by_size in rounds:
                for size, agents in by_size.items():
                    self._store(agents, size)
            return StepEstimate(0, 0, 0)
        if isinstance(step, ThinkStep | GoalStep | ContextStep):
            self._store(step.agents, tokens(step.text))
            return StepEstimate(0, 0, 0)
        if isinstance(step, TellStep):
            total = self._act(step.agents, 0, tokens(step.text))
            calls = len(step.agents)
            return StepEstimate(calls, total, calls * ACT_OUTPUT_TOKENS)
        if isinstance(step, ConverseStep):
            return self._converse(step)
        if isinstance(step, AskStep | RunStep):
            world = self.worlds[step.world]
            stimulus = tokens(step.question) if isinstance(step, AskStep) else 0
            total = self._act(step.agents, tokens(world.context), stimulus)
            if world.turns == "sequential" and world.mode == "focus_group":
                # The k-th agent's prompt also holds the k-1 turns before its own.
                count = len(step.agents)
                total += ACT_OUTPUT_TOKENS * count * (count - 1) // 2
            self._hear_each_other(world)
            calls = len(step.agents)
            return StepEstimate(calls, total, calls * ACT_OUTPUT_TOKENS)
        if isinstance(step, InterviewStep):
            total = 0
            external = step.interviewer in self.externals
            for question in step.questions:
                size = tokens(question)
                total += self._act(step.agents, 0, size)
                self._own(step.interviewer).store(size + ACT_OUTPUT_TOKENS, len(step.agents))
                if external:  # each agent hears the bot's reply to its answer
                    self._store(step.agents, ACT_OUTPUT_TOKENS)
            calls = len(step.agents) * len(step.questions)
            return StepEstimate(
                calls, total, calls * ACT_OUTPUT_TOKENS, external_calls=calls if external else 0
            )
        if isinstance(step, ExtractStep):
            schema = json_tokens([field.model_dump(mode="json") for field in step.fields])
            total = sum(
                EXTRACT_PROMPT_TOKENS + self._persona(agent) + self._remember(agent).tokens + schema
                for agent in step.agents
            )
            calls = len(step.agents)
            return StepEstimate(calls, total, calls * EXTRACT_OUTPUT_TOKENS)
        if isinstance(step, ExtractOverallStep):
            # One call reading every agent's record in the world.
            schema = json_tokens([field.model_dump(mode="json") for field in step.fields])
            record = sum(self._remember(agent).tokens for agent in step.agents)
            return StepEstimate(1, EXTRACT_PROMPT_TOKENS + record + schema, EXTRACT_OUTPUT_TOKENS)
        assert isinstance(step, WaitStep | CheckpointStep | AnalyzeStep)
        return StepEstimate(0, 0, 0)


def estimate_steps(
    steps: Sequence[Step],
    agents: Mapping[str, AgentPlan],
    worlds: Mapping[str, WorldPlan],
    populations: Mapping[str, PopulationPlan],
    externals: Collection[str] = (),
    judge: Sequence[str] = (),
) -> list[StepEstimate]:
    """Calls and tokens of each step, in order (memory carries from one step to the next);
    `externals` are the names of the external agents, `judge` the criteria of the
    scenario's judge (each agent turn is then one more call)."""
    estimator = _Estimator(agents, worlds, populations, externals)
    estimates = [estimator.step(step) for step in steps]
    if not judge:
        return estimates
    return [
        estimator.judged(step, estimate, len(judge)) if step.kind in TURN_STEP_KINDS else estimate
        for step, estimate in zip(steps, estimates, strict=True)
    ]


def cost(input_tokens: int, output_tokens: int, prices: tuple[float, float]) -> float:
    """USD for a number of tokens at (input, output) prices per 1M tokens."""
    return (input_tokens * prices[0] + output_tokens * prices[1]) / 1_000_000


def step_costs(plan: Plan) -> list[float]:
    """Estimated USD of each step at the plan model's prices (zeros when unpriced)."""
    prices = price_for(plan.estimate.model) if plan.estimate.priced else None
    if prices is None:
        return [0.0] * len(plan.steps)
    return [cost(step.input_tokens, step.output_tokens, prices) for step in plan.steps]


def budget_crossing(plan: Plan) -> tuple[Step, float] | None:
    """The step at which the running cost estimate first exceeds the budget, and the
    running cost there; None without a budget, without prices, or within budget."""
    budget = plan.settings.budget_usd
    if budget is None or not plan.estimate.priced or plan.estimate.cost_usd <= budget:
        return None
    running = 0.0
    for step, step_cost in zip(plan.steps, step_costs(plan), strict=True):
        running += step_cost
        if running > budget:
            return step, running
    # Only rounding of the total can leave the sum at or below the budget here.
    return plan.steps[-1], running


def call_limit(plan: Plan) -> tuple[int, bool]:
    """The most LLM calls the plan may make, and whether that is the default."""
    if plan.settings.max_calls is not None:
        return plan.settings.max_calls, False
    return DEFAULT_MAX_CALLS, True


def calls_crossing(plan: Plan) -> tuple[Step, int] | None:
    """The step at which the running call count first exceeds the limit, and the
    count there; None within the limit."""
    limit, _default = call_limit(plan)
    running = 0
    for step in plan.steps:
        running += step.calls
        if running > limit:
            return step, running
    return None


def call_limit_diagnostics(plan: Plan, program: Program) -> list[Diagnostic]:
    """W403 when the plan's estimated calls exceed `max_calls` (or the default)."""
    crossing = calls_crossing(plan)
    if crossing is None:
        return []
    return [_calls_over_limit(plan, program, crossing, refuse=False)]


def usd(amount: float) -> str:
    """Dollars with cents, and as many more digits (up to six) as the amount needs:
    a budget of $0.001 must not read as $0.00."""
    places = 2
    while places < 6 and round(amount, places) != round(amount, 6):
        places += 1
    return f"${amount:,.{places}f}"


def run_refusals(plan: Plan, program: Program | None) -> list[Diagnostic]:
    """Why `tts run` refuses to start the plan: its estimated calls exceed
    `max_calls` (E501), or its estimated cost exceeds the budget (E502). Each
    points at the statement where the running estimate crosses the limit;
    `program` gives the statements' source (without it, only their origin)."""
    refusals = []
    crossing = calls_crossing(plan)
    if crossing is not None:
        refusals.append(_calls_over_limit(plan, program, crossing, refuse=True))
    over_budget = budget_crossing(plan)
    if over_budget is not None and plan.settings.budget_usd is not None:
        step, running = over_budget
        budget = plan.settings.budget_usd
        refusals.append(
            _at_step(
                RUN_OVER_BUDGET,
                f"refusing to run: the estimated cost, ${plan.estimate.cost_usd:.4f} at "
                f"{plan.estimate.model} prices, exceeds the budget of {usd(budget)}",
                plan,
                program,
                step,
                f"the budget runs out here, at step `{step.id}` (${running:.4f} so far)",
                setting=program.settings.budget_span if program is not None else None,
                setting_label="budget set here",
                helps=[
                    "make the scenario smaller (fewer members, rounds or questions), choose a "
                    "cheaper model, or raise `budget`",
                    "`--allow-over-budget` starts the run anyway; it stops when the budget "
                    "is spent",
                ],
            )
        )
    return refusals


def _calls_over_limit(
    plan: Plan, program: Program | None, crossing: tuple[Step, int], *, refuse: bool
) -> Diagnostic:
    step, running = crossing
    limit, default = call_limit(plan)
    what = (
        f"the default limit of {limit:,} calls (the scenario sets no `max_calls`)"
        if default
        else f"`max_calls` {limit:,}"
    )
    raise_it = "set `max_calls N` in the scenario block" if default else "raise `max_calls`"
    helps = [f"if a number in that statement is a typo, fix it; otherwise {raise_it}"]
    if refuse:
        helps.append(
            "`--allow-over-budget` starts the run anyway"
            + ("" if default else "; it stops when `max_calls` calls are made")
        )
    else:
        helps.append("`tts run` refuses to start such a plan unless `--allow-over-budget`")
    return _at_step(
        RUN_CALLS_EXCEED_LIMIT if refuse else CALLS_EXCEED_LIMIT,
        ("refusing to run: " if refuse else "")
        + f"the plan makes an estimated {plan.estimate.calls:,} LLM calls, more than {what}",
        plan,
        program,
        step,
        f"the count passes {limit:,} here, at step `{step.id}` ({running:,} calls so far)",
        setting=program.settings.max_calls_span if program is not None and not default else None,
        setting_label="max_calls set here",
        helps=helps,
        severity_error=refuse,
    )


def _at_step(
    code: str,
    message: str,
    plan: Plan,
    program: Program | None,
    step: Step,
    label: str,
    *,
    setting: Span | None,
    setting_label: str,
    helps: list[str],
    severity_error: bool = True,
) -> Diagnostic:
    """A diagnostic at the statement `step` comes from, noting how much that
    statement makes of the plan's calls (a typo makes nearly all of them)."""
    span = step.origin.span()
    statement_calls = sum(other.calls for other in plan.steps if other.origin == step.origin)
    notes = [
        f"the statement at {step.origin} makes {statement_calls:,} of the plan's "
        f"{plan.estimate.calls:,} estimated calls"
    ]
    make = error if severity_error else warning
    return make(
        code,
        message,
        span,
        label,
        secondary=[Label(setting, setting_label)] if setting else [],
        help=helps,
        notes=notes,
    )


def budget_diagnostics(plan: Plan, program: Program) -> list[Diagnostic]:
    """Warnings when the scenario's budget cannot be checked or would be exceeded.

    The warning points at the `budget` setting and at the statement of the step
    where the running estimate first crosses the budget, which is where a run
    enforcing the budget would stop.
    """
    budget = plan.settings.budget_usd
    if budget is None:
        return []
    budget_span = _budget_span(program)
    if not plan.estimate.priced:
        return [
            warning(
                BUDGET_UNPRICED,
                f"cannot check the budget of {usd(budget)}: no prices are known "
                f"for model `{plan.estimate.model}`",
                budget_span,
                "budget set here",
                help=[
                    f"the plan makes {plan.estimate.calls:,} LLM calls with about "
                    f"{plan.estimate.input_tokens:,} input and {plan.estimate.output_tokens:,} "
                    "output tokens; compare them with your provider's prices"
                ],
            )
        ]
    crossing = budget_crossing(plan)
    if crossing is None:
        return []
    step, running = crossing
    secondary = [
        Label(
            step.origin.span(),
            f"the budget runs out here, at step `{step.id}` (${running:.4f} so far)",
        )
    ]
    return [
        warning(
            BUDGET_EXCEEDED,
            f"the estimated cost, ${plan.estimate.cost_usd:.4f} at {plan.estimate.model} prices, "
            f"exceeds the budget of {usd(budget)}; a run would stop at step `{step.id}`",
            budget_span,
            "budget set here",
            secondary=secondary,
            help=[
                "raise `budget`, choose a cheaper model, or use fewer members, rounds or questions",
                "`tts run` refuses to start over budget unless `--allow-over-budget`",
            ],
        )
    ]


def _budget_span(program: Program) -> Span:
    """The `budget` property of the scenario block (the block itself if not set)."""
    return program.settings.budget_span or program.settings.span
