"""The checked model: a scenario with every import, name and value resolved.

`tiny_dsl.checks.check_file` builds it from syntax trees; `tiny_dsl.plan`
lowers it to an execution plan. Everything here is already validated: a later
stage may rely on names resolving and values being in range. Spans are kept so
that plan steps and run-time errors can point back at the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tiny_dsl.source import SourceFile, Span
from tiny_dsl.syntax import ast

WorldMode = Literal["survey", "focus_group", "interview"]
Timing = Literal["morning", "afternoon", "evening"]
# The simulated hour each named timing stands for (a `"HH:MM"` timing is exact).
TIMING_HOURS: dict[str, int] = {"morning": 9, "afternoon": 14, "evening": 19}


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


@dataclass(frozen=True)
class Persona:
    """A person. `spec` is TinyTroupe's `persona` object with fragments merged."""

    name: str  # the declaration name used in references
    spec: dict[str, Any]
    fragments: tuple[str, ...]
    source_path: str | None  # the `.agent.json` file for `persona x from "..."`
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
class Population:
    name: str
    demographics: str
    size: int
    segments: tuple[Segment, ...]  # declared segments, then `general` if any remainder
    context: str
    span: Span


@dataclass(frozen=True)
class GroupRef:
    """One item of a group: a persona, a whole population, or a segment."""

    kind: Literal["persona", "population", "segment"]
    name: str  # persona or population name
    segment: str | None = None
    span: Span | None = field(default=None, compare=False)

    def text(self) -> str:
        return f"{self.name}.{self.segment}" if self.segment else self.name


@dataclass(frozen=True)
class World:
    name: str
    mode: WorldMode
    agents: tuple[GroupRef, ...]
    moderator: str | None
    context: str
    start: datetime
    span: Span


@dataclass(frozen=True)
class Variant:
    name: str
    content: str
    timing: str | None  # "morning" / "afternoon" / "evening" / "HH:MM"
    span: Span


@dataclass(frozen=True)
class Intervention:
    name: str
    channel: str
    targets: tuple[GroupRef, ...]
    control: float  # fraction 0..1 of targets that receive nothing
    assign: Literal["random", "stratified"]
    stratify_by: str | None  # "segment" when stratified
    variants: tuple[Variant, ...]
    span: Span


FieldKind = Literal["int", "float", "bool", "text", "enum", "list"]


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
    world: str
    fields: tuple[FieldSpec, ...]
    span: Span


@dataclass(frozen=True)
class OutputSpec:
    formats: tuple[str, ...]
    dir: str | None  # None: outputs/<scenario>
    span: Span | None


@dataclass
class Program:
    """A checked, runnable scenario and everything it imports."""

    root: str  # path of the file that was checked
    sources: dict[str, SourceFile]  # every file read, by display path
    modules: dict[str, ast.Module]
    settings: Settings
    personas: dict[str, Persona]
    fragments: dict[str, Fragment]
    demographics: dict[str, Demographics]
    populations: dict[str, Population]
    worlds: dict[str, World]
    interventions: dict[str, Intervention]
    timeline: tuple[ast.Step, ...]
    extractions: tuple[Extraction, ...]
    analyses: tuple[ast.Analysis, ...]
    output: OutputSpec
