"""The execution plan: what a run will do, self-contained and serialisable.

A plan carries everything the runtime needs (resolved settings, every agent's
persona, worlds, interventions with their assignments, extraction schemas and
analyses), so `tts run plan.json` never re-reads the scenario source. Steps are
ordered; each has a readable, stable id, the source origin it came from, and a
chained content hash: the hash of step k covers steps 1..k and every definition
they depend on, so a later run can tell which prefix of a plan is unchanged.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from tiny_dsl.source import Span

SCHEMA_VERSION = 2


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fields added after the first version of the language whose default keeps the
    # earlier behaviour. While at their default they are left out of the form the
    # plan's hashes cover, so a scenario that does not use them keeps its step
    # hashes, and its cached answers and checkpoints stay valid.
    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset()

    def hash_form(self, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The JSON form the plan's hashes cover: `model_dump` without `exclude` and
        without the hash-neutral fields (here and in nested models) at their default."""
        return self.model_dump(mode="json", exclude=_hash_exclusions(self, exclude))


class PlanSettings(_Model):
    scenario: str
    title: str
    description: str = ""
    seed: int
    model: str | None
    provider: str | None
    base_url: str | None = None
    temperature: float
    budget_usd: float | None
    max_concurrency: int
    max_calls: int | None
    engine: Literal["builtin", "tinytroupe"]
    # `replicates N`: the timeline runs N times on the same people. Never hashed
    # (`hashing.base_hash`): replicate 1's steps are the same whatever N is, so
    # going from 1 to 2 replicates keeps replicate 1's checkpoints.
    replicates: int = 1
    # `quality { regenerate N }`: a flagged turn is asked again up to N times. It changes
    # answers, so it is hashed (but not at its default, which keeps earlier hashes).
    regenerate: int = 0
    # `quality { judge [...]; threshold T }`: the criteria the model scores 0-9 for every
    # agent turn as its step ends, and the score below which a turn is flagged. Hashed
    # (a step's checkpoint holds its scores) but not at their defaults.
    judge: list[str] = Field(default_factory=list)
    judge_threshold: int = 7

    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset(
        {"replicates", "regenerate", "judge", "judge_threshold"}
    )


class AgentPlan(_Model):
    """One simulated person.

    `persona` is the TinyTroupe persona object for declared personas. Population
    members start from `attributes` sampled from their demographics and are
    fleshed out by a `generate` step; `fragments` are merged after generation.
    """

    id: str  # `lisa` for a persona, `consumers/007` for a population member
    kind: Literal["persona", "member"]
    persona: dict[str, Any] | None = None
    population: str | None = None
    segment: str | None = None
    index: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    particularities: str = ""
    fragments: list[dict[str, Any]] = Field(default_factory=list)  # fragment persona objects
    fragment_names: list[str] = Field(default_factory=list)
    # A persona `{ generate "..." }`: the description (and context) the model writes it
    # from; `persona` then holds the fields written, which overwrite the generated ones,
    # and `fragments` are merged after generation, as for members.
    generate: str | None = None
    generate_context: str = ""
    # The agent's own model and temperature (None: the scenario's), and where the
    # author set them, for a run-start error to point at.
    model: str | None = None
    temperature: float | None = None
    model_origin: Origin | None = None
    # `vary` dimension -> the slot (0..N-1) of the proposed value this member takes,
    # drawn at plan time so that each value is used floor/ceil(size / N) times.
    vary_slots: dict[str, int] = Field(default_factory=dict)

    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset(
        {"generate", "generate_context", "model", "temperature", "model_origin", "vary_slots"}
    )

    @property
    def defined(self) -> bool:
        """Whether the persona is whole in the plan, so the agent exists from the start:
        a declared persona that is not generated, or a member read from files
        (`population ... from "path"`). The others are made by a `generate` step."""
        if self.kind == "persona":
            return self.generate is None
        return self.persona is not None


