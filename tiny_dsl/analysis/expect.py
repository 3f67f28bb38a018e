"""`expect AGG(FIELD) ...`: assertions over the results that make a run exit 1.

An expectation that cannot be evaluated (no answers, an aggregate that does not fit
the field) fails with the reason: a guard that silently passes on no data would let a
broken scenario through a pull request.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from tiny_dsl.analysis import text
from tiny_dsl.analysis.data import (
    NUMERIC_KINDS,
    as_flag,
    as_number,
    field_series,
    filter_rows,
)
from tiny_dsl.analysis.model import ExpectationResult
from tiny_dsl.checks.analyses import METRICS, PROPORTIONS
from tiny_dsl.plan.model import AggregatePlan, AnalysisPlan, FieldPlan

METRIC_NAMES = frozenset(METRICS)
PROPORTION_NAMES = frozenset(PROPORTIONS)


def shown_value(aggregate: str, value: float | None) -> str:
    """An aggregate's value as reports write it: a proportion in percent, a count whole."""
    if value is not None and aggregate == "count":
        return f"{value:.0f}"
    return text.percent(value) if aggregate in PROPORTION_NAMES else text.number(value)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": _close,
    "!=": lambda a, b: not _close(a, b),
}


def _predicate(
    field: FieldPlan, comparator: str, target: Any
) -> tuple[Callable[[Any], bool] | None, str]:
    """The test `AGG(field OP target)` applies to each present answer, or why there is none."""
    check = COMPARATORS.get(comparator)
    if check is None:
        return None, f"unknown comparator `{comparator}`"
    if field.kind in NUMERIC_KINDS:
        wanted = as_number(target)
        if wanted is None:
            return None, f"`{field.name}` is a number; cannot compare it with {target!r}"
        return (lambda value: check(float(value), wanted)), ""
    if comparator not in ("==", "!="):
        return None, f"`{comparator}` needs a number field; `{field.name}` is {field.kind}"
    wanted_text = as_flag(target) or str(target).strip().casefold()

    def equal(value: Any) -> bool:
        if field.kind == "list":
            return any(item.casefold() == wanted_text for item in value)
        return bool(str(value).casefold() == wanted_text)

    if comparator == "==":
        return equal, ""
    return (lambda value: not equal(value)), ""


def _aggregate(
    aggregate: str,
    match_comparator: str | None,
    match_value: Any,
    match_values: Sequence[Any],
    field: FieldPlan,
    present: pd.Series,
) -> tuple[float | None, str]:
    """The aggregate over the present answers, or None and why it is not defined."""
    if match_comparator == "in":
        tests = [_predicate(field, "==", value) for value in match_values]
        problems = [problem for predicate, problem in tests if predicate is None]
        if problems:
            return None, problems[0]
        predicates = [predicate for predicate, _ in tests if predicate is not None]
        hits = present.map(lambda value: any(test(value) for test in predicates)).astype(bool)
        return _counted(aggregate, hits)
    if match_comparator is not None or match_value is not None:
        predicate, problem = _predicate(field, match_comparator or "==", match_value)
        if predicate is None:
            return None, problem
        return _counted(aggregate, present.map(predicate).astype(bool))
    if aggregate in ("mean", "median", "sd"):
        if field.kind in NUMERIC_KINDS:
            numbers = present.astype(float)
        elif field.kind == "bool":
            numbers = (present == "true").astype(float)
        else:
            return (
                None,
                f"{aggregate}() needs a number or bool field; `{field.name}` is {field.kind}",
            )
        if aggregate == "sd":
            if len(numbers) < 2:
                return None, f"not enough data: sd() needs two answers, {len(numbers)} given"
            return float(numbers.std(ddof=1)), ""
        return float(numbers.mean() if aggregate == "mean" else numbers.median()), ""
    if aggregate == "share":
        if field.kind == "bool":
            return float((present == "true").mean()), ""
        return None, (
            f"share() needs a bool field or a comparison such as share({field.name} == value); "
            f"`{field.name}` is {field.kind}"
        )
    if aggregate == "count":
        return float(len(present)), ""
    return None, f"unknown aggregate `{aggregate}` (use mean, median, sd, share or count)"


def _counted(aggregate: str, hits: pd.Series) -> tuple[float | None, str]:
    if aggregate == "share":
        return float(hits.mean()), ""
    if aggregate == "count":
        return float(hits.sum()), ""
    return None, f"{aggregate}() takes a field, not a comparison: use share() or count()"


def _left(plan: AnalysisPlan) -> AggregatePlan:
    """The aggregate an expectation bounds, in the form of its right-hand side."""
    return AggregatePlan(
        aggregate=plan.aggregate or "",
        field=plan.field or "",
        match_comparator=plan.match_comparator,
        match_value=plan.match_value,
        match_values=plan.match_values,
        filter=plan.filter,
    )


