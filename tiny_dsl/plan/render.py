"""The human view of a plan: what `tts plan` prints.

Plain text at a fixed width (`WIDTH`), never the terminal's: the view is
pinned by golden files and pasted into pull requests, so it must be the same
everywhere. Colour is optional ANSI styling on top of the same text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tiny_dsl.plan.estimate import EMBEDDED_MODEL, budget_crossing, call_limit, usd
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
    InterventionPlan,
    InterviewStep,
    Origin,
    Plan,
    ProposeStep,
    ReplicateStep,
    RunStep,
    Step,
    TellStep,
    ThinkStep,
    WaitStep,
    replicate_of,
)

WIDTH = 100
# How many categories of an attribute a segment summary names before "+N more".
TOP_CATEGORIES = 3
CACHED = "✓ cached"

_STYLES = {"bold": "1", "dim": "2", "green": "32", "yellow": "33"}


def render_plan(plan: Plan, *, color: bool = False, covered: set[str] | None = None) -> str:
    """The plan as text. `covered` holds the ids of steps a saved checkpoint already
    covers; those steps are marked as cached and will not call the model again."""
    view = _View(plan, color)
    sections = [
        view.header(),
        view.agents(),
        view.external_agents(),
        view.worlds(),
        view.interventions(),
        view.steps(covered),
        view.totals(),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _verb(count: int, verb: str) -> str:
    """The present tense of `verb` for `count` subjects: "1 agent acts", "2 agents act"."""
    return f"{verb}s" if count == 1 else verb


def _money(amount: float) -> str:
    return f"${amount:,.4f}" if amount < 100 else f"${amount:,.2f}"


def _moment(iso: str) -> str:
    """`2025-03-03T08:00:00` as `2025-03-03 08:00`."""
    return iso.replace("T", " ")[:16]


def _person(agent: AgentPlan) -> str:
    """`Lisa Carter, 28, Data scientist` from whatever of those the persona has."""
    spec: Mapping[str, Any] = agent.persona or {}
    if agent.generate is not None:
        given = [str(spec[key]) for key in ("name", "age") if key in spec]
        return ", ".join([*given, f"generated: {' '.join(agent.generate.split())}"])
    occupation = spec.get("occupation")
    if isinstance(occupation, Mapping):
        occupation = occupation.get("title")
    parts = [spec.get("name"), spec.get("age"), occupation]
    return ", ".join(str(part) for part in parts if part not in (None, ""))


def _own_model(agent: AgentPlan) -> str:
    """` (model gpt-4o, temperature 0.2)` for an agent with its own settings, else ""."""
    parts = []
    if agent.model is not None:
        parts.append(f"model {agent.model}")
    if agent.temperature is not None:
        parts.append(f"temperature {agent.temperature:g}")
    return f" ({', '.join(parts)})" if parts else ""


def _summarize(values: Sequence[Any]) -> str:
    """A numeric attribute as range and mean, a categorical one as its top counts."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        mean = sum(values) / len(values)
        return f"{min(values)}..{max(values)}, mean {mean:.1f}"
    counts = sorted(Counter(str(v) for v in values).items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{label} {count}" for label, count in counts[:TOP_CATEGORIES])
    hidden = len(counts) - TOP_CATEGORIES
    return shown + (f" (+{hidden} more)" if hidden > 0 else "")


def _table(rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> list[str]:
    """Rows with columns padded to their widest cell; `right` columns are right-aligned."""
    if not rows:
        return []
    aligned = set(right)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


class _View:
    def __init__(self, plan: Plan, color: bool) -> None:
        self.plan = plan
        self.color = color
        self.agents_by_id = {agent.id: agent for agent in plan.agents}
        self.interventions_by_name = {item.name: item for item in plan.interventions}
        self.worlds_by_name = {world.name: world for world in plan.worlds}

    def _style(self, text: str, style: str) -> str:
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m" if self.color else text

    def _title(self, text: str) -> str:
        return self._style(text, "bold")

    # ------------------------------------------------------------ sections

    def header(self) -> str:
        plan = self.plan
        settings = plan.settings
        lines = [
            self._title(
                f"plan {settings.scenario}: {settings.title}"
                if settings.title
                else f"plan {settings.scenario}"
            )
        ]
        rows = [
            ["source", f"{plan.source_file} (sha256 {plan.source_hash[:12]})"],
            ["seed", str(settings.seed)],
            ["model", f"{self._model()}, temperature {settings.temperature:g}"],
            ["engine", settings.engine],
            *self._runs(),
            [
                "plan",
                f"{plan.plan_hash[:12]} ({_plural(len(plan.steps), 'step')}, "
                f"schema {plan.schema_version})",
            ],
        ]
        lines.extend(_truncate(line, WIDTH) for line in _table(rows))
        return "\n".join(lines)

    def _runs(self) -> list[list[str]]:
        """The replicates and the params' values, when the scenario has them."""
        plan = self.plan
        rows: list[list[str]] = []
        if plan.settings.replicates > 1:
            each = sum(step.calls for step in plan.steps if replicate_of(step.id) == 2)
            rows.append(
                [
                    "replicates",
                    f"{plan.settings.replicates}: the timeline runs on the same people each "
                    f"time, with other seeds ({_plural(each, 'LLM call')} each)",
                ]
            )
        if plan.params:
            shown = ", ".join(f"{name}={_param_text(value)}" for name, value in plan.params.items())
            rows.append(["params", shown])
        return rows

    def _embedded(self) -> bool:
        """Whether the plan runs on the embedded model, offline and free."""
        settings = self.plan.settings
        return (
            settings.provider in (None, "embedded") and self.plan.estimate.model == EMBEDDED_MODEL
        )

    def _model(self) -> str:
        settings = self.plan.settings
        if self._embedded():
            return f"embedded {EMBEDDED_MODEL} (offline, free)"
        text = self.plan.estimate.model
        if settings.provider is not None:
            text += f" via {settings.provider}"
        if not self.plan.estimate.priced:
            text += " (no known prices)"
        return text

    def agents(self) -> str:
        plan = self.plan
        lines = [self._title(f"agents: {len(plan.agents):,}")]
        personas = [agent for agent in plan.agents if agent.kind == "persona"]
        if personas:
            lines.append(f"  {_plural(len(personas), 'persona')}")
            rows = [[agent.id, _person(agent) + _own_model(agent)] for agent in personas]
            lines.extend(_truncate("  " + line, WIDTH) for line in _table(rows))
        for population in plan.populations:
            if population.source_path is not None:
                source = f"from {population.source_path}"
            elif population.demographics:
                source = f"from {population.demographics}"
            else:
                source = "generated from its context"
            first = self.agents_by_id[population.members[0]] if population.members else None
            lines.append(
                f"  population {population.name}: {_plural(population.size, 'member')} "
                f"{source}" + (_own_model(first) if first is not None else "")
            )
            for dimension in population.vary:
                lines.append(
                    _truncate(
                        f"    vary {dimension.name}: {dimension.values} values, "
                        f"{dimension.description}",
                        WIDTH,
                    )
                )
            by_segment: dict[str, list[AgentPlan]] = {name: [] for name in population.segments}
            for member_id in population.members:
                member = self.agents_by_id[member_id]
                by_segment[member.segment or ""].append(member)
            for name, size in population.segments.items():
                members = by_segment[name]
                lines.append(f"    segment {name}: {_plural(size, 'member')}")
                if not members:
                    continue
                attributes = list(dict.fromkeys(key for m in members for key in m.attributes))
                rows = [
                    [key, _summarize([m.attributes[key] for m in members if key in m.attributes])]
                    for key in attributes
                ]
                fragments = members[0].fragment_names
                if fragments:
                    rows.append(["fragments", ", ".join(fragments)])
                if members[0].particularities:
                    rows.append(["brief", members[0].particularities])
                lines.extend(_truncate("    " + line, WIDTH) for line in _table(rows))
        return "\n".join(lines)

    def external_agents(self) -> str:
        """The systems under test: how each is reached, and how many calls it gets."""
        if not self.plan.external_agents:
            return ""
        rows = []
        for external in self.plan.external_agents:
            calls = sum(
                step.external_calls
                for step in self.plan.steps
                if getattr(step, "partner", None) == external.name
                or getattr(step, "interviewer", None) == external.name
            )
            rows.append([external.name, external.protocol, _plural(calls, "call"), external.url])
        lines = [self._title("external agents (systems under test)")]
        lines.extend(_truncate(line, WIDTH) for line in _table(rows, right=[2]))
        return "\n".join(lines)

    def worlds(self) -> str:
        if not self.plan.worlds:
            return ""
        rows = []
        for world in self.plan.worlds:
            details = f"from {_moment(world.start)}"
            if world.moderator is not None:
                details += f", moderated by {world.moderator}"
            if world.turns == "sequential":
                details += ", turns sequential"
            rows.append([world.name, world.mode, _plural(len(world.agents), "agent"), details])
        return "\n".join([self._title("worlds"), *_table(rows, right=[2])])

    def interventions(self) -> str:
        if not self.plan.interventions:
            return ""
        lines = [self._title("interventions")]
        for intervention in self.plan.interventions:
            how = "stratified by segment" if intervention.assign == "stratified" else "random"
            targets = _plural(len(intervention.targets), "target")
            lines.append(
                f"  {intervention.name}: {intervention.channel or 'channel per message'}, "
                f"{targets}, {how}, "
                f"control {intervention.control:.0%}"
            )
            lines.extend("  " + line for line in self._arms(intervention))
        return "\n".join(lines)

    def _arms(self, intervention: InterventionPlan) -> list[str]:
        """Arm sizes, per segment when assignment was stratified."""
        arms = [variant.name for variant in intervention.variants]
        if intervention.control > 0:
            arms.append("control")
        strata: dict[str, Counter[str]] = {}
        if intervention.assign == "stratified":
            for target in intervention.targets:
                agent = self.agents_by_id[target]
                stratum = f"{agent.population}.{agent.segment}" if agent.population else "personas"
                strata.setdefault(stratum, Counter())[intervention.assignment[target]] += 1
        total = Counter(intervention.assignment.values())
        rows = [["arm", *arms]]
        rows.extend(
            [stratum, *(str(counts[arm]) for arm in arms)] for stratum, counts in strata.items()
        )
        rows.append(["total", *(str(total[arm]) for arm in arms)])
        return _table(rows, right=range(1, len(arms) + 1))

    def steps(self, covered: set[str] | None) -> str:
        plan = self.plan
        external = bool(plan.external_agents)
        header = ["id", "line", "does", "calls", "tokens", *(["external"] if external else [])]
        rows = [
            [
                step.id,
                self._origin(step.origin),
                "",
                f"{step.calls:,}",
                f"{step.input_tokens + step.output_tokens:,}",
                *([f"{step.external_calls:,}"] if external else []),
            ]
            for step in plan.steps
        ]
        # The description takes whatever the fixed width leaves after the other columns.
        numbers = (3, 4, 5) if external else (3, 4)
        fixed = sum(
            max(len(row[i]) for row in [header, *rows]) for i in (0, 1, *numbers)
        ) + 2 * len(header)
        marker = len(CACHED) + 2 if covered is not None else 0
        room = max(20, WIDTH - fixed - marker)
        for row, step in zip(rows, plan.steps, strict=True):
            row[2] = _truncate(_one_line(self._does(step)), room)
        if covered is not None:
            header.append("")
            for row, step in zip(rows, plan.steps, strict=True):
                row.append(self._style(CACHED, "green") if step.id in covered else "")
        lines = _table([header, *rows], right=[1, *numbers])
        lines[0] = self._style(lines[0], "dim")
        return "\n".join([self._title("steps"), *lines])

    def _origin(self, origin: Origin) -> str:
        """`15` for the scenario file, `stdlib/x.tts:15` for an imported one."""
        line = str(origin.line)
        return line if origin.file == self.plan.source_file else f"{origin.file}:{line}"

    def _does(self, step: Step) -> str:
        """One line saying what a step does."""
        n = _plural
        match step:
            case GenerateStep() if step.population is None:
                return f"generate {n(len(step.agents), 'persona')}: {', '.join(step.agents)}"
            case GenerateStep():
                return f"generate {n(len(step.agents), 'member')} of {step.population}"
            case ProposeStep():
                dimensions = ", ".join(f"{d.name} ({d.values})" for d in step.dimensions)
                return f"propose values for {step.population}: {dimensions}"
            case BroadcastStep():
                by = f" (said by {step.speaker})" if step.speaker else ""
                return f"broadcast to {step.world}{by}: {step.text}"
            case DeliverStep():
                arms = Counter(delivery.variant for delivery in step.deliveries)
                variants = self.interventions_by_name[step.intervention].variants
                sent = ", ".join(f"{v.name} {arms[v.name]}" for v in variants if arms[v.name])
                hear = _verb(len(step.control), "hear")
                control = f"; control {len(step.control)} {hear} nothing" if step.control else ""
                touch = f".{step.touch}" if step.touch is not None else ""
                return f"deliver {step.intervention}{touch} in {step.world}: {sent}{control}"
            case AskStep():
                return f"ask {n(len(step.agents), 'agent')} in {step.world}: {step.question}"
            case RunStep():
                agents = f"{n(len(step.agents), 'agent')} {_verb(len(step.agents), 'act')}"
                # Before the agents, so that the column's truncation keeps them.
                how = " in turn" if self.worlds_by_name[step.world].turns == "sequential" else ""
                if step.every is not None:
                    how += f", then +{_duration(step.every)}"
                return f"run {step.world} round {step.round} of {step.of}{how}: {agents}"
            case WaitStep():
                return f"wait {step.text}"
            case InterviewStep():
                questions = " / ".join(step.questions)
                return f"{step.interviewer} interviews {n(len(step.agents), 'agent')}: {questions}"
            case ThinkStep():
                if len(step.agents) == 1:
                    return f"{step.agents[0]} thinks: {step.text}"
                return f"{n(len(step.agents), 'agent')} think: {step.text}"
            case CheckpointStep():
                return f"checkpoint {step.name}"
            case TellStep():
                return f"tell {n(len(step.agents), 'agent')}, each answers: {step.text}"
            case ConverseStep():
                turns = n(step.turns, "turn")
                return (
                    f"{n(len(step.agents), 'agent')} each talk 1:1 with {step.partner}, "
                    f"{turns} each: {step.goal}"
                )
            case GoalStep():
                return f"goal for {n(len(step.agents), 'agent')}: {step.text}"
            case ContextStep():
                agents = n(len(step.agents), "agent")
                return f"context of {step.world} changes for {agents}: {step.text}"
            case ExtractStep():
                fields = ", ".join(field.name for field in step.fields)
                at = f" at {step.at}" if step.at else ""
                if step.world is None:
                    source = ", ".join(step.group)
                    agents = n(len(step.agents), "agent")
                    return f"extract from {agents} of {source} (whole memory){at}: {fields}"
                return f"extract from {n(len(step.agents), 'agent')} in {step.world}{at}: {fields}"
            case ExtractOverallStep():
                fields = ", ".join(field.name for field in step.fields)
                at = f" at {step.at}" if step.at else ""
                return f"extract overall from {step.world} (1 record){at}: {fields}"
            case AnalyzeStep():
                return "analyze: " + "; ".join(analysis.text for analysis in step.analyses)
            case ReplicateStep():
                start = step.after or "setup"
                of = self.plan.settings.replicates
                return f"replicate {step.replicate} of {of}: restart after {start}"
        raise AssertionError(f"unknown step kind {step.kind}")

    def totals(self) -> str:
        estimate = self.plan.estimate
        settings = self.plan.settings
        lines = [self._title("total")]
        rows = [
            ["calls", self._calls()],
            *self._re_asks(),
            *self._judge(),
            *self._external_calls(),
            [
                "tokens",
                f"{estimate.input_tokens + estimate.output_tokens:,} "
                f"({estimate.input_tokens:,} in, {estimate.output_tokens:,} out; estimated)",
            ],
        ]
        if self._embedded():
            rows.append(["cost", "$0.00 (embedded model)"])
        elif estimate.priced:
            rows.append(["cost", f"{_money(estimate.cost_usd)} at {estimate.model} prices"])
        else:
            rows.append(["cost", self._style(f"unknown: no prices for {estimate.model}", "yellow")])
        if settings.budget_usd is not None:
            rows.append(["budget", self._budget(settings.budget_usd)])
        lines.extend(_table(rows))
        return "\n".join(lines)

    def _re_asks(self) -> list[list[str]]:
        """`quality { regenerate N }`: the most calls that re-asking flagged turns adds."""
        times = self.plan.settings.regenerate
        if not times:
            return []
        turns = sum(
            step.calls - step.judge_calls
            for step in self.plan.steps
            if step.kind in TURN_STEP_KINDS
        )
        return [
            [
                "re-asks",
                f"up to {_plural(times * turns, 'more call')}: a flagged agent turn is asked "
                f"again up to {times} {'time' if times == 1 else 'times'}",
            ]
        ]

    def _judge(self) -> list[list[str]]:
        """`quality { judge [...] }`: the judge's calls, included in the total."""
        settings = self.plan.settings
        if not settings.judge:
            return []
        calls = sum(step.judge_calls for step in self.plan.steps)
        return [
            [
                "judge",
                f"{_plural(calls, 'call')} of those: every agent turn scored on "
                f"{', '.join(settings.judge)}; below {settings.judge_threshold} is flagged",
            ]
        ]

    def _external_calls(self) -> list[list[str]]:
        calls = self.plan.estimate.external_calls
        if not self.plan.external_agents:
            return []
        return [
            [
                "external",
                f"{_plural(calls, 'call')} to systems under test, recorded: "
                "a re-run or --replay needs no bot",
            ]
        ]

    def _calls(self) -> str:
        calls = self.plan.estimate.calls
        limit, default = call_limit(self.plan)
        name = "the default limit" if default else "max_calls"
        counted = _plural(calls, "LLM call")
        if calls > limit:
            return self._style(
                f"{counted}, over {name} of {limit:,}: `tts run` refuses to start", "yellow"
            )
        return f"{counted}, limit {limit:,}" + (
            " (the default; `max_calls` sets it)" if default else " (max_calls)"
        )

    def _budget(self, budget: float) -> str:
        estimate = self.plan.estimate
        if not estimate.priced:
            return self._style(f"{usd(budget)}, cannot be checked without prices", "yellow")
        crossing = budget_crossing(self.plan)
        if crossing is not None:
            step, _running = crossing
            return self._style(
                f"{usd(budget)}, exceeded by {_money(estimate.cost_usd - budget)} at "
                f"{step.id}: `tts run` refuses to start",
                "yellow",
            )
        used = estimate.cost_usd / budget if budget else 0.0
        return f"{usd(budget)}, headroom {_money(budget - estimate.cost_usd)} ({used:.1%} used)"


def _param_text(value: str | int | float) -> str:
    """A param's value on one line: strings quoted, long ones shortened."""
    if isinstance(value, str):
        return '"' + _truncate(_one_line(value), 40) + '"'
    return f"{value:g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    """Seconds in the largest unit that divides them (`2 hours`, `90 minutes`)."""
    for unit, size in (("week", 604_800), ("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return _plural(int(seconds // size), unit)
    return _plural(round(seconds), "second")
