"""Descriptive statistics: per-group summaries (`summarize`) and funnels (`funnel`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from tiny_dsl.analysis.data import (
    CATEGORICAL_KINDS,
    NUMERIC_KINDS,
    Grouping,
    field_series,
    grouping,
    grouping_problem,
    levels,
    replicate_labels,
)
from tiny_dsl.analysis.model import (
    Bin,
    FieldDistribution,
    FunnelResult,
    FunnelStage,
    GroupStats,
    ItemCount,
    LevelShare,
    ReplicateSpread,
    SummaryResult,
)
from tiny_dsl.analysis.stats import MIN_ARM_N, finite, mean_ci, rank_stats, wilson_ci
from tiny_dsl.plan.model import AnalysisPlan, FieldPlan, InterventionPlan

TOP_ITEMS = 8
MAX_INTEGER_BINS = 20  # an int field spanning more values than this gets ranged bins
MAX_BINS = 20


def histogram_edges(field: FieldPlan, values: pd.Series) -> list[float]:
    """Bin edges every group of a number field shares: one bin per whole number for
    an int field of up to `MAX_INTEGER_BINS` values (its declared range, else the
    answers'), else numpy's automatic edges over all answers (at most `MAX_BINS`)."""
    numbers = values.dropna().to_numpy(dtype=float)
    if field.kind == "int":
        low = field.low if field.low is not None else (numbers.min() if len(numbers) else None)
        high = field.high if field.high is not None else (numbers.max() if len(numbers) else None)
        if low is not None and high is not None and high - low < MAX_INTEGER_BINS:
            return [float(edge) - 0.5 for edge in range(int(low), int(high) + 2)]
    if not len(numbers):
        return []
    edges = np.histogram_bin_edges(numbers, bins="auto")
    if len(edges) > MAX_BINS + 1:
        edges = np.histogram_bin_edges(numbers, bins=MAX_BINS)
    return [float(edge) for edge in edges]


def histogram(numbers: npt.NDArray[np.float64], edges: Sequence[float]) -> list[Bin]:
    """The answers counted over `edges` (from `histogram_edges`); whole-number bins
    (edges at halves) are labelled by their value."""
    if len(edges) < 2:
        return []
    whole = all(float(edge + 0.5).is_integer() for edge in edges)
    counts, _ = np.histogram(numbers, bins=np.asarray(edges, dtype=float))
    bins = []
    for index, count in enumerate(counts.tolist()):
        low, high = edges[index], edges[index + 1]
        label = f"{low + 0.5:g}" if whole else f"{low:.3g} to {high:.3g}"
        bins.append(Bin(label=label, low=low, high=high, count=int(count)))
    return bins


def group_stats(
    group: str,
    values: pd.Series,
    field: FieldPlan,
    level_order: Sequence[str] = (),
    edges: Sequence[float] = (),
) -> GroupStats:
    """n, missing and the statistics that fit the field's type, for one group's values
    (a number field's histogram over `edges`, the bins every group shares)."""
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
        stats.histogram = histogram(numbers, edges)
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
    edges = histogram_edges(field, values) if field.kind in NUMERIC_KINDS else ()
    result.groups = [
        group_stats(group, values[groups.labels == group], field, order, edges)
        for group in groups.order
    ]
    result.overall = group_stats("all agents", values, field, order, edges)
    result.spreads = replicate_spreads(frame, values, groups, field, order)
    small = [stats.group for stats in result.groups if stats.n < MIN_ARM_N]
    if small:
        result.cautions.append(
            f"fewer than {MIN_ARM_N} answers in {', '.join(small)}: "
            "these figures describe this run only and may not generalise"
        )
    return result


def _statistics(
    values: pd.Series, field: FieldPlan, order: Sequence[str]
) -> dict[str, float | None]:
    """The statistic a group's spread is shown for: a number field's mean, a bool's
    share answering true, an enum's share of each member."""
    present = values.dropna()
    if field.kind in NUMERIC_KINDS:
        return {"mean": finite(present.astype(float).mean()) if len(present) else None}
    shown = ["true"] if field.kind == "bool" else list(order)
    return {
        f"share {level}": float((present == level).mean()) if len(present) else None
        for level in shown
    }


def replicate_spreads(
    frame: pd.DataFrame,
    values: pd.Series,
    groups: Grouping,
    field: FieldPlan,
    order: Sequence[str],
) -> list[ReplicateSpread]:
    """Each group's statistic per replicate and its spread across them; nothing with
    fewer than two replicates (or for text, list and rank fields)."""
    if field.kind not in NUMERIC_KINDS | CATEGORICAL_KINDS:
        return []
    replicate = replicate_labels(frame)
    names = sorted(set(replicate), key=int)
    if len(names) < 2:
        return []
    spreads = []
    for group in groups.order:
        inside = groups.labels == group
        per_replicate = [
            _statistics(values[inside & (replicate == name)], field, order) for name in names
        ]
        for statistic in per_replicate[0]:
            measured = [item[statistic] for item in per_replicate]
            known = np.array([value for value in measured if value is not None], dtype=float)
            spread = ReplicateSpread(
                group=group, statistic=statistic, values=measured, replicates=names
            )
            if len(known):
                spread.mean = finite(known.mean())
                spread.min, spread.max = finite(known.min()), finite(known.max())
            if len(known) >= 2:
                spread.sd = finite(known.std(ddof=1))
            spreads.append(spread)
    return spreads


def distribution(
    frame: pd.DataFrame, field: FieldPlan, by: str | None, groups: Grouping | None
) -> FieldDistribution:
    """A number, bool or enum field's histogram per group (`groups` None: everyone)."""
    values = field_series(frame, field)
    order = levels(field, values) if field.kind in CATEGORICAL_KINDS else ()
    edges = histogram_edges(field, values) if field.kind in NUMERIC_KINDS else ()
    result = FieldDistribution(field=field.name, kind=field.kind, by=by if groups else None)
    if groups is None:
        result.groups = [group_stats("all agents", values, field, order, edges)]
    else:
        result.groups = [
            group_stats(group, values[groups.labels == group], field, order, edges)
            for group in groups.order
        ]
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
