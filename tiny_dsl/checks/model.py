"""The checked model: a scenario with every import, name and value resolved.

`tiny_dsl.checks.check_file` builds it from syntax trees; `tiny_dsl.plan`
lowers it to an execution plan. Everything here is already validated: a later
stage may rely on names resolving and values being in range. Spans are kept so
that plan steps and run-time errors can point back at the source.

No syntax node survives into this model: timeline steps and analyses are
lowered here too (references resolved, numbers read, texts unquoted), so a
later stage never re-interprets the source. Adding a step kind means one
dataclass here, its lowering in `checks/steps.py` and its mapping in
`plan/compile.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from tiny_dsl.source import SourceFile, Span

WorldMode = Literal["survey", "focus_group", "interview"]
Timing = Literal["morning", "afternoon", "evening"]
# The simulated hour each named timing stands for (a `"HH:MM"` timing is exact).
TIMING_HOURS: dict[str, int] = {"morning": 9, "afternoon": 14, "evening": 19}


@dataclass(frozen=True)
class Quality:
    """The scenario's `quality` block."""

    # A flagged turn is asked again, with another seed, up to `regenerate` times (0: never).
    regenerate: int = 0
    # Model-judged criteria, scored 0-9 for every agent turn after the run (none: no judge);
    # a turn scoring below `threshold` on one is flagged.
    judge: tuple[str, ...] = ()
    threshold: int = 7


@dataclass(frozen=True)
class Settings:
    """`scenario NAME { ... }` with defaults applied."""

    name: str
    title: str
    description: str
    seed: int
    model: str | None  # None: the provider's default (embedded: SmolLM2-135M-Instruct)
    provider: str | None  # None: chosen from the model name and environment at run time
    base_url: str | None
    temperature: float
    budget_usd: float | None
    max_concurrency: int
    max_calls: int | None
    engine: Literal["builtin", "tinytroupe"]
    span: Span
    # The `budget` and `max_calls` properties as written (None: not set), for
    # the plan's warnings and refusals to point at.
    budget_span: Span | None
    max_calls_span: Span | None
    # How many times the timeline runs on the same people (`replicates N`, 1..50),
    # and where `replicates` is written (None: not written).
    replicates: int = 1
    replicates_span: Span | None = None
    quality: Quality = field(default_factory=Quality)


@dataclass(frozen=True)
class Persona:
    """A person. `spec` is TinyTroupe's `persona` object with fragments merged."""

    name: str  # the declaration name used in references
    spec: dict[str, Any]
    fragments: tuple[str, ...]
    source_path: str | None  # the `.agent.json` file for `persona x from "..."`
    span: Span
    # `persona x { generate "..." }`: the model writes the persona from this description
    # (and `generate_context`); `spec` then holds only the fields written, which overwrite
    # the generated ones, and `fragments` are merged after generation, not into `spec`.
    generate: str | None = None
    generate_context: str = ""
    # `model` / `temperature` in the block: this agent's calls use them (None: the scenario's).
    llm: AgentModel | None = None


@dataclass(frozen=True)
class AgentModel:
    """`model "..."` and `temperature x` in a persona or population: the model and
    temperature of that agent's (each member's) turns, extractions and generation."""

    model: str | None  # None: the scenario's model
    temperature: float | None  # None: the scenario's temperature
    span: Span  # the `model` property if written, else the `temperature` one


@dataclass(frozen=True)
class ExternalAgent:
    """`agent NAME external { ... }`: a system under test reached over HTTP.

    `url`, `request` and the header values are templates: `{env.NAME}` stays as
    written until the call is made, so no secret is ever in the program or plan."""

    name: str
    url: str
    protocol: Literal["openai_chat", "http_json"]
    model: str | None  # openai_chat: the `model` sent (None: the agent's name)
    request: str | None  # http_json: the JSON template posted
    reply: str | None  # http_json: the dotted path of the reply in the JSON answer
    headers: tuple[tuple[str, str], ...]
    timeout_s: float
    span: Span


@dataclass(frozen=True)
class Fragment:
    name: str
    spec: dict[str, Any]  # TinyTroupe `.fragment.json` `persona` object
    source_path: str | None
    span: Span


