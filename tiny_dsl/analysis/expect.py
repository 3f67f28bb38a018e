"""`expect AGG(FIELD) ...`: assertions over the results that make a run exit 1.

An expectation that cannot be evaluated (no answers, an aggregate that does not fit
the field) fails with the reason: a guard that silently passes on no data would let a
broken scenario through a pull request.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import pandas as pd

from tiny_dsl.analysis import text
from tiny_dsl.analysis.data import NUMERIC_KINDS, as_flag, as_number, field_series
from tiny_dsl.analysis.model import ExpectationResult
from tiny_dsl.plan.model import AnalysisPlan, FieldPlan


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
    plan: AnalysisPlan, field: FieldPlan, present: pd.Series
) -> tuple[float | None, str]:
    """The aggregate over the present answers, or None and why it is not defined."""
    aggregate = plan.aggregate or ""
    if plan.match_comparator is not None or plan.match_value is not None:
        predicate, problem = _predicate(field, plan.match_comparator or "==", plan.match_value)
        if predicate is None:
            return None, problem
        hits = present.map(predicate).astype(bool)
        if aggregate == "share":
            return float(hits.mean()), ""
        if aggregate == "count":
            return float(hits.sum()), ""
        return None, f"{aggregate}() takes a field, not a comparison: use share() or count()"
    if aggregate in ("mean", "median"):
        if field.kind in NUMERIC_KINDS:
            numbers = present.astype(float)
        elif field.kind == "bool":
            numbers = (present == "true").astype(float)
        else:
            return (
                None,
                f"{aggregate}() needs a number or bool field; `{field.name}` is {field.kind}",
            )
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
    return None, f"unknown aggregate `{aggregate}` (use mean, median, share or count)"


def _call(plan: AnalysisPlan) -> str:
    inner = plan.field or ""
    if plan.match_comparator is not None or plan.match_value is not None:
        value = plan.match_value
        shown = str(value).lower() if isinstance(value, bool) else value
        inner += f" {plan.match_comparator or '=='} {shown}"
    return f"{plan.aggregate}({inner})"


def _statement(plan: AnalysisPlan, call: str, comparator: str) -> str:
    """The rule as an author would write it, for plans that do not carry the source text."""

    def shown(value: float | None) -> str:
        return "?" if value is None else text.plain(value)

    if comparator == "between":
        return f"expect {call} between {shown(plan.low)} and {shown(plan.high)}"
    return f"expect {call} {comparator} {shown(plan.bound)}"


def expect(
    plan: AnalysisPlan, frame: pd.DataFrame, fields: dict[str, FieldPlan]
) -> ExpectationResult:
    """Evaluate one expectation: `between low and high` (inclusive) or `OP bound`."""
    comparator = plan.comparator or "between"
    call = _call(plan)
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
    field = fields.get(result.field)
    if field is None:
        result.reason = f"no extracted field named `{result.field}`"
        return result
    present = field_series(frame, field).dropna()
    result.n = len(present)
    if result.n == 0:
        result.reason = (
            f"no answers for `{field.name}`: all {len(frame)} agents are missing it"
            if len(frame)
            else "no agents in the results"
        )
        return result
    observed, problem = _aggregate(plan, field, present)
    if observed is None:
        result.reason = problem
        return result
    result.observed = observed
    as_share = result.aggregate == "share"

    def show(value: float) -> str:
        return text.percent(value) if as_share else text.number(value)

    def bound_text(value: float) -> str:
        return text.percent(value) if as_share else text.plain(value)

    seen = f"{call} = {show(observed)} over {result.n} answers"
    if comparator == "between":
        if plan.low is None or plan.high is None:
            result.reason = "`between` needs two bounds"
            return result
        result.passed = plan.low <= observed <= plan.high
        where = "within" if result.passed else "outside"
        result.reason = f"{seen}, {where} {bound_text(plan.low)}..{bound_text(plan.high)}"
        return result
    bound = plan.bound
    check = COMPARATORS.get(comparator)
    if bound is None or check is None:
        result.reason = f"cannot evaluate comparator `{comparator}` with bound {bound}"
        return result
    result.passed = check(observed, bound)
    verdict = "holds" if result.passed else "does not hold"
    result.reason = f"{seen}; {comparator} {bound_text(bound)} {verdict}"
    return result
