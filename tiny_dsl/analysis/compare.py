"""`compare FIELD by INTERVENTION`: the test that fits the field, effect sizes, a verdict.

Numeric fields get Welch's t-test (robust to unequal variances, which small arms
routinely have) with Mann-Whitney U as the rank-based check, and ANOVA / Kruskal-
Wallis over three or more arms with pairwise Welch tests against the reference arm.
Bool and enum fields get a contingency-table test (chi-square, or Fisher's exact test
for small 2x2 tables). `conclude` runs after the Holm adjustment, because the verdict
depends on the adjusted p-values of every compare statement in the scenario, and so
does `verdict`, the one sentence per compare the report opens with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from tiny_dsl.analysis import text
from tiny_dsl.analysis.data import (
    CATEGORICAL_KINDS,
    NUMERIC_KINDS,
    Grouping,
    field_series,
    grouping,
    grouping_problem,
    levels,
)
from tiny_dsl.analysis.describe import group_stats, histogram_edges, replicate_spreads
from tiny_dsl.analysis.model import CompareResult, Interval, PairComparison, StatTest
from tiny_dsl.analysis.stats import (
    ALPHA,
    MIN_ARM_N,
    MIN_EXPECTED_COUNT,
    anova_and_kruskal,
    cliffs_delta,
    cohens_d,
    independence_test,
    mann_whitney,
    mean_difference,
    proportion_difference,
)
from tiny_dsl.plan.model import AnalysisPlan, FieldPlan, InterventionPlan


def compare(
    plan: AnalysisPlan,
    frame: pd.DataFrame,
    fields: dict[str, FieldPlan],
    interventions: Sequence[InterventionPlan],
) -> CompareResult:
    name, by = plan.field or "", plan.by or ""
    result = CompareResult(
        statement=plan.text or f"compare {name} by {by}",
        origin=str(plan.origin),
        field=name,
        by=by,
        kind=None,
    )
    field = fields.get(name)
    if field is None:
        result.problem = f"no extracted field named `{name}`"
        return result
    if field.kind in NUMERIC_KINDS:
        result.kind = "numeric"
    elif field.kind in CATEGORICAL_KINDS:
        result.kind = "categorical"
    else:
        result.problem = f"`{name}` is {field.kind}: compare needs a number, bool or enum field"
        return result
    groups = grouping(frame, by, interventions, plan.column, plan.brackets)
    if groups is None:
        result.problem = grouping_problem(by, interventions)
        return result
    if len(groups.order) < 2:
        noun = "arms" if plan.column is None and by != "replicate" else "groups in the results"
        result.problem = f"`{by}` has fewer than two {noun}"
        return result

    values = field_series(frame, field)
    result.reference = groups.reference
    result.not_assigned = int(groups.labels.isna().sum())
    if len(frame) and result.not_assigned == len(frame):
        result.problem = f"no agent in the results is assigned to an arm of `{by}`"
        return result
    order = levels(field, values) if result.kind == "categorical" else ()
    edges = histogram_edges(field, values) if result.kind == "numeric" else ()
    result.arms = [
        group_stats(arm, values[groups.labels == arm], field, order, edges) for arm in groups.order
    ]
    result.spreads = replicate_spreads(frame, values, groups, field, order)
    small_arms = [f"'{arm.group}' ({arm.n})" for arm in result.arms if arm.n < MIN_ARM_N]
    if small_arms:
        result.small_sample = True
        result.cautions.append(f"fewer than {MIN_ARM_N} answers in arm {', '.join(small_arms)}")
    if result.kind == "numeric":
        _compare_numeric(result, values, groups)
    else:
        _compare_categorical(result, values, groups, field)
    return result


def _others(groups: Grouping) -> list[str]:
    return [arm for arm in groups.order if arm != groups.reference]


def _compare_numeric(result: CompareResult, values: pd.Series, groups: Grouping) -> None:
    samples = {
        arm: values[groups.labels == arm].dropna().to_numpy(dtype=float) for arm in groups.order
    }
    reference_arm = groups.reference or groups.order[0]
    reference = samples[reference_arm]
    if len(groups.order) > 2:
        result.tests = anova_and_kruskal([samples[arm] for arm in groups.order])
    for arm in _others(groups):
        welch, difference = mean_difference(samples[arm], reference)
        tests = [welch]
        if len(groups.order) == 2:
            tests.append(mann_whitney(samples[arm], reference))
        result.pairs.append(
            PairComparison(
                arm=arm,
                reference=reference_arm,
                tests=tests,
                effects=[
                    difference,
                    cohens_d(samples[arm], reference),
                    cliffs_delta(samples[arm], reference),
                ],
            )
        )


def _compare_categorical(
    result: CompareResult, values: pd.Series, groups: Grouping, field: FieldPlan
) -> None:
    answered = groups.labels.notna() & values.notna()
    categories = levels(field, values[answered])
    table = (
        pd.crosstab(groups.labels[answered], values[answered])
        .reindex(index=groups.order, columns=categories, fill_value=0)
        .to_numpy(dtype=np.int64)
    )
    rows = dict(zip(groups.order, table, strict=True))
    small = False
    if len(groups.order) > 2:
        test, cramer, small = independence_test(_nonempty(table))
        result.tests, result.effects = [test], [cramer]
    # A bool field is about the share answering `true`; an enum about every member.
    shown = ["true"] if field.kind == "bool" else categories
    reference = groups.reference or groups.order[0]
    for arm in _others(groups):
        test, cramer, pair_small = independence_test(
            _nonempty(np.vstack([rows[arm], rows[reference]]))
        )
        small |= pair_small
        arm_n, ref_n = int(rows[arm].sum()), int(rows[reference].sum())
        differences = [
            proportion_difference(
                int(rows[arm][categories.index(level)]),
                arm_n,
                int(rows[reference][categories.index(level)]),
                ref_n,
                level,
            )
            for level in shown
        ]
        result.pairs.append(
            PairComparison(
                arm=arm, reference=reference, tests=[test], effects=[cramer, *differences]
            )
        )
    if small:
        result.small_sample = True
        result.cautions.append(f"some expected counts are below {MIN_EXPECTED_COUNT:g}")


def _nonempty(table: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The count table without all-zero rows (arms with no answers) and columns."""
    return table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]