@dataclass(frozen=True)
class Share:
    """One outcome of a distribution: a label or a numeric range, and its share (0..1)."""

    label: str
    share: float
    low: float | None = None  # set for numeric ranges such as age brackets
    high: float | None = None


@dataclass(frozen=True)
class Distribution:
    attribute: str  # age, gender, region, income, education, occupation, ...
    shares: tuple[Share, ...]
    span: Span

    @property
    def is_numeric(self) -> bool:
        return all(s.low is not None for s in self.shares)


@dataclass(frozen=True)
class Demographics:
    name: str
    title: str
    description: str
    source: str
    distributions: tuple[Distribution, ...]
    span: Span
    # `demographics NAME from "file.json"`: the TinyTroupe demography file read, whose
    # text keys are in `description` for the model
    source_path: str | None = None


@dataclass(frozen=True)
class Constraint:
    """A segment's constraint on a sampled attribute: a numeric range or allowed labels."""

    attribute: str
    low: float | None = None
    high: float | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Segment:
    name: str
    size: int
    constraints: tuple[Constraint, ...]
    particularities: str
    fragments: tuple[str, ...]
    span: Span


@dataclass(frozen=True)
class VaryDimension:
    """`vary NAME "what varies" [N values]`: a sampling dimension the model proposes
    values for once per population; each member draws one by code, quota exact."""

    name: str  # an attribute like `age`: the results' `persona_<name>` column
    description: str
    values: int  # how many values the model proposes
    span: Span


@dataclass(frozen=True)
class LoadedMember:
    """A person of a `population NAME from "path"`, read and validated, fragments merged."""

    id: str  # the agent is `population/<id>`
    spec: dict[str, Any]  # TinyTroupe's `persona` object
    model: str | None = None  # None: the scenario's
    temperature: float | None = None


@dataclass(frozen=True)
class Population:
    name: str
    demographics: str  # "" for a population read from files
    size: int
    segments: tuple[Segment, ...]  # declared segments, then `general` if any remainder
    context: str
    span: Span
    vary: tuple[VaryDimension, ...] = ()
    # `demographics` is "" for a population without `from` (members generated from text).
    # Applied to every member (a segment's own particularities are appended).
    particularities: str = ""
    llm: AgentModel | None = None
    # `population NAME from "path"`: every person the path holds, in file order (a
    # `size` below their number is a seeded sample of them, drawn at plan time)
    members: tuple[LoadedMember, ...] = ()
    source_path: str | None = None  # the `from` path as written


@dataclass(frozen=True)
class GroupRef:
    """One item of a group: a persona, a whole population, or a segment."""

    kind: Literal["persona", "population", "segment"]
    name: str  # persona or population name
    segment: str | None = None
    span: Span | None = field(default=None, compare=False)

    def text(self) -> str:
        return f"{self.name}.{self.segment}" if self.segment else self.name


Turns = Literal["simultaneous", "sequential"]


@dataclass(frozen=True)
class World:
    name: str
    mode: WorldMode
    agents: tuple[GroupRef, ...]
    moderator: str | None
    context: str
    start: datetime
    span: Span
    # sequential: within a round agents act one after another in `agents` order
    turns: Turns = "simultaneous"


@dataclass(frozen=True)
class Touch:
    """`touch NAME { channel; timing; content }`: one message of a multi-touch variant.

    `channel` is resolved: the touch's own, else its variant's, else the intervention's.
    """

    name: str
    content: str
    timing: str | None
    channel: str
    span: Span


@dataclass(frozen=True)
class Variant:
    name: str
    content: str  # "" when the variant has touches
    timing: str | None  # "morning" / "afternoon" / "evening" / "HH:MM"
    span: Span
    # the variant's own channel (None: the intervention's, which only a variant whose
    # touches all set their own may lack)
    channel: str | None = None
    touches: tuple[Touch, ...] = ()  # in the order written; every variant has the same names


@dataclass(frozen=True)
class Intervention:
    name: str
    channel: str | None  # None: every variant or touch sets its own
    targets: tuple[GroupRef, ...]
    control: float  # fraction 0..1 of targets that receive nothing
    assign: Literal["random", "stratified"]
    stratify_by: str | None  # "segment" when stratified
    variants: tuple[Variant, ...]
    span: Span