def _side(
    side: AggregatePlan,
    frame: pd.DataFrame,
    fields: dict[str, FieldPlan],
    metrics: Mapping[str, Mapping[str, float | None]],
) -> tuple[float | None, int, str]:
    """One side of an expectation: its value, the answers it is over, or why it has none."""
    aggregate, field_name, row_filter = side.aggregate, side.field, side.filter
    if aggregate in METRIC_NAMES:
        value = metrics.get(field_name, {}).get(aggregate)
        if value is None:
            return None, 0, f"`{aggregate}({field_name})`: not enough data to validate"
        return value, int(metrics[field_name].get("n") or 0), ""
    field = fields.get(field_name)
    if field is None:
        return None, 0, f"no extracted field named `{field_name}`"
    rows = filter_rows(frame, row_filter)
    present = field_series(rows, field).dropna()
    if present.empty:
        where = f" for {row_filter.text}" if row_filter is not None else ""
        return (
            None,
            0,
            (
                f"no answers for `{field.name}`{where}: all {len(rows)} agents are missing it"
                if len(rows)
                else f"no agents in the results{where}"
            ),
        )
    observed, problem = _aggregate(
        aggregate, side.match_comparator, side.match_value, side.match_values, field, present
    )
    return observed, len(present), problem


def _call(side: AggregatePlan) -> str:
    """An aggregate as written: `share(score in [4, 5]) for buyers.young`."""
    inner = side.field
    if side.match_comparator == "in":
        inner += " in [" + ", ".join(_shown(value) for value in side.match_values) + "]"
    elif side.match_comparator is not None or side.match_value is not None:
        inner += f" {side.match_comparator or '=='} {_shown(side.match_value)}"
    call = f"{side.aggregate}({inner})"
    return call + (f" for {side.filter.text}" if side.filter is not None else "")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _statement(plan: AnalysisPlan, call: str, comparator: str) -> str:
    """The rule as an author would write it, for plans that do not carry the source text."""

    def shown(value: float | None) -> str:
        return "?" if value is None else text.plain(value)

    if comparator == "between":
        return f"expect {call} between {shown(plan.low)} and {shown(plan.high)}"
    return f"expect {call} {comparator} {shown(plan.bound)}"


def expect(
    plan: AnalysisPlan,
    frame: pd.DataFrame,
    fields: dict[str, FieldPlan],
    metrics: Mapping[str, Mapping[str, float | None]] | None = None,
) -> ExpectationResult:
    """Evaluate one expectation: `between low and high` (inclusive), `OP bound`, or
    `OP` another aggregate. `metrics` are the `validate` results by field."""
    metrics = metrics or {}
    comparator = plan.comparator or "between"
    left = _left(plan)
    call = _call(left)
    other = plan.other
    result = ExpectationResult(
        statement=plan.text or _statement(plan, call, comparator),
        origin=str(plan.origin),
        aggregate=plan.aggregate or "",
        field=plan.field or "",
        comparator=comparator,
        match_comparator=plan.match_comparator,
        match_value=plan.match_value,
        low=plan.low,
        high=plan.high,
        bound=plan.bound,
        observed=None,
        n=0,
        passed=False,
        reason="",
    )
    observed, result.n, problem = _side(left, frame, fields, metrics)
    if observed is None:
        result.reason = problem
        return result
    result.observed = observed
    as_share = result.aggregate in PROPORTION_NAMES

    def bound_text(value: float) -> str:
        return text.percent(value) if as_share else text.plain(value)

    seen = f"{call} = {shown_value(result.aggregate, observed)} over {result.n} answers"
    if comparator == "between":
        if plan.low is None or plan.high is None:
            result.reason = "`between` needs two bounds"
            return result
        result.passed = plan.low <= observed <= plan.high
        where = "within" if result.passed else "outside"
        result.reason = f"{seen}, {where} {bound_text(plan.low)}..{bound_text(plan.high)}"
        return result
    check = COMPARATORS.get(comparator)
    if check is None:
        result.reason = f"cannot evaluate comparator `{comparator}`"
        return result
    if other is not None:
        other_call = _call(other)
        bound, other_n, problem = _side(other, frame, fields, metrics)
        if bound is None:
            result.reason = f"{seen}; {problem}"
            return result
        result.bound = bound
        result.passed = check(observed, bound)
        verdict = "holds" if result.passed else "does not hold"
        result.reason = (
            f"{seen}; {other_call} = {shown_value(other.aggregate, bound)} "
            f"over {other_n} answers; {comparator} {verdict}"
        )
        return result
    bound = plan.bound
    if bound is None:
        result.reason = f"cannot evaluate comparator `{comparator}` without a bound"
        return result
    result.passed = check(observed, bound)
    verdict = "holds" if result.passed else "does not hold"
    result.reason = f"{seen}; {comparator} {bound_text(bound)} {verdict}"
    return result
