"""Run every `analyze` statement over the result rows and adjust the p-values together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from tiny_dsl.analysis.compare import all_tests, compare, conclude, verdict
from tiny_dsl.analysis.data import (
    CATEGORICAL_KINDS,
    NUMERIC_KINDS,
    coverage,
    grouping,
    replicate_labels,
    results_frame,
)
from tiny_dsl.analysis.describe import distribution, funnel, summarize
from tiny_dsl.analysis.expect import expect
from tiny_dsl.analysis.model import Adjustment, AnalysisResult, FieldDistribution
from tiny_dsl.analysis.stats import ALPHA, holm
from tiny_dsl.analysis.validate import metrics_of, validate
from tiny_dsl.plan.model import (
    AnalysisPlan,
    AnalyzeStep,
    ExtractStep,
    FieldPlan,
    InterventionPlan,
    Plan,
)

ADJUSTMENT_NOTE = (
    "Holm's step-down method over every p-value the scenario's compare statements report "
    "(omnibus, pairwise and rank-based tests alike), which keeps the chance of any false "
    "alarm across the whole analysis at or below alpha. Conservative by design."
)


def analyze(
    analyses: Sequence[AnalysisPlan],
    rows: Sequence[dict[str, Any]],
    fields: Sequence[FieldPlan],
    interventions: Sequence[InterventionPlan],
) -> AnalysisResult:
    """Compute every statistic of an `analyze` block; pure, no model calls.

    `rows` are the result rows (one per agent) with extracted fields, `variant_<name>`
    columns and `_missing` reasons; the statements run in the order written.
    """
    frame = results_frame(rows)
    by_name = {field.name: field for field in fields}
    result = AnalysisResult(
        n_agents=len(frame),
        fields=[coverage(frame, field) for field in fields],
        adjustment=Adjustment(family_size=0, alpha=ALPHA, note=ADJUSTMENT_NOTE),
    )
    metrics: dict[str, dict[str, float | None]] = {}  # by field, from `validate`
    for plan in analyses:
        if plan.kind == "compare":
            result.compares.append(compare(plan, frame, by_name, interventions))
        elif plan.kind == "summarize":
            result.summaries.append(summarize(plan, frame, by_name, interventions))
        elif plan.kind == "funnel":
            result.funnels.append(funnel(plan, frame, by_name))
        elif plan.kind == "validate":
            validation = validate(plan, frame, by_name, interventions)
            result.validations.append(validation)
            known = metrics.setdefault(validation.field, {})
            known.update({k: v for k, v in metrics_of(validation).items() if v is not None})
        else:
            result.expectations.append(expect(plan, frame, by_name, metrics))

    family = [
        test for item in result.compares for test in all_tests(item) if test.p_value is not None
    ]
    for test, adjusted in zip(family, holm([test.p_value or 0.0 for test in family]), strict=True):
        test.p_adjusted = adjusted
    result.adjustment.family_size = len(family)
    for item in result.compares:
        item.conclusion = conclude(item)
        item.verdict = verdict(item)
    result.distributions = distributions(analyses, frame, fields, interventions)
    result.replicates = len(set(replicate_labels(frame))) if len(frame) else 1
    result.expectations_failed = [item for item in result.expectations if not item.passed]
    return result


def distributions(
    analyses: Sequence[AnalysisPlan],
    frame: pd.DataFrame,
    fields: Sequence[FieldPlan],
    interventions: Sequence[InterventionPlan],
) -> list[FieldDistribution]:
    """Every number, bool and enum field's histogram per group: grouped as the first
    `compare`/`summarize` of the field, else by the only intervention, else not."""
    found = []
    for field in fields:
        if field.kind not in NUMERIC_KINDS | CATEGORICAL_KINDS:
            continue
        first = next(
            (
                plan
                for plan in analyses
                if plan.kind in ("compare", "summarize") and plan.field == field.name
            ),
            None,
        )
        by: str | None = None
        groups = None
        if first is not None and first.by:
            by = first.by
            groups = grouping(frame, by, interventions, first.column, first.brackets)
        elif len(interventions) == 1:
            by = interventions[0].name
            groups = grouping(frame, by, interventions)
        found.append(distribution(frame, field, by, groups))
    return found


def analyze_plan(plan: Plan, rows: Sequence[dict[str, Any]]) -> AnalysisResult:
    """Every `analyze` statement of a plan over its result rows (what `tts report` re-runs)."""
    analyses = [
        item for step in plan.steps if isinstance(step, AnalyzeStep) for item in step.analyses
    ]
    fields: dict[str, FieldPlan] = {}
    for step in plan.steps:
        if isinstance(step, ExtractStep):
            for field in step.fields:
                fields.setdefault(field.name, field)
    return analyze(analyses, rows, list(fields.values()), plan.interventions)
