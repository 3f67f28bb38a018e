"""Descriptive statistics: per-group summaries (`summarize`) and funnels (`funnel`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tiny_dsl.analysis.data import (
    CATEGORICAL_KINDS,
    NUMERIC_KINDS,
    field_series,
    grouping,
    grouping_problem,
    levels,
)
from tiny_dsl.analysis.model import (
    FunnelResult,
    FunnelStage,
    GroupStats,
    ItemCount,
    LevelShare,
    SummaryResult,
)
from tiny_dsl.analysis.stats import MIN_ARM_N, finite, mean_ci, rank_stats, wilson_ci
from tiny_dsl.plan.model import AnalysisPlan, FieldPlan, InterventionPlan

TOP_ITEMS = 8


def group_stats(
    group: str, values: pd.Series, field: FieldPlan, level_order: Sequence[str] = ()
) -> GroupStats:
    """n, missing and the statistics that fit the field's type, for one group's values."""
    present = values.dropna()
    stats = GroupStats(group=group, n=len(present), missing=len(values) - len(present))
    if field.kind in NUMERIC_KINDS:
        numbers = present.to_numpy(dtype=float)
        if len(numbers):
            stats.mean = finite(np.mean(numbers))
            stats.median = finite(np.median(numbers))
            stats.min, stats.max = finite(np.min(numbers)), finite(np.max(numbers))
        if len(numbers) >= 2:
            stats.sd = finite(np.std(numbers, ddof=1))
        stats.ci = mean_ci(numbers)
    elif field.kind in CATEGORICAL_KINDS:
        counts = present.value_counts()
        for level in level_order or levels(field, present):
            count = int(counts.get(level, 0))
            stats.levels.append(
                LevelShare(
                    level=level,
                    count=count,
                    share=count / stats.n if stats.n else None,
                    ci=wilson_ci(count, stats.n),
                )
            )
    elif field.kind == "rank":
        stats.ranks = rank_stats(present.tolist(), field.members)
    else:
        stats.top_items = _top_items(present, field)
    return stats


def _top_items(present: pd.Series, field: FieldPlan) -> list[ItemCount]:
    """Most frequent answers (text) or items (list), case- and space-insensitive.

    A list item counts once per agent, so its share reads "share of agents who
    mentioned it". The first spelling seen stands for all its variants.
    """
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for value in present:
        items = value if field.kind == "list" else [value]
        keys = {" ".join(item.split()).casefold(): item for item in items}
        for key, item in keys.items():
            spelling.setdefault(key, item)
            counts[key] += 1
    return [
        ItemCount(item=spelling[key], count=count, share=count / len(present))
        for key, count in counts.most_common(TOP_ITEMS)
    ]


def summarize(
    plan: AnalysisPlan,
    frame: pd.DataFrame,
    fields: dict[str, FieldPlan],
    interventions: Sequence[InterventionPlan],
) -> SummaryResult:
    name, by = plan.field or "", plan.by or ""
    result = SummaryResult(
        statement=plan.text or f"summarize {name} by {by}",
        origin=str(plan.origin),
        field=name,
        by=by,
        kind=None,
    )
    field = fields.get(name)
    if field is None:
        result.problem = f"no extracted field named `{name}`"
        return result
    result.kind = field.kind
    groups = grouping(frame, by, interventions, plan.column, plan.brackets)
    if groups is None:
        result.problem = grouping_problem(by, interventions)
        return result
    values = field_series(frame, field)
    order = levels(field, values) if field.kind in CATEGORICAL_KINDS else ()
    result.groups = [
        group_stats(group, values[groups.labels == group], field, order) for group in groups.order
    ]
    result.overall = group_stats("all agents", values, field, order)
    small = [stats.group for stats in result.groups if stats.n < MIN_ARM_N]
    if small:
        result.cautions.append(
            f"fewer than {MIN_ARM_N} answers in {', '.join(small)}: "
            "these figures describe this run only and may not generalise"
        )
    return result


def funnel(plan: AnalysisPlan, frame: pd.DataFrame, fields: dict[str, FieldPlan]) -> FunnelResult:
    """Stage k is passed by agents who answered `true` to stages 1..k; no answer = not passed."""
    result = FunnelResult(
        statement=plan.text or "funnel " + ", ".join(plan.fields),
        origin=str(plan.origin),
        fields=list(plan.fields),
        total=len(frame),
    )
    wrong = [name for name in plan.fields if name not in fields or fields[name].kind != "bool"]
    if wrong:
        result.problem = "a funnel needs bool fields; not bool: " + ", ".join(wrong)
        return result
    passing = pd.Series(True, index=frame.index)
    previous = result.total
    for name in plan.fields:
        values = field_series(frame, fields[name])
        passing &= values == "true"
        passed = int(passing.sum())
        result.stages.append(
            FunnelStage(
                field=name,
                passed=passed,
                share_of_all=passed / result.total if result.total else None,
                share_of_previous=passed / previous if previous else None,
                dropped=previous - passed,
                drop_off=(previous - passed) / previous if previous else None,
                missing=int(values.isna().sum()),
            )
        )
        previous = passed
    if result.total < MIN_ARM_N:
        result.cautions.append(
            f"only {result.total} agents: stage shares are rough and may not generalise"
        )
    return result