class VaryPlan(_Model):
    """`vary NAME "what varies" N values`: a dimension whose values the model proposes."""

    name: str
    description: str
    values: int


class PopulationPlan(_Model):
    name: str
    demographics: str  # "" for a population without `from`
    demographics_description: str
    size: int
    segments: dict[str, int]  # segment name -> size (including `general`)
    context: str = ""
    members: list[str]  # agent ids
    particularities: str = ""  # the population's own, already in each member's
    vary: list[VaryPlan] = Field(default_factory=list)
    # `population NAME from "path"`: the folder or file its members were read from
    # (they need no `generate` step: their personas are in the plan)
    source_path: str | None = None

    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset({"particularities", "vary", "source_path"})


class WorldPlan(_Model):
    name: str
    mode: Literal["survey", "focus_group", "interview"]
    agents: list[str]
    moderator: str | None
    context: str
    start: str  # ISO 8601 simulated start time
    # sequential: within a round agents act one after another in `agents` order, each
    # hearing the turns before its own; simultaneous: all act on the round's start state
    turns: Literal["simultaneous", "sequential"] = "simultaneous"

    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset({"turns"})


class ExternalAgentPlan(_Model):
    """`agent NAME external { ... }`: a system under test reached over HTTP.

    `url`, `headers` and `request` are templates: `{env.NAME}` is filled in from the
    environment only when a call is made, so no secret is in the plan."""

    name: str
    url: str
    protocol: Literal["openai_chat", "http_json"]
    model: str | None = None  # openai_chat: the `model` sent (None: the agent's name)
    request: str | None = None  # http_json: the JSON template posted
    reply: str | None = None  # http_json: the dotted path of the reply in the answer
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float


class TouchPlan(_Model):
    """One message of a multi-touch variant, its channel and timing resolved."""

    name: str
    content: str
    timing: str | None
    channel: str


class VariantPlan(_Model):
    name: str
    content: str  # "" for a variant of touches
    timing: str | None
    touches: list[TouchPlan] = Field(default_factory=list)

    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset({"touches"})


class InterventionPlan(_Model):
    name: str
    channel: str | None  # None: every variant or touch sets its own
    control: float
    assign: Literal["random", "stratified"]
    variants: list[VariantPlan]
    targets: list[str]
    # agent id -> variant name or "control"; fixed at plan time from the seed
    assignment: dict[str, str]


class FieldPlan(_Model):
    name: str
    kind: Literal["int", "float", "bool", "text", "enum", "list", "rank"]
    description: str = ""
    low: float | None = None
    high: float | None = None
    members: list[str] = Field(default_factory=list)


class Origin(_Model):
    """Where a step or analysis comes from: the statement's region in its source file.

    The same fields as `tiny_dsl.source.Span`, so any later stage (an estimate that
    is too high, a step that failed at run time) can point at the author's line
    with a caret; `str()` gives the `file:line:col` form editors understand.
    """

    file: str
    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def of(cls, span: Span) -> Origin:
        return cls(
            file=span.file,
            start=span.start,
            end=span.end,
            line=span.line,
            column=span.column,
            end_line=span.end_line,
            end_column=span.end_column,
        )

    def span(self) -> Span:
        return Span(
            self.file,
            self.start,
            self.end,
            self.line,
            self.column,
            self.end_line,
            self.end_column,
        )

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class _Step(_Model):
    id: str
    origin: Origin  # the statement this step comes from
    hash: str = ""  # chained hash, filled in by the compiler
    calls: int = 0  # LLM calls this step will make
    input_tokens: int = 0  # estimated
    output_tokens: int = 0  # estimated
    external_calls: int = 0  # calls to external agents (systems under test), apart
    judge_calls: int = 0  # of `calls`: the judge's, one per agent turn (`quality { judge }`)


# The steps whose calls are agent turns: what `quality` may re-ask and judge.
TURN_STEP_KINDS = frozenset({"ask", "run", "tell", "converse", "interview"})


