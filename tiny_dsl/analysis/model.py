"""What an analysis produces: every number the reports show, as one JSON document.

`analysis.json` is `AnalysisResult.to_json()`. Reports and `tts diff` read it back
with `AnalysisResult.from_json`, so nothing a report shows is computed twice.
Undefined numbers (a standard deviation of one answer, a test that could not run)
are `None`, never NaN, because JSON has no NaN and a reader must not mistake
"not computable" for a value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

FieldKind = Literal["int", "float", "bool", "text", "enum", "list", "rank"]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Result):
    """A 95% confidence interval."""

    low: float
    high: float


class LevelShare(_Result):
    """How many answers fell in one category (`true`/`false` or an enum member)."""

    level: str
    count: int
    share: float | None  # of the group's non-missing answers
    ci: Interval | None  # Wilson score interval


class ItemCount(_Result):
    """A frequent text answer or list item."""

    item: str
    count: int
    share: float  # of the group's non-missing answers that contain it


class RankStats(_Result):
    """How one member of a `rank` field fared in one group's rankings.

    Borda: n-1 points for a first place ... 0 for the last (n members), summed
    over the group's rankings.
    """

    member: str
    first: int  # rankings that put it first
    first_share: float | None  # of the group's rankings
    mean_rank: float | None  # 1 = best
    borda: int


class Bin(_Result):
    """One bar of a number field's histogram: the answers within [low, high)
    (the last bin includes `high`); `label` is the value itself for integer bins."""

    label: str
    low: float
    high: float
    count: int


class GroupStats(_Result):
    """Descriptive statistics of one field in one group (an arm, a segment, everyone)."""

    group: str
    n: int  # non-missing answers
    missing: int
    mean: float | None = None
    sd: float | None = None
    median: float | None = None
    min: float | None = None
    max: float | None = None
    ci: Interval | None = None  # t-based interval of the mean
    levels: list[LevelShare] = Field(default_factory=list)
    top_items: list[ItemCount] = Field(default_factory=list)
    ranks: list[RankStats] = Field(default_factory=list)  # a `rank` field's members, best first
    histogram: list[Bin] = Field(default_factory=list)  # a number field, bins shared by all groups


class StatTest(_Result):
    """One hypothesis test. `p_adjusted` is Holm-adjusted across all compare statements."""

    name: Literal[
        "welch_t", "mann_whitney_u", "anova", "kruskal_wallis", "chi_square", "fisher_exact"
    ]
    label: str
    statistic: float | None = None
    df: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    note: str = ""  # why it was not computed, or how (e.g. Yates' correction)


class Effect(_Result):
    """An effect size, oriented as `arm` minus (or versus) `reference`."""

    name: Literal[
        "mean_difference", "cohens_d", "cliffs_delta", "proportion_difference", "cramers_v"
    ]
    label: str
    value: float | None
    ci: Interval | None = None
    level: str | None = None  # the category a proportion difference is about

    @property
    def title(self) -> str:
        """The label with the category it is about, as tables and diffs show it."""
        return f"{self.label} '{self.level}'" if self.level else self.label


class PairComparison(_Result):
    """One arm against the reference arm (control, or the first arm without control)."""

    arm: str
    reference: str
    tests: list[StatTest] = Field(default_factory=list)
    effects: list[Effect] = Field(default_factory=list)


class ReplicateSpread(_Result):
    """One statistic of one group, computed in each replicate separately: how much
    it moves when only the model's seed changes."""

    group: str
    statistic: str  # "mean", or "share true" / "share <member>"
    values: list[float | None]  # per replicate, in replicate order (None: no answers)
    replicates: list[str]
    mean: float | None = None  # of the replicates' values
    sd: float | None = None  # across replicates (ddof 1)
    min: float | None = None
    max: float | None = None


class CompareResult(_Result):
    statement: str
    origin: str
    field: str
    by: str
    kind: Literal["numeric", "categorical"] | None
    arms: list[GroupStats] = Field(default_factory=list)
    reference: str | None = None
    not_assigned: int = 0  # agents outside the intervention's targets
    tests: list[StatTest] = Field(default_factory=list)  # omnibus tests over 3+ arms
    effects: list[Effect] = Field(default_factory=list)  # omnibus effect sizes over 3+ arms
    pairs: list[PairComparison] = Field(default_factory=list)
    small_sample: bool = False
    cautions: list[str] = Field(default_factory=list)
    conclusion: str = ""
    problem: str | None = None  # why the comparison could not be made
    verdict: str = ""  # one sentence for the report's verdict box
    spreads: list[ReplicateSpread] = Field(default_factory=list)  # with 2+ replicates


