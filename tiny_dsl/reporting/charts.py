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
from matplotlib.ticker import MaxNLocator, PercentFormatter

from tiny_dsl.analysis import (
    FieldCoverage,
    FunnelResult,
    GroupStats,
    ReplicateSpread,
    ValidationResult,
)
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


def histogram_chart(
    prefix: str, title: str, groups: Sequence[GroupStats], levels: Sequence[str] = ()
) -> str | None:
    """How many answers fell on each value (a number field's bins, or each category
    in `levels`), one bar per group side by side: the distribution behind a mean."""
    shown = [stats for stats in groups if stats.n > 0]
    if not shown:
        return None
    if levels:
        categories = list(levels)
        counts = [
            [{s.level: s.count for s in stats.levels}.get(level, 0) for level in categories]
            for stats in shown
        ]
    else:
        categories = [item.label for item in shown[0].histogram]
        counts = [[item.count for item in stats.histogram] for stats in shown]
    if not categories:
        return None
    with _style():
        figure = Figure(figsize=(_WIDTH, 3.0))
        axes = figure.add_subplot()
        width = 0.8 / len(shown)
        colors = _colors([stats.group for stats in shown])
        for index, (stats, color, heights) in enumerate(zip(shown, colors, counts, strict=True)):
            xs = [x - 0.4 + width * (index + 0.5) for x in range(len(categories))]
            axes.bar(
                xs,
                heights,
                width=width * 0.9,
                color=color,
                label=_label(stats).replace("\n", ", "),
            )
        axes.set_xticks(range(len(categories)), categories)
        if len(categories) > 8:
            axes.tick_params(axis="x", labelrotation=45)
        axes.set_ylabel("answers")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(axis="y", alpha=0.3)
        if len(shown) > 1:
            axes.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes.set_title(title, loc="left")
        return _svg(figure, prefix)


def spread_chart(prefix: str, title: str, spreads: Sequence[ReplicateSpread]) -> str | None:
    """Each group's statistic across replicates: the mean of the replicates' values
    with error bars from the lowest to the highest, and each replicate as a dot."""
    shown = [spread for spread in spreads if spread.mean is not None]
    if not shown:
        return None
    proportion = all(spread.statistic.startswith("share") for spread in shown)
    with _style():
        figure = Figure(figsize=(_WIDTH, 3.2))
        axes = figure.add_subplot()
        colors = _colors([spread.group for spread in shown])
        for x, (spread, color) in enumerate(zip(shown, colors, strict=True)):
            mean = spread.mean or 0.0
            low, high = spread.min or mean, spread.max or mean
            axes.errorbar(
                x, mean, yerr=[[mean - low], [high - mean]], fmt="o", color=color, capsize=6, ms=8
            )
            dots = [value for value in spread.values if value is not None]
            axes.plot([x + 0.12] * len(dots), dots, ".", color="#333333", ms=5)
        labels = [
            spread.group
            if len({s.statistic for s in shown}) == 1
            else f"{spread.group}\n{spread.statistic}"
            for spread in shown
        ]
        axes.set_xticks(range(len(shown)), labels)
        axes.set_xlim(-0.6, len(shown) - 0.4)
        if proportion:
            axes.set_ylim(0, 1.05)
            axes.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_ylabel(f"{shown[0].statistic.split(' ')[0]} per replicate (min to max)")
        axes.grid(axis="y", alpha=0.3)
        axes.set_title(title, loc="left")
        return _svg(figure, prefix)


_SIMULATED_COLOR = _PALETTE[0]
_REAL_COLOR = "#333333"


def validation_chart(prefix: str, title: str, result: ValidationResult) -> str | None:
    """Simulated and real answers overlaid, as shares of each side (the sides may
    differ in size): side-by-side bars per category, or outlined histograms over the
    bins both sides share. A narrower simulated spread shows as a taller, thinner shape."""
    sim, real = result.simulated, result.real
    if not sim.n or not real.n:
        return None
    with _style():
        figure = Figure(figsize=(_WIDTH, 3.2))
        axes = figure.add_subplot()
        if result.categories:
            xs = range(len(result.categories))
            for offset, side, color, name in (
                (-0.2, sim, _SIMULATED_COLOR, "simulated"),
                (0.2, real, _REAL_COLOR, "real"),
            ):
                shares = [count / side.n for count in side.counts]
                axes.bar(
                    [x + offset for x in xs],
                    shares,
                    width=0.38,
                    color=color,
                    alpha=0.85,
                    label=f"{name}, n={side.n}",
                )
            axes.set_xticks(list(xs), result.categories)
        elif sim.histogram and real.histogram:
            edges = [item.low for item in sim.histogram] + [sim.histogram[-1].high]
            for side, color, name, fill in (
                (sim, _SIMULATED_COLOR, "simulated", True),
                (real, _REAL_COLOR, "real", False),
            ):
                shares = [item.count / side.n for item in side.histogram]
                axes.stairs(
                    shares,
                    edges,
                    fill=fill,
                    alpha=0.5 if fill else 1.0,
                    color=color,
                    lw=2,
                    label=f"{name}, n={side.n}",
                )
        else:
            return None
        axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes.set_ylabel("share of each side's answers")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes.set_title(title, loc="left")
        return _svg(figure, prefix)


def margins_chart(prefix: str, title: str, result: ValidationResult) -> str | None:
    """Each group's simulated value against the real one; the diagonal is agreement."""
    if not result.margins:
        return None
    with _style():
        figure = Figure(figsize=(_WIDTH * 0.7, 3.6))
        axes = figure.add_subplot()
        reals = [row.real for row in result.margins]
        sims = [row.simulated for row in result.margins]
        low, high = min(reals + sims), max(reals + sims)
        pad = (high - low) * 0.1 or 0.5
        axes.plot([low - pad, high + pad], [low - pad, high + pad], "--", color="#999999", lw=1)
        axes.plot(reals, sims, "o", color=_SIMULATED_COLOR, ms=8)
        for row in result.margins:
            axes.annotate(
                row.group, (row.real, row.simulated), xytext=(6, 4), textcoords="offset points"
            )
        axes.set_xlim(low - pad, high + pad)
        axes.set_ylim(low - pad, high + pad)
        if result.statistic == "share":
            axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes.set_xlabel(f"real {result.statistic}")
        axes.set_ylabel(f"simulated {result.statistic}")
        axes.grid(alpha=0.3)
        axes.set_title(title, loc="left")
        return _svg(figure, prefix)