class GenerateStep(_Step):
    """One persona call per agent: members of `population`, or (`population` None,
    the step `generate-personas`) the personas declared with `generate`."""

    kind: Literal["generate"] = "generate"
    population: str | None
    agents: list[str]


class ProposeStep(_Step):
    """One call proposing the values of every `vary` dimension of `population`,
    right before its `generate` step; each member then takes the value of its slot."""

    kind: Literal["propose"] = "propose"
    population: str
    dimensions: list[VaryPlan]


class BroadcastStep(_Step):
    kind: Literal["broadcast"] = "broadcast"
    world: str
    text: str
    speaker: str | None  # the moderator, if the world has one


class Delivery(_Model):
    agent: str
    variant: str
    content: str
    channel: str
    time: str | None  # ISO time the simulated clock is set to, from the variant's timing


class DeliverStep(_Step):
    kind: Literal["deliver"] = "deliver"
    intervention: str
    world: str
    deliveries: list[Delivery]
    control: list[str]  # agents in the control group: they hear nothing
    touch: str | None = None  # the touch delivered, for a multi-touch intervention

    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset({"touch"})


class AskStep(_Step):
    kind: Literal["ask"] = "ask"
    world: str
    question: str
    agents: list[str]


class RunStep(_Step):
    kind: Literal["run"] = "run"
    world: str
    round: int  # 1-based
    of: int
    agents: list[str]
    every: float | None = None  # seconds the world's clock moves on after this round

    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset({"every"})


class WaitStep(_Step):
    kind: Literal["wait"] = "wait"
    seconds: float
    text: str  # as written, e.g. "3 days"


class InterviewStep(_Step):
    """`interviewer` asks each agent every question in turn. An external agent as the
    interviewer also hears each answer and replies to it, in one session per agent."""

    kind: Literal["interview"] = "interview"
    interviewer: str
    agents: list[str]
    questions: list[str]


class ThinkStep(_Step):
    kind: Literal["think"] = "think"
    agents: list[str]
    text: str


class CheckpointStep(_Step):
    kind: Literal["checkpoint"] = "checkpoint"
    name: str


class TellStep(_Step):
    """The experimenter says `text` to each agent, outside any world; each answers once."""

    kind: Literal["tell"] = "tell"
    agents: list[str]
    text: str


class ConverseStep(_Step):
    """A separate 1:1 conversation of each agent with `partner`, the agent speaking first.

    `partner` is who answers the agent: a persona's agent id, which starts every
    conversation from its state before the step and keeps none of them, or the
    name of an external agent (`Plan.external_agents`), one session per agent.
    """

    kind: Literal["converse"] = "converse"
    agents: list[str]
    partner: str
    turns: int  # on each side
    goal: str


class GoalStep(_Step):
    kind: Literal["goal"] = "goal"
    agents: list[str]
    text: str


class ContextStep(_Step):
    """The situation of `world` changes to `text` for everyone in it."""

    kind: Literal["context"] = "context"
    world: str
    agents: list[str]
    text: str


class ExtractStep(_Step):
    """One row per agent: from the agent's events in `world`, or, for a group source
    (`world` None, `group` as written), from the agent's whole memory. `at` is the
    checkpoint the step is placed after (None: after the timeline)."""

    HASH_NEUTRAL = frozenset({"group", "at"})
    kind: Literal["extract"] = "extract"
    world: str | None
    agents: list[str]
    fields: list[FieldPlan]
    group: list[str] = Field(default_factory=list)
    at: str | None = None


class ExtractOverallStep(_Step):
    """`extract overall from WORLD`: one record for the world, from its whole transcript
    (every agent's events in it, `agents` in world order); placed as `ExtractStep`."""

    kind: Literal["extract_overall"] = "extract_overall"
    world: str
    agents: list[str]
    fields: list[FieldPlan]
    at: str | None = None