FieldKind = Literal["int", "float", "bool", "text", "enum", "list", "rank"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: FieldKind
    description: str
    low: float | None = None
    high: float | None = None
    members: tuple[str, ...] = ()
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Extraction:
    """`extract [overall] from SOURCE [at CHECKPOINT]`.

    `world` is the world a world source names, None for a group source (whose
    members' whole memories are read); `at` the checkpoint the extraction
    reads up to (None: the end of the timeline); `overall` one record for the
    world instead of one row per agent.
    """

    world: str | None
    fields: tuple[FieldSpec, ...]
    span: Span
    group: tuple[GroupRef, ...] = ()
    at: str | None = None
    overall: bool = False


@dataclass(frozen=True)
class OutputSpec:
    formats: tuple[str, ...]
    dir: str | None  # None: outputs/<scenario>
    span: Span | None


# ------------------------------------------------------------------ timeline


@dataclass(frozen=True)
class BroadcastStep:
    """`broadcast WORLD "text"`: the world hears the text (from its moderator, if any)."""

    world: str
    text: str
    span: Span


@dataclass(frozen=True)
class DeliverStep:
    """`deliver INTERVENTION in WORLD`.

    `elapsed` is the simulated time the `wait` steps before this one add to the
    world's start: each variant is delivered at its timing on that day.
    """

    intervention: str
    world: str
    elapsed: timedelta
    span: Span
    touch: str | None = None  # `deliver I.TOUCH`: the touch of a multi-touch intervention


@dataclass(frozen=True)
class AskStep:
    """`ask WORLD "question"`: every agent of the world answers."""

    world: str
    question: str
    span: Span


@dataclass(frozen=True)
class RunStep:
    """`run WORLD N rounds [every DURATION]`: the world's agents talk for `rounds` rounds.

    `every`: after each round the clock of the world (each of its agents) moves on by it.
    """

    world: str
    rounds: int
    span: Span
    every: timedelta | None = None


@dataclass(frozen=True)
class WaitStep:
    """`wait AMOUNT UNIT`: the simulated clock moves `seconds` forward."""

    seconds: float
    written: str  # the duration as written, e.g. "3 days"
    span: Span


@dataclass(frozen=True)
class InterviewStep:
    """`interview GROUP by INTERVIEWER "q1", "q2"`."""

    group: tuple[GroupRef, ...]
    interviewer: str  # a persona not in the group, or an external agent
    questions: tuple[str, ...]
    span: Span


@dataclass(frozen=True)
class ThinkStep:
    """`think GROUP "text"`: every member of the group thinks the text."""

    group: tuple[GroupRef, ...]
    text: str
    span: Span


@dataclass(frozen=True)
class TellStep:
    """`tell GROUP "text"`: the experimenter says the text to each member, who answers
    (one turn each, outside any world; members do not hear each other)."""

    group: tuple[GroupRef, ...]
    text: str
    span: Span


@dataclass(frozen=True)
class ConverseStep:
    """`converse GROUP with PARTNER N turns "goal"`: a separate 1:1 conversation per member.

    `partner` is who answers the member: a persona (not in the group), which
    starts every conversation from its state before the step and keeps none,
    or an external agent, which gets one session per conversation.
    """

    group: tuple[GroupRef, ...]
    partner: str
    turns: int  # turns on each side
    goal: str  # the member's goal for the length of the conversation
    span: Span


@dataclass(frozen=True)
class GoalStep:
    """`goal GROUP "text"`: each member internalises the goal, kept for later turns."""

    group: tuple[GroupRef, ...]
    text: str
    span: Span


@dataclass(frozen=True)
class ContextStep:
    """`context WORLD "text"`: the situation of the world changes, for everyone in it."""

    world: str
    text: str
    span: Span


@dataclass(frozen=True)
class CheckpointStep:
    """`checkpoint NAME`: a point a run can be resumed or inspected from."""

    name: str
    span: Span


Step = (
    BroadcastStep
    | DeliverStep
    | AskStep
    | RunStep
    | WaitStep
    | InterviewStep
    | ThinkStep
    | CheckpointStep
    | TellStep
    | ConverseStep
    | GoalStep
    | ContextStep
)


# ------------------------------------------------------------------ analyses


@dataclass(frozen=True)
class Grouping:
    """What `by G` groups rows by: an intervention's arms, or a result column.

    `column` is None for an intervention's arms (`by campaign`, `by variant`);
    otherwise the row column (`segment`, `world`, `replicate`, `persona_income`).
    `brackets` are set for a numeric demographics attribute: its values are grouped
    by the distribution's brackets, in bracket order.
    """

    name: str  # as written: `campaign`, `variant`, `income`, ...
    column: str | None
    intervention: str | None = None
    brackets: tuple[Share, ...] = ()


@dataclass(frozen=True)
class CompareAnalysis:
    """`compare FIELD by G`."""

    field: str
    by: str  # as written
    text: str  # the statement as written, whitespace collapsed
    span: Span
    grouping: Grouping | None = None


@dataclass(frozen=True)
class SummarizeAnalysis:
    """`summarize FIELD by G`."""

    field: str
    by: str  # as written
    text: str
    span: Span
    grouping: Grouping | None = None


@dataclass(frozen=True)
class FunnelAnalysis:
    """`funnel F1, F2, ...`: the share of agents that reach each stage."""

    fields: tuple[str, ...]
    text: str
    span: Span


@dataclass(frozen=True)
class RowFilter:
    """`for GROUP` (`agents`: its members' ids, resolved at plan time from `group`) or
    `for ATTRIBUTE == value` (`column` and `value`)."""

    text: str  # as written, after `for`
    group: tuple[GroupRef, ...] = ()
    column: str | None = None
    comparator: str | None = None  # `==` or `!=`
    value: str | None = None


@dataclass(frozen=True)
class Aggregate:
    """`mean(field)`, `share(field == member)`, `share(field >= 4)`, `share(field in [4, 5])`,
    or a validation metric (`ks(field)`), optionally `for` some rows."""

    function: str  # mean, median, sd, share, count, or a metric of `validate`
    field: str
    comparator: str | None = None  # ==, !=, >, <, >=, <= or in
    member: str | float | None = None  # what the field is compared with
    members: tuple[str | float, ...] = ()  # for `in [..]`
    filter: RowFilter | None = None


@dataclass(frozen=True)
class ExpectAnalysis:
    """`expect AGG between LOW and HIGH`, `expect AGG OP BOUND` or `expect AGG OP AGG`.

    Bounds are numbers; a percentage is read as its fraction (`40%` is 0.4).
    `low` and `high` are set for `between`, `bound` or `other` for every other comparator.
    """

    aggregate: Aggregate
    comparator: str  # between, >, <, >=, <=, == or !=
    text: str
    span: Span
    low: float | None = None
    high: float | None = None
    bound: float | None = None
    other: Aggregate | None = None


@dataclass(frozen=True)
class ValidateAnalysis:
    """`validate FIELD against "real.csv" column "C"` (real answers, `real`) or
    `validate FIELD by G against "margins.csv"` (real group margins, `margins`)."""

    field: str
    path: str  # as written
    sha256: str  # of the file read, so that a changed file changes the plan
    text: str
    span: Span
    column: str | None = None
    real: tuple[str | float, ...] = ()
    grouping: Grouping | None = None
    statistic: str | None = None  # `mean` or `share`: the margins' column
    margins: tuple[tuple[str, float], ...] = ()


Analysis = CompareAnalysis | SummarizeAnalysis | FunnelAnalysis | ExpectAnalysis | ValidateAnalysis


@dataclass
class Program:
    """A checked, runnable scenario and everything it imports."""

    root: str  # path of the file that was checked
    sources: dict[str, SourceFile]  # every file read, by display path
    settings: Settings
    personas: dict[str, Persona]
    fragments: dict[str, Fragment]
    demographics: dict[str, Demographics]
    populations: dict[str, Population]
    worlds: dict[str, World]
    interventions: dict[str, Intervention]
    timeline: tuple[Step, ...]
    extractions: tuple[Extraction, ...]
    analyses: tuple[Analysis, ...]
    output: OutputSpec
    # `param NAME value` after `--set`, in declaration order (strings already substituted).
    params: dict[str, str | int | float] = field(default_factory=dict)
    external_agents: dict[str, ExternalAgent] = field(default_factory=dict)