def all_tests(result: CompareResult) -> Iterator[StatTest]:
    """Every test a compare statement reports: the family the Holm adjustment covers."""
    yield from result.tests
    for pair in result.pairs:
        yield from pair.tests


def primary_test(result: CompareResult) -> StatTest | None:
    """The test a verdict rests on: the omnibus test over 3+ arms, else the pair's first."""
    if result.tests:
        return result.tests[0]
    return result.pairs[0].tests[0] if result.pairs and result.pairs[0].tests else None


def conclude(result: CompareResult) -> str:
    """A plain-language verdict that never claims more than the data allow.

    Small samples get "not enough data" whatever the p-value says; otherwise the
    verdict rests on the Holm-adjusted p-value of the primary test (the omnibus test
    with three or more arms, else Welch's t-test or the contingency-table test).
    """
    if result.problem:
        return f"Not compared: {result.problem}."
    excluded = _excluded(result)
    if result.small_sample:
        return (
            f"Not enough data to draw a conclusion: {'; '.join(result.cautions)}. "
            f"The figures describe this run only.{excluded}"
        )
    primary = primary_test(result)
    if primary is None:
        return f"No conclusion: no test could be made.{excluded}"
    if primary.p_adjusted is None:
        return (
            f"No conclusion: {primary.label} {primary.note or 'could not be computed'}.{excluded}"
        )
    p = text.p_equals(primary.p_adjusted)
    if primary.p_adjusted >= ALPHA:
        return (
            f"No clear difference between groups ({primary.label}, Holm-adjusted {p}); "
            f"this does not show that they are equal.{excluded}"
        )
    verdict = f"Evidence of a difference between groups ({primary.label}, Holm-adjusted {p})."
    if len(result.pairs) == 1:
        return f"{verdict} {_direction(result.pairs[0])}{excluded}"
    differing = [
        pair
        for pair in result.pairs
        if pair.tests[0].p_adjusted is not None and pair.tests[0].p_adjusted < ALPHA
    ]
    if not differing:
        return (
            f"{verdict} No single arm differs clearly from '{result.reference}' "
            f"after adjustment.{excluded}"
        )
    return f"{verdict} {' '.join(_direction(pair) for pair in differing)}{excluded}"