class ReplicateStep(_Step):
    """Replicate `replicate` (2..N) starts: the simulation returns to its state right
    after the step `after` (the last people step; None: right after setup), so the
    timeline runs again on the same people and assignment. No model call; the
    copies of the timeline that follow have ids `<id>@r<replicate>`, hence other
    derived seeds and other cache keys."""

    kind: Literal["replicate"] = "replicate"
    replicate: int
    after: str | None


REPLICATE_MARK = "@r"


def replicate_of(step_id: str) -> int:
    """The replicate a step belongs to: 1 for today's ids, r for `<id>@r<r>`."""
    _, mark, number = step_id.rpartition(REPLICATE_MARK)
    return int(number) if mark and number.isdigit() else 1


def replicate_id(step_id: str, replicate: int) -> str:
    """The id of replicate `replicate`'s copy of a replicate-1 step."""
    return step_id if replicate == 1 else f"{step_id}{REPLICATE_MARK}{replicate}"


class BracketPlan(_Model):
    """A numeric demographics bracket that groups an attribute's values."""

    label: str
    low: float
    high: float


class RowFilterPlan(_Model):
    """`for GROUP` (`agents`) or `for ATTRIBUTE == value` (`column`, `comparator`, `value`)."""

    text: str
    agents: list[str] | None = None
    column: str | None = None
    comparator: str | None = None
    value: str | None = None


class AggregatePlan(_Model):
    """The right-hand side of `expect AGG OP AGG`."""

    aggregate: str
    field: str
    match_comparator: str | None = None
    match_value: Any = None
    match_values: list[Any] = Field(default_factory=list)
    filter: RowFilterPlan | None = None


class AnalysisPlan(_Model):
    """One `analyze` statement, resolved."""

    kind: Literal["compare", "summarize", "funnel", "expect", "validate"]
    origin: Origin
    field: str | None = None
    fields: list[str] = Field(default_factory=list)
    by: str | None = None  # intervention (compare) or grouping (summarize)
    aggregate: str | None = None  # mean, median, sd, share, count, or a validation metric
    comparator: str | None = None  # for expect: between, >, <, >=, <=, ==, !=; share(f == v)
    match_value: Any = None
    # the comparison inside the aggregate: `share(f == member)` -> "==" (None: none)
    match_comparator: str | None = None
    low: float | None = None  # `expect ... between low and high`
    high: float | None = None
    bound: float | None = None  # `expect ... > bound` (any comparator but `between`)
    text: str = ""  # the statement as written, for reports
    # `by` an attribute: the row column (`persona_income`) and, for a numeric
    # demographics attribute, the brackets its values are grouped by
    column: str | None = None
    brackets: list[BracketPlan] = Field(default_factory=list)
    match_values: list[Any] = Field(default_factory=list)  # `share(f in [4, 5])`
    filter: RowFilterPlan | None = None  # `AGG(f) for ...`
    other: AggregatePlan | None = None  # `expect AGG OP AGG`
    # validate: the file (as written, and its sha256), and the real answers of
    # `column`, or the real group margins of `statistic` (mean or share) by `by`
    path: str | None = None
    sha256: str | None = None
    real: list[Any] = Field(default_factory=list)
    statistic: str | None = None
    margins: dict[str, float] = Field(default_factory=dict)
    real_column: str | None = None

    HASH_NEUTRAL: ClassVar[frozenset[str]] = frozenset(
        {
            "column",
            "brackets",
            "match_values",
            "filter",
            "other",
            "path",
            "sha256",
            "real",
            "statistic",
            "margins",
            "real_column",
        }
    )


class AnalyzeStep(_Step):
    kind: Literal["analyze"] = "analyze"
    analyses: list[AnalysisPlan]


