"""Statistics over a run's result rows: compare, summarize, funnel and expect.

`analyze(...)` is what the runtime calls for an `analyze` step; its
`AnalysisResult.to_json()` is the run's `analysis.json`.
"""

from tiny_dsl.analysis.engine import analyze, analyze_plan
from tiny_dsl.analysis.model import (
    AnalysisResult,
    CompareResult,
    Effect,
    ExpectationResult,
    FieldCoverage,
    FunnelResult,
    FunnelStage,
    GroupStats,
    Interval,
    LevelShare,
    PairComparison,
    RankStats,
    StatTest,
    SummaryResult,
)
from tiny_dsl.analysis.stats import holm

__all__ = [
    "AnalysisResult",
    "CompareResult",
    "Effect",
    "ExpectationResult",
    "FieldCoverage",
    "FunnelResult",
    "FunnelStage",
    "GroupStats",
    "Interval",
    "LevelShare",
    "PairComparison",
    "RankStats",
    "StatTest",
    "SummaryResult",
    "analyze",
    "analyze_plan",
    "holm",
]
