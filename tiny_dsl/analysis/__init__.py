"""Statistics over a run's result rows: compare, summarize, funnel, validate and expect.

`analyze(...)` is what the runtime calls for an `analyze` step; its
`AnalysisResult.to_json()` is the run's `analysis.json`.
"""

from tiny_dsl.analysis.engine import analyze, analyze_plan
from tiny_dsl.analysis.model import (
    AnalysisResult,
    Bin,
    CompareResult,
    Effect,
    ExpectationResult,
    FieldCoverage,
    FieldDistribution,
    FunnelResult,
    FunnelStage,
    GroupStats,
    Interval,
    LevelShare,
    PairComparison,
    RankStats,
    ReplicateSpread,
    SideStats,
    StatTest,
    SummaryResult,
    ValidationResult,
)
from tiny_dsl.analysis.stats import holm

__all__ = [
    "AnalysisResult",
    "Bin",
    "CompareResult",
    "Effect",
    "ExpectationResult",
    "FieldCoverage",
    "FieldDistribution",
    "FunnelResult",
    "FunnelStage",
    "GroupStats",
    "Interval",
    "LevelShare",
    "PairComparison",
    "RankStats",
    "ReplicateSpread",
    "SideStats",
    "StatTest",
    "SummaryResult",
    "ValidationResult",
    "analyze",
    "analyze_plan",
    "holm",
]