def _direction(pair: PairComparison) -> str:
    """Which way the arm differs from the reference, with the effect's interval."""
    effects = {effect.name: effect for effect in pair.effects if effect.level in (None, "true")}
    mean = effects.get("mean_difference")
    if mean is not None and mean.value is not None:
        more = "more" if mean.value > 0 else "less"
        return (
            f"'{pair.arm}' averages {text.number(abs(mean.value))} {more} than "
            f"'{pair.reference}' (95% CI of the difference {text.interval(mean.ci)})."
        )
    share = effects.get("proportion_difference")
    if share is not None and share.value is not None:
        return (
            f"The share answering true is {text.points(share.value)} in '{pair.arm}' "
            f"relative to '{pair.reference}' (95% CI {text.interval(share.ci, 'pts')})."
        )
    cramer = effects.get("cramers_v")
    strength = text.number(cramer.value if cramer else None)
    return f"'{pair.arm}' vs '{pair.reference}': Cramér's V = {strength}."


def _excluded(result: CompareResult) -> str:
    missing = sum(arm.missing for arm in result.arms)
    parts = []
    if missing:
        parts.append(f"{missing} missing answer{'s' if missing != 1 else ''}")
    if result.not_assigned:
        parts.append(
            f"{result.not_assigned} agent{'s' if result.not_assigned != 1 else ''} in no arm"
        )
    return f" Excluded: {', '.join(parts)}." if parts else ""


def verdict(result: CompareResult) -> str:
    """One sentence for the report's verdict box: which group is ahead, by how much,
    with the 95% interval and the Holm-adjusted p; or why no group can be called ahead.

    It rests on the same evidence as `conclude`, so it never says more: the primary
    test must be significant after adjustment, and then the pair with the smallest
    adjusted p is named.
    """
    subject = f"{result.field} by {result.by}"
    if result.problem:
        return f"{subject}: not enough data ({result.problem})."
    if result.small_sample:
        return f"{subject}: not enough data ({'; '.join(result.cautions)})."
    primary = primary_test(result)
    if primary is None or primary.p_adjusted is None:
        return f"{subject}: not enough data (no test could be made)."
    if primary.p_adjusted >= ALPHA:
        return (
            f"{subject}: no group is clearly ahead "
            f"({primary.label}, Holm-adjusted {text.p_equals(primary.p_adjusted)})."
        )
    pairs = [pair for pair in result.pairs if pair.tests and pair.tests[0].p_adjusted is not None]
    if not pairs:
        return f"{subject}: the groups differ (Holm-adjusted {text.p_equals(primary.p_adjusted)})."
    pair = min(pairs, key=lambda item: item.tests[0].p_adjusted or 1.0)
    p = text.p_equals(pair.tests[0].p_adjusted)
    effects = {effect.name: effect for effect in pair.effects if effect.level in (None, "true")}
    for effect, unit, what in (
        (effects.get("mean_difference"), "", "on average"),
        (effects.get("proportion_difference"), "pts", "in the share answering true"),
    ):
        if effect is None or effect.value is None:
            continue
        ahead, behind, value, ci = pair.arm, pair.reference, effect.value, effect.ci
        if value < 0:  # name the group ahead first, with the interval turned round
            ahead, behind, value = behind, ahead, -value
            if ci is not None:
                ci = Interval(low=-ci.high, high=-ci.low)
        amount = text.points(value).lstrip("+") if unit else text.number(value)
        return (
            f"{subject}: '{ahead}' is ahead of '{behind}' by {amount} {what} "
            f"(95% CI {text.interval(ci, unit)}, Holm-adjusted {p})."
        )
    cramer = effects.get("cramers_v")
    return (
        f"{subject}: '{pair.arm}' and '{pair.reference}' answer differently "
        f"(Cramér's V = {text.number(cramer.value if cramer else None)}, Holm-adjusted {p})."
    )
