"""How numbers are written in conclusions, reports and diffs: one style everywhere."""

from __future__ import annotations

from tiny_dsl.analysis.model import Interval

NOT_AVAILABLE = "n/a"


def number(value: float | None, places: int = 2) -> str:
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, int):
        return str(value)
    return f"{value:.{places}f}"


def plain(value: float) -> str:
    """A number as an author would write it: `10`, `0.5`, `2.75`."""
    return f"{value:g}"


def p_value(value: float | None) -> str:
    """A p-value for a table cell: `0.034`, `<0.001`."""
    if value is None:
        return NOT_AVAILABLE
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def p_equals(value: float | None) -> str:
    """A p-value in a sentence: `p = 0.034`, `p < 0.001`."""
    shown = p_value(value)
    return f"p {shown[0]} {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


def percent(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"{100 * value:.0f}%"


def points(value: float | None) -> str:
    """A difference of two shares, in percentage points; one that rounds to zero has no sign."""
    if value is None:
        return NOT_AVAILABLE
    rounded = round(100 * value)
    return f"{rounded:+d} pts" if rounded else "0 pts"


def interval(ci: Interval | None, unit: str = "") -> str:
    """`low to high`; unit `%` writes shares as percentages, `pts` as percentage points."""
    if ci is None:
        return NOT_AVAILABLE
    if unit == "%":
        return f"{percent(ci.low)} to {percent(ci.high)}"
    if unit == "pts":
        return f"{points(ci.low)} to {points(ci.high)}"
    return f"{number(ci.low)} to {number(ci.high)}"
