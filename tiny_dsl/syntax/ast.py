"""The typed syntax tree of a `.tts` file.

Every node carries the `Span` it came from. Spans are excluded from equality, so
two trees compare equal when they mean the same thing, wherever they were
written: the formatter's contract (`parse(fmt(x)) == parse(x)`) relies on it.
Raw lexemes (`raw`) are kept so the formatter can print numbers and strings the
way the author spelled them; they are excluded from equality too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tiny_dsl.source import Span

# Nodes built by hand (tests, generators) may leave out where they came from.
NO_SPAN = Span("", 0, 0, 0, 0, 0, 0)


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


def _raw() -> str:
    """The lexeme as written; empty for nodes built by hand (printed from the value)."""
    return field(default="", compare=False, repr=False)


# ----------------------------------------------------------------------- values


@dataclass(frozen=True)
class Ident:
    name: str
    span: Span = _span()


@dataclass(frozen=True)
class Str:
    value: str
    raw: str = _raw()
    span: Span = _span()

    @property
    def is_long(self) -> bool:
        return self.raw.startswith('"""')


@dataclass(frozen=True)
class Number:
    value: int | float
    raw: str = _raw()
    span: Span = _span()


@dataclass(frozen=True)
class Range:
    low: Number
    high: Number
    span: Span = _span()


@dataclass(frozen=True)
class Percent:
    value: float
    raw: str = _raw()
    span: Span = _span()

    @property
    def fraction(self) -> float:
        return self.value / 100.0


@dataclass(frozen=True)
class Money:
    amount: Number
    currency: str
    span: Span = _span()


@dataclass(frozen=True)
class Duration:
    amount: Number
    unit: str  # as written: minute(s), hour(s), day(s), week(s)
    span: Span = _span()

    @property
    def seconds(self) -> float:
        per_unit = {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}
        return float(self.amount.value) * per_unit[self.unit.rstrip("s")]