class SummaryResult(_Result):
    statement: str
    origin: str
    field: str
    by: str
    kind: FieldKind | None
    groups: list[GroupStats] = Field(default_factory=list)
    overall: GroupStats | None = None
    cautions: list[str] = Field(default_factory=list)
    problem: str | None = None
    spreads: list[ReplicateSpread] = Field(default_factory=list)  # with 2+ replicates


class FieldDistribution(_Result):
    """A number, bool or enum field's answers per group (its histogram per group),
    grouped as the first `compare`/`summarize` of the field (else everyone)."""

    field: str
    kind: FieldKind
    by: str | None
    groups: list[GroupStats] = Field(default_factory=list)


class FunnelStage(_Result):
    """Agents passing a stage answered `true` to this field and to every earlier one."""

    field: str
    passed: int
    share_of_all: float | None
    share_of_previous: float | None  # conversion from the previous stage
    dropped: int  # agents who passed the previous stage but not this one
    drop_off: float | None  # dropped / passed the previous stage
    missing: int  # agents with no answer for this field (counted as not passing)


class FunnelResult(_Result):
    statement: str
    origin: str
    fields: list[str]
    total: int
    stages: list[FunnelStage] = Field(default_factory=list)
    cautions: list[str] = Field(default_factory=list)
    problem: str | None = None


class ExpectationResult(_Result):
    statement: str
    origin: str
    aggregate: str
    field: str
    comparator: str  # between, >, <, >=, <=, ==, !=
    match_comparator: str | None = None  # the comparison inside, as in share(f != v)
    match_value: Any = None
    low: float | None = None
    high: float | None = None
    bound: float | None = None
    observed: float | None
    n: int  # answers the aggregate was computed over
    passed: bool
    reason: str


class SideStats(_Result):
    """One side of a validation: the simulated or the real answers."""

    n: int
    mean: float | None = None
    median: float | None = None
    sd: float | None = None
    counts: list[int] = Field(default_factory=list)  # per category, as `categories`
    # a number field that is not a whole-number scale: counts over bins both sides share
    histogram: list[Bin] = Field(default_factory=list)


class MarginRow(_Result):
    group: str
    simulated: float
    real: float


class ValidationResult(_Result):
    """`validate FIELD against ...`: the metrics (None where a test cannot run)."""

    statement: str
    origin: str
    field: str
    path: str
    kind: Literal["numeric", "categorical", "margins"] | None = None
    simulated: SideStats = Field(default_factory=lambda: SideStats(n=0))
    real: SideStats = Field(default_factory=lambda: SideStats(n=0))
    categories: list[str] = Field(default_factory=list)
    mean_difference: float | None = None  # simulated minus real
    difference_ci: tuple[float, float] | None = None
    welch_t: float | None = None  # real first, as TinyTroupe reports it
    welch_df: float | None = None
    welch_p: float | None = None
    mann_whitney_u: float | None = None
    mann_whitney_p: float | None = None
    ks: float | None = None
    ks_p: float | None = None
    wasserstein: float | None = None
    chi2: float | None = None
    chi2_df: int | None = None
    chi2_p: float | None = None
    sd_ratio: float | None = None
    overlap: float | None = None
    statistic: str | None = None  # margins: mean or share
    margins: list[MarginRow] = Field(default_factory=list)
    missing_groups: list[str] = Field(default_factory=list)
    correlation: float | None = None
    mae: float | None = None
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    problem: str | None = None
    verdict: str = ""  # one sentence for the report's verdict box


class FieldCoverage(_Result):
    """How many agents answered each extracted field, and why the others did not."""

    name: str
    kind: FieldKind
    low: float | None = None
    high: float | None = None
    members: list[str] = Field(default_factory=list)
    n: int
    missing: int
    missing_reasons: dict[str, int] = Field(default_factory=dict)
    ranks: list[RankStats] = Field(default_factory=list)  # a `rank` field, over everyone


class Adjustment(_Result):
    method: Literal["holm"] = "holm"
    family_size: int  # p-values adjusted together
    alpha: float
    note: str


class AnalysisResult(_Result):
    schema_version: int = SCHEMA_VERSION
    n_agents: int
    fields: list[FieldCoverage] = Field(default_factory=list)
    compares: list[CompareResult] = Field(default_factory=list)
    summaries: list[SummaryResult] = Field(default_factory=list)
    funnels: list[FunnelResult] = Field(default_factory=list)
    expectations: list[ExpectationResult] = Field(default_factory=list)
    validations: list[ValidationResult] = Field(default_factory=list)
    expectations_failed: list[ExpectationResult] = Field(default_factory=list)
    adjustment: Adjustment
    distributions: list[FieldDistribution] = Field(default_factory=list)
    replicates: int = 1  # distinct replicates in the rows

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> AnalysisResult:
        return cls.model_validate_json(text)
