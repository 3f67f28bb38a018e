"""Charts as inline SVG strings, drawn with matplotlib's object API.

The object API (`Figure`, no `pyplot`) needs no GUI backend and leaves no open
figures behind in a long-running process. SVG keeps the HTML report one self-contained
file that stays sharp when zoomed; text stays text (`svg.fonttype: none`) so it is
small and searchable. A fixed hash salt and no date make the output byte-stable, so two
reports of the same run are identical. Element ids are prefixed per chart because
all charts share one HTML document and matplotlib numbers its ids from 1 in each.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from tiny_dsl.analysis import FieldCoverage, FunnelResult, GroupStats
from tiny_dsl.analysis.data import CONTROL

_PALETTE = ["#3569a8", "#e0782c", "#3f9652", "#8e63b5", "#c2403c", "#2a9d8f", "#a67c00"]
_CONTROL_COLOR = "#8c8c8c"
_WIDTH = 7.0  # inches; the report's column is about this wide at 96 dpi
_ID = re.compile(r'\bid="([^"]+)"')
_ID_USE = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


def _style() -> AbstractContextManager[None]:
    return mpl.rc_context(
        {
            "svg.fonttype": "none",
            "svg.hashsalt": "tiny_dsl",
            "font.family": "sans-serif",
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.titleweight": "bold",
        }
    )


def _colors(groups: Sequence[str]) -> list[str]:
    colors, index = [], 0
    for group in groups:
        if group == CONTROL:
            colors.append(_CONTROL_COLOR)
        else:
            colors.append(_PALETTE[index % len(_PALETTE)])
            index += 1
    return colors


def _svg(figure: Figure, prefix: str) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # inline SVG takes no XML prolog or doctype
    ids = set(_ID.findall(svg))

    def rename(match: re.Match[str]) -> str:
        opening, name = match.groups()
        return f"{opening}{prefix}-{name}" if name in ids else match.group(0)

    return _ID_USE.sub(rename, svg)


def _label(stats: GroupStats) -> str:
    return f"{stats.group}\nn={stats.n}"


def means_chart(
    prefix: str, title: str, groups: Sequence[GroupStats], field: FieldCoverage | None
) -> str | None:
    """Mean per group with its 95% CI as error bars; the y-axis spans the field's range."""
    shown = [stats for stats in groups if stats.mean is not None]
    if not shown:
        return None
    with _style():
        figure = Figure(figsize=(_WIDTH, 3.2))
        axes = figure.add_subplot()
        colors = _colors([stats.group for stats in shown])
        for x, (stats, color) in enumerate(zip(shown, colors, strict=True)):
            mean = stats.mean or 0.0
            if stats.ci is not None:
                errors = [[mean - stats.ci.low], [stats.ci.high - mean]]
                axes.errorbar(x, mean, yerr=errors, fmt="o", color=color, capsize=6, lw=2, ms=8)
            else:
                axes.plot(x, mean, "o", color=color, ms=8)
            axes.annotate(
                f"{mean:.2f}", (x, mean), xytext=(10, 0), textcoords="offset points", va="center"
            )
        axes.set_xticks(range(len(shown)), [_label(stats) for stats in shown])
        axes.set_xlim(-0.6, len(shown) - 0.4)
        if field is not None and field.low is not None and field.high is not None:
            pad = (field.high - field.low) * 0.05
            axes.set_ylim(field.low - pad, field.high + pad)
        axes.set_ylabel("mean (95% CI)")
        axes.grid(axis="y", alpha=0.3)
        axes.set_title(title, loc="left")
        return _svg(figure, prefix)


def shares_chart(
    prefix: str, title: str, groups: Sequence[GroupStats], levels: Sequence[str]
) -> str | None:
    """Share of each category per group (grouped bars) with Wilson 95% CIs."""
    shown = [stats for stats in groups if stats.n > 0]
    if not shown or not levels:
        return None
    with _style():
        figure = Figure(figsize=(_WIDTH, 3.2))
        axes = figure.add_subplot()
        width = 0.8 / len(shown)
        colors = _colors([stats.group for stats in shown])
        for index, (stats, color) in enumerate(zip(shown, colors, strict=True)):
            by_level = {share.level: share for share in stats.levels}
            xs, heights, low_err, high_err = [], [], [], []
            for x, level in enumerate(levels):
                share = by_level.get(level)
                value = share.share if share is not None and share.share is not None else 0.0
                ci = share.ci if share is not None else None
                xs.append(x - 0.4 + width * (index + 0.5))
                heights.append(value)
                low_err.append(value - ci.low if ci else 0.0)
                high_err.append(ci.high - value if ci else 0.0)
            axes.bar(
                xs,
                heights,
                width=width * 0.9,
                color=color,
                yerr=[low_err, high_err],
                capsize=3,
                ecolor="#333333",
                label=_label(stats).replace("\n", ", "),
            )
        axes.set_xticks(range(len(levels)), list(levels))
        axes.set_ylim(0, 1.05)
        axes.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_ylabel("share (95% CI)")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes.set_title(title, loc="left")
        return _svg(figure, prefix)


def items_chart(prefix: str, title: str, stats: GroupStats) -> str | None:
    """The most frequent answers or list items, as horizontal bars of their share."""
    if not stats.top_items:
        return None
    items = list(reversed(stats.top_items))
    with _style():
        figure = Figure(figsize=(_WIDTH, 0.6 + 0.35 * len(items)))
        axes = figure.add_subplot()
        labels = [item.item if len(item.item) <= 40 else item.item[:39] + "…" for item in items]
        axes.barh(labels, [item.share for item in items], color=_PALETTE[0])
        for y, item in enumerate(items):
            axes.annotate(
                f"{item.count}",
                (item.share, y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
            )
        axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes.set_xlabel(f"share of {stats.n} answers")
        axes.set_title(title, loc="left")
        return _svg(figure, prefix)


def funnel_chart(prefix: str, result: FunnelResult) -> str | None:
    """Stages top to bottom, bar = share of all agents still in; drop-off written beside."""
    if not result.stages or not result.total:
        return None
    with _style():
        figure = Figure(figsize=(_WIDTH, 0.9 + 0.55 * len(result.stages)))
        axes = figure.add_subplot()
        labels = [f"{index}. {stage.field}" for index, stage in enumerate(result.stages, 1)]
        shares = [stage.share_of_all or 0.0 for stage in result.stages]
        ys = list(range(len(result.stages)))
        axes.barh(ys, shares, color=_PALETTE[0], height=0.6)
        axes.set_yticks(ys, labels)
        axes.invert_yaxis()
        for y, stage in enumerate(result.stages):
            text = f"{stage.passed} of {result.total} ({(stage.share_of_all or 0.0):.0%})"
            if y and stage.drop_off is not None:
                text += f"   drop-off {stage.drop_off:.0%}"
            axes.annotate(
                text, (shares[y], y), xytext=(6, 0), textcoords="offset points", va="center"
            )
        axes.set_xlim(0, 1.45)
        axes.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        axes.xaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_xlabel("share of all agents passing the stage")
        axes.set_title(result.statement, loc="left")
        return _svg(figure, prefix)