Step = Annotated[
    GenerateStep
    | BroadcastStep
    | DeliverStep
    | AskStep
    | RunStep
    | WaitStep
    | InterviewStep
    | ThinkStep
    | CheckpointStep
    | ExtractStep
    | AnalyzeStep
    | TellStep
    | ConverseStep
    | GoalStep
    | ContextStep
    | ExtractOverallStep
    | ProposeStep
    | ReplicateStep,
    Field(discriminator="kind"),
]


class Estimate(_Model):
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    model: str
    priced: bool  # False when the model is not in the price table
    external_calls: int = 0  # calls to systems under test, not priced


class OutputPlan(_Model):
    formats: list[str]
    dir: str


class Plan(_Model):
    schema_version: int = SCHEMA_VERSION
    tiny_dsl_version: str
    source_file: str
    source_hash: str  # sha256 over every source file the plan was compiled from
    settings: PlanSettings
    agents: list[AgentPlan]
    populations: list[PopulationPlan]
    worlds: list[WorldPlan]
    interventions: list[InterventionPlan]
    steps: list[Step]
    output: OutputPlan
    estimate: Estimate
    # The last step's chained hash (or the base hash without steps); with params,
    # sha256 of that and the params' values (`hashing.plan_hash`).
    plan_hash: str
    # `param NAME value` after `--set`, declaration order; their values are already
    # substituted into the steps and definitions.
    params: dict[str, str | int | float] = Field(default_factory=dict)
    external_agents: list[ExternalAgentPlan] = Field(default_factory=list)

    def agent(self, agent_id: str) -> AgentPlan:
        for agent in self.agents:
            if agent.id == agent_id:
                return agent
        raise KeyError(agent_id)

    def external_agent(self, name: str) -> ExternalAgentPlan | None:
        """The external agent called `name`; None when `name` is an agent of the plan."""
        return next((agent for agent in self.external_agents if agent.name == name), None)

    def world(self, name: str) -> WorldPlan:
        for world in self.worlds:
            if world.name == name:
                return world
        raise KeyError(name)


ExclusionSpec = dict[Any, Any]


def _hash_exclusions(model: _Model, exclude: frozenset[str]) -> ExclusionSpec:
    """A pydantic `exclude` spec leaving out `exclude` and every hash-neutral field
    at its default, in `model` and the models it holds."""
    spec: ExclusionSpec = dict.fromkeys(exclude, True)
    neutral, nested = _neutral_layout(type(model))
    for name, default in neutral.items():
        if name not in spec and getattr(model, name) == default:
            spec[name] = True
    for name in nested:
        value = getattr(model, name)
        if name in spec:
            continue
        if isinstance(value, _Model):
            inner = _hash_exclusions(value, frozenset())
            if inner:
                spec[name] = inner
        elif isinstance(value, list):
            items = {
                index: inner
                for index, item in enumerate(value)
                if isinstance(item, _Model) and (inner := _hash_exclusions(item, frozenset()))
            }
            if items:
                spec[name] = items
    return spec


@functools.cache
def _neutral_layout(cls: type[_Model]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A model class's hash-neutral fields with their defaults, and its fields holding
    models that have some (directly or further down); computed once per class, so that
    hashing ten thousand agents does not build each default ten thousand times. The
    defaults are only compared with, never handed out."""
    nested = tuple(
        name
        for name, info in cls.model_fields.items()
        if any(_has_neutral(held) for held in _models_in(info.annotation))
    )
    defaults = {
        name: cls.model_fields[name].get_default(call_default_factory=True)
        for name in cls.HASH_NEUTRAL
    }
    return defaults, nested


def _has_neutral(cls: type[_Model]) -> bool:
    neutral, nested = _neutral_layout(cls)
    return bool(neutral or nested)


def _models_in(annotation: Any) -> list[type[_Model]]:
    """The model classes an annotation mentions (`list[VariantPlan]`, `X | None`, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, _Model):
        return [annotation]
    return [found for arg in get_args(annotation) for found in _models_in(arg)]
