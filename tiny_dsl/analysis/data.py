"""From result rows to typed columns and groups, with missing values made explicit.

Rows come from extraction and may hold anything a model produced, so every value is
coerced to its field's type here, once; a value that does not fit counts as missing
instead of breaking a statistic later. Numeric columns are float Series with NaN for
missing; the others are object Series holding `str` / `list[str]` or `None`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tiny_dsl.analysis.model import FieldCoverage
from tiny_dsl.analysis.stats import finite, rank_stats
from tiny_dsl.plan.model import BracketPlan, FieldPlan, InterventionPlan, RowFilterPlan

NUMERIC_KINDS = frozenset({"int", "float"})
CATEGORICAL_KINDS = frozenset({"bool", "enum"})
BOOL_LEVELS = ["true", "false"]
CONTROL = "control"
NO_GROUP = "(none)"  # group label of agents without a segment, world, ...


def _label(value: Any) -> str | None:
    """A group label; None and NaN (pandas' filler for absent keys) are no label."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def results_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(list(rows)) if rows else pd.DataFrame()


def as_number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return finite(value)
    if isinstance(value, str):
        try:
            return finite(float(value.strip()))
        except ValueError:
            return None
    return None


def as_flag(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _items(value: Any) -> list[str] | None:
    if isinstance(value, list):
        return [item.strip() for item in value if isinstance(item, str) and item.strip()]
    return None


_COERCE: dict[str, Callable[[Any], Any]] = {
    "int": as_number,
    "float": as_number,
    "bool": as_flag,
    "enum": _text,
    "text": _text,
    "list": _items,
    "rank": _items,
}


def field_series(frame: pd.DataFrame, field: FieldPlan) -> pd.Series:
    """The field's values coerced to its type; missing (or ill-typed) values are NA."""
    if field.name not in frame.columns:
        raw = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    else:
        raw = frame[field.name]
    coerced = raw.map(_COERCE[field.kind]).astype(object)
    if field.kind in NUMERIC_KINDS:
        return coerced.astype(float)
    return coerced


def levels(field: FieldPlan, values: pd.Series) -> list[str]:
    """Categories in display order: declared members first, then anything else seen."""
    declared = BOOL_LEVELS if field.kind == "bool" else list(field.members)
    seen = sorted({str(v) for v in values.dropna()} - set(declared))
    return declared + seen


def coverage(frame: pd.DataFrame, field: FieldPlan) -> FieldCoverage:
    """Answered/missing counts for a field, with the extractor's reasons for the missing."""
    values = field_series(frame, field)
    missing = values.isna()
    reasons: Counter[str] = Counter()
    notes = frame["_missing"] if "_missing" in frame.columns else pd.Series(index=frame.index)
    for note in notes[missing]:
        reason = note.get(field.name) if isinstance(note, dict) else None
        reasons[str(reason) if reason else "no value"] += 1
    return FieldCoverage(
        name=field.name,
        kind=field.kind,
        low=field.low,
        high=field.high,
        members=list(field.members),
        n=int((~missing).sum()),
        missing=int(missing.sum()),
        missing_reasons=dict(sorted(reasons.items())),
        ranks=rank_stats(values.dropna().tolist(), field.members) if field.kind == "rank" else [],
    )


@dataclass(frozen=True)
class Grouping:
    """Which group each row belongs to; `None` marks rows outside every group."""

    labels: pd.Series
    order: list[str]
    reference: str | None  # the arm others are compared against


def _intervention_grouping(frame: pd.DataFrame, column: str, plan: InterventionPlan) -> Grouping:
    if column in frame.columns:
        labels = frame[column].map(_label)
    else:
        labels = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    order = [variant.name for variant in plan.variants]
    if plan.control > 0 or (labels == CONTROL).any():
        order.append(CONTROL)
    order += sorted(set(labels.dropna()) - set(order))
    reference = CONTROL if CONTROL in order else (order[0] if order else None)
    return Grouping(labels=labels.astype(object), order=order, reference=reference)


def grouping(
    frame: pd.DataFrame,
    by: str,
    interventions: Sequence[InterventionPlan],
    column: str | None = None,
    brackets: Sequence[BracketPlan] = (),
) -> Grouping | None:
    """Groups for `by`: an intervention's arms, or the values of a result column.

    `by variant` means the arms of the only intervention. `column` is the row
    column of an attribute (`persona_income`), and `brackets` group a numeric
    one's values in bracket order. For a plain column, rows without a value
    form the group `(none)` and groups keep the order in which they first
    appear (the agents' order); `replicate` groups in number order.
    """
    by_name = {plan.name: plan for plan in interventions}
    if column is None and by in by_name:
        column_name = f"variant_{by}"
        if column_name not in frame.columns and len(interventions) == 1:
            column_name = "variant"
        return _intervention_grouping(frame, column_name, by_name[by])
    if column is None and by == "variant" and len(interventions) == 1:
        return grouping(frame, interventions[0].name, interventions)
    name = column or by
    if name not in frame.columns:
        if by == "replicate":  # one replicate: the rows carry no column
            labels = pd.Series(["1"] * len(frame), index=frame.index, dtype=object)
            return Grouping(labels=labels, order=["1"] if len(frame) else [], reference="1")
        return None
    if brackets:
        labels = frame[name].map(lambda v: _bracket(v, brackets) or NO_GROUP).astype(object)
        order = [b.label for b in brackets if (labels == b.label).any()]
        if (labels == NO_GROUP).any():
            order.append(NO_GROUP)
        return Grouping(labels=labels, order=order, reference=order[0] if order else None)
    labels = frame[name].map(lambda v: _label(v) or NO_GROUP).astype(object)
    order = list(dict.fromkeys(labels))
    if by == "replicate":
        order.sort(key=lambda label: (not label.isdigit(), int(label) if label.isdigit() else 0))
    return Grouping(labels=labels, order=order, reference=order[0] if order else None)


def _bracket(value: Any, brackets: Sequence[BracketPlan]) -> str | None:
    number = as_number(value)
    if number is None:
        return None
    for bracket in brackets:
        if bracket.low <= number <= bracket.high:
            return bracket.label
    return None


def replicate_labels(frame: pd.DataFrame) -> pd.Series:
    """Each row's replicate as a label (`"1"`, `"2"`, ...); rows of a run without
    replicates carry no column and are all replicate `"1"`."""
    if "replicate" not in frame.columns:
        return pd.Series(["1"] * len(frame), index=frame.index, dtype=object)
    return frame["replicate"].map(_replicate).astype(object)


def _replicate(value: Any) -> str:
    number = as_number(value)
    return str(int(number)) if number is not None and number.is_integer() else "1"


def filter_rows(frame: pd.DataFrame, row_filter: RowFilterPlan | None) -> pd.DataFrame:
    """The rows `for GROUP` or `for ATTRIBUTE == value` keeps (all rows without a filter)."""
    if row_filter is None:
        return frame
    if row_filter.agents is not None:
        if "agent" not in frame.columns:
            return frame.iloc[0:0]
        return frame[frame["agent"].isin(set(row_filter.agents))]
    column = row_filter.column or ""
    if column not in frame.columns:
        if column == "replicate":
            column_values = pd.Series(["1"] * len(frame), index=frame.index, dtype=object)
        else:
            return frame.iloc[0:0]
    else:
        column_values = frame[column].map(lambda v: _label(v) or "")
    wanted = str(row_filter.value).casefold()
    equal = column_values.map(lambda v: str(v).casefold() == wanted).astype(bool)
    return frame[equal] if row_filter.comparator != "!=" else frame[~equal]


def grouping_problem(by: str, interventions: Sequence[InterventionPlan]) -> str:
    """Why `by` names no grouping, in words a scenario author can act on."""
    if by == "variant" and len(interventions) > 1:
        names = ", ".join(plan.name for plan in interventions)
        return f"`by variant` is ambiguous with several interventions ({names}): name one"
    return f"no intervention or result column named `{by}`"