@dataclass(frozen=True)
class ListValue:
    items: tuple[Value, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Ref:
    """A name, or a dotted reference such as `population.segment`."""

    parts: tuple[str, ...]
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Phrase:
    """Several values in a row, as in `assign stratified by segment`."""

    items: tuple[Value, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Seq:
    """A comma-separated list without brackets, as in `agents a, b, c`."""

    items: tuple[Value, ...]
    span: Span = _span()


Value = Str | Number | Range | Percent | Money | Duration | ListValue | Ref | Phrase | Seq
Key = Ident | Str | Range | Number

# ---------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Property:
    key: Key
    value: Value
    span: Span = _span()


@dataclass(frozen=True)
class SubBlock:
    key: Key
    body: Block
    span: Span = _span()


@dataclass(frozen=True)
class NamedBlock:
    """`segment NAME { ... }` or `variant NAME { ... }`."""

    kind: Key
    name: Ident
    body: Block
    span: Span = _span()


Entry = Property | SubBlock | NamedBlock


@dataclass(frozen=True)
class Block:
    entries: tuple[Entry, ...]
    span: Span = _span()


def key_text(key: Key) -> str:
    """The key as the author wrote it, for lookups and messages."""
    if isinstance(key, Ident):
        return key.name
    if isinstance(key, Str):
        return key.value
    if isinstance(key, Range):
        return f"{key.low.raw}..{key.high.raw}"
    return key.raw


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Scenario:
    name: Ident
    body: Block
    span: Span = _span()


@dataclass(frozen=True)
class Import:
    path: Str
    span: Span = _span()


@dataclass(frozen=True)
class Param:
    """`param NAME value`: `{NAME}` in the scenario's strings stands for `value`
    (a string or a number; `--set NAME=VALUE` replaces it)."""

    name: Ident
    value: Value
    span: Span = _span()


@dataclass(frozen=True)
class PersonaInline:
    name: Ident
    body: Block
    span: Span = _span()


@dataclass(frozen=True)
class PersonaFile:
    name: Ident
    path: Str
    span: Span = _span()
    # `persona NAME from "file" { ... }`: fields that replace the file's, and fragments
    body: Block | None = None


@dataclass(frozen=True)
class ExternalAgent:
    """`agent NAME external { url; protocol; ... }`: a system under test (a chatbot, a
    trading agent) that personas talk to with `converse` and `interview ... by`."""

    name: Ident
    body: Block
    span: Span = _span()


@dataclass(frozen=True)
class FragmentInline:
    name: Ident
    body: Block
    span: Span = _span()


@dataclass(frozen=True)
class FragmentFile:
    name: Ident
    path: Str
    span: Span = _span()


@dataclass(frozen=True)
class Demographics:
    name: Ident
    body: Block
    span: Span = _span()
    # `demographics NAME from "file.json"`: a TinyTroupe demography file (body empty)
    path: Str | None = None


@dataclass(frozen=True)
class Population:
    name: Ident
    body: Block
    span: Span = _span()
    # `population NAME from "path" [{ ... }]`: people loaded from files (body may be empty)
    path: Str | None = None


@dataclass(frozen=True)
class World:
    name: Ident
    body: Block
    span: Span = _span()


@dataclass(frozen=True)
class Intervention:
    name: Ident
    body: Block
    span: Span = _span()


@dataclass(frozen=True)
class Output:
    body: Block
    span: Span = _span()


# -------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class BroadcastStep:
    world: Ident
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class DeliverStep:
    intervention: Ident
    world: Ident
    span: Span = _span()
    touch: Ident | None = None  # `deliver I.TOUCH in W`: one touch of a multi-touch intervention


@dataclass(frozen=True)
class AskStep:
    world: Ident
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class RunStep:
    world: Ident
    rounds: Number
    unit: str = field(default="rounds", compare=False, repr=False)  # as written
    span: Span = _span()
    every: Duration | None = None  # `every DURATION`: the clock moves after each round


@dataclass(frozen=True)
class WaitStep:
    duration: Duration
    span: Span = _span()


@dataclass(frozen=True)
class InterviewStep:
    group: tuple[Ref, ...]
    interviewer: Ident
    questions: tuple[Str, ...]
    span: Span = _span()


@dataclass(frozen=True)
class ThinkStep:
    group: tuple[Ref, ...]
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class TellStep:
    group: tuple[Ref, ...]
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class ConverseStep:
    group: tuple[Ref, ...]
    partner: Ident
    turns: Number
    goal: Str
    unit: str = field(default="turns", compare=False, repr=False)  # as written
    span: Span = _span()


@dataclass(frozen=True)
class GoalStep:
    group: tuple[Ref, ...]
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class ContextStep:
    world: Ident
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class CheckpointStep:
    name: Ident
    span: Span = _span()


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


@dataclass(frozen=True)
class Timeline:
    steps: tuple[Step, ...]
    span: Span = _span()


# --------------------------------------------------------------------- extract


@dataclass(frozen=True)
class IntType:
    range: Range | None
    span: Span = _span()


@dataclass(frozen=True)
class FloatType:
    range: Range | None
    span: Span = _span()


@dataclass(frozen=True)
class BoolType:
    span: Span = _span()


@dataclass(frozen=True)
class TextType:
    span: Span = _span()


@dataclass(frozen=True)
class EnumType:
    members: ListValue
    span: Span = _span()


@dataclass(frozen=True)
class ListType:
    """`list of text`: the only list type the language has."""

    span: Span = _span()


@dataclass(frozen=True)
class RankType:
    """`rank [a, b, c]`: a full ranking of the members, best first."""

    members: ListValue
    span: Span = _span()


FieldType = IntType | FloatType | BoolType | TextType | EnumType | ListType | RankType


@dataclass(frozen=True)
class Field:
    name: Ident
    type: FieldType
    description: Str | None
    span: Span = _span()


@dataclass(frozen=True)
class Extract:
    """`extract [overall] from SOURCE [at CHECKPOINT] { ... }`.

    `world` is the first name of the source: the world, for a world source.
    `source` is empty when the source is that one plain name (a world, a
    persona or a population: the checks tell them apart), else the group as
    written (`lisa, consumers.young`).
    """

    world: Ident
    fields: tuple[Field, ...]
    span: Span = _span()
    source: tuple[Ref, ...] = ()
    at: Ident | None = None
    overall: bool = False


# --------------------------------------------------------------------- analyze


@dataclass(frozen=True)
class Aggregate:
    """`mean(field)`, `share(field == value)`, `share(field >= 4)` or
    `share(field in [4, 5])` (comparator `in`, value a list)."""

    function: Ident
    field: Ident
    comparator: str | None
    value: Value | None
    span: Span = _span()


@dataclass(frozen=True)
class Filter:
    """`for GROUP` or `for ATTRIBUTE == value` after an aggregate."""

    subject: Ref
    comparator: str | None  # `==` or `!=`; None: `subject` is a group
    value: Value | None
    span: Span = _span()


@dataclass(frozen=True)
class CompareStmt:
    field: Ident
    by: Ident
    span: Span = _span()


@dataclass(frozen=True)
class SummarizeStmt:
    field: Ident
    by: Ident
    span: Span = _span()


@dataclass(frozen=True)
class FunnelStmt:
    fields: tuple[Ident, ...]
    span: Span = _span()


Bound = Number | Percent


@dataclass(frozen=True)
class ExpectBetween:
    aggregate: Aggregate
    low: Bound
    high: Bound
    span: Span = _span()
    filter: Filter | None = None


@dataclass(frozen=True)
class ExpectCompare:
    aggregate: Aggregate
    comparator: str
    bound: Bound
    span: Span = _span()
    filter: Filter | None = None


@dataclass(frozen=True)
class ExpectVersus:
    """`expect AGG [for F] OP AGG [for F]`: an aggregate bounded by another."""

    aggregate: Aggregate
    comparator: str
    other: Aggregate
    span: Span = _span()
    filter: Filter | None = None
    other_filter: Filter | None = None


@dataclass(frozen=True)
class ValidateStmt:
    """`validate FIELD [by G] against "file.csv" [column "C"]`."""

    field: Ident
    by: Ident | None
    path: Str
    column: Str | None
    span: Span = _span()


Analysis = (
    CompareStmt
    | SummarizeStmt
    | FunnelStmt
    | ExpectBetween
    | ExpectCompare
    | ExpectVersus
    | ValidateStmt
)


@dataclass(frozen=True)
class Analyze:
    statements: tuple[Analysis, ...]
    span: Span = _span()


Declaration = (
    Scenario
    | Import
    | Param
    | PersonaInline
    | PersonaFile
    | ExternalAgent
    | FragmentInline
    | FragmentFile
    | Demographics
    | Population
    | World
    | Intervention
    | Timeline
    | Extract
    | Analyze
    | Output
)


@dataclass(frozen=True)
class Comment:
    text: str  # including the leading `#`
    span: Span = _span()


@dataclass(frozen=True)
class Module:
    """One parsed file. `complete` is False when syntax errors dropped declarations."""

    path: str
    declarations: tuple[Declaration, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False)
    complete: bool = field(compare=False, default=True)
