"""What a report shows, independent of HTML or Markdown.

Both formats render the same `ReportView`, so a number can never differ between
report.html and report.md. Everything here is already text: the renderers only lay
it out. Statistics come from the run's `AnalysisResult`; nothing is recomputed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tiny_dsl.analysis import (
    AnalysisResult,
    CompareResult,
    Effect,
    FieldCoverage,
    FieldDistribution,
    FunnelResult,
    GroupStats,
    Interval,
    RankStats,
    ReplicateSpread,
    StatTest,
    SummaryResult,
    ValidationResult,
    text,
)
from tiny_dsl.analysis.compare import primary_test
from tiny_dsl.analysis.data import CONTROL
from tiny_dsl.analysis.expect import shown_value
from tiny_dsl.analysis.stats import ALPHA
from tiny_dsl.analysis.validate import SD_RATIO_WARNING
from tiny_dsl.reporting import charts
from tiny_dsl.reporting.rundir import RunData
from tiny_dsl.rundir import QualityCounts

# Persona attributes shown in the population table, in this order when present;
# the rest are in each agent's section.
_PERSONA_COLUMNS = ("age", "gender", "nationality", "residence", "occupation", "education")
_MAX_PERSONA_COLUMNS = 6
_CELL_CHARS = 80
_EMBEDDED_MARKERS = ("smollm",)


@dataclass(frozen=True)
class Cell:
    text: str
    href: str | None = None
    tone: str = ""  # "", "pass", "fail", "warn", "muted"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    numeric: frozenset[int] = frozenset()  # right-aligned columns


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell | str]],
    caption: str = "",
    numeric: Iterable[int] = (),
) -> Table:
    cells = [[cell if isinstance(cell, Cell) else Cell(cell) for cell in row] for row in rows]
    return Table(list(headers), cells, caption, frozenset(numeric))


@dataclass
class Block:
    """One analysis statement: verdict, cautions, chart and tables."""

    anchor: str
    title: str
    origin: str
    conclusion: str
    tone: str  # "good": evidence; "warn": small sample or problem; "": no clear difference
    cautions: list[str]
    chart: str | None
    tables: list[Table]
    # further charts after the first: the distribution per group, the replicates' spread
    charts: list[str] = field(default_factory=list)


@dataclass
class Entry:
    time: str
    step: str
    kind: str
    who: str
    content: str


@dataclass
class AgentSection:
    anchor: str
    agent: str
    name: str
    facts: list[tuple[str, str]]
    entries: list[Entry]


@dataclass
class Banner:
    tone: str  # "danger" or "info"
    title: str
    text: str


@dataclass
class ReportView:
    title: str
    scenario: str
    run_id: str  # the folder name, the same however `tts report` was pointed at it
    banner: Banner | None
    problems: list[str]
    overview: Table
    notes: list[str] = field(default_factory=list)  # the run's own warnings (manifest `notes`)
    passed: int = 0
    failed: int = 0
    expectations: Table | None = None
    compares: list[Block] = field(default_factory=list)
    summaries: list[Block] = field(default_factory=list)
    funnels: list[Block] = field(default_factory=list)
    coverage: Table | None = None
    # Per `extract overall` record, one field/value table; shown in the Summary section.
    world_summaries: list[Table] = field(default_factory=list)
    # Per `rank` field, its members over everyone: first choices, mean rank, Borda.
    rankings: list[Table] = field(default_factory=list)
    balance: list[Table] = field(default_factory=list)
    population: Table | None = None
    results: Table | None = None
    steps: Table | None = None
    agents: list[AgentSection] = field(default_factory=list)
    adjustment: str = ""
    # The verdict box at the top: one sentence per `compare` (tone "good": a group is
    # ahead) and per `validate` (tone "warn": the simulated spread is too narrow).
    verdicts: list[Cell] = field(default_factory=list)
    # Every number, bool and enum field's histogram per group.
    distributions: list[Block] = field(default_factory=list)
    # Each `validate`: both distributions overlaid, the metrics, a too-narrow spread.
    validations: list[Block] = field(default_factory=list)
    # Per step with turns or answers: what the answer-quality checks flagged.
    quality: Table | None = None


def anchor(agent: str) -> str:
    """An HTML id for an agent: `consumers/007` -> `agent-consumers-007`."""
    return "agent-" + re.sub(r"[^A-Za-z0-9_-]+", "-", agent).strip("-")


def _short(value: Any, limit: int = _CELL_CHARS) -> str:
    shown = _plain(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _plain(value: Any) -> str:
    """Any JSON value as one line of text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return text.number(value)
    if isinstance(value, list):
        return ", ".join(_plain(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_plain(item)}" for key, item in value.items())
    return str(value)


# ------------------------------------------------------------------- overview


def _answered_by(run: RunData) -> list[tuple[str, str]]:
    manifest = run.manifest
    if manifest is None:
        return []
    pairs = [(item.provider or "?", item.model or "?") for item in manifest.answered_by]
    if not pairs and (manifest.provider or manifest.model):
        pairs = [(manifest.provider or "?", manifest.model or "?")]
    return pairs


def _banner(run: RunData) -> Banner | None:
    pairs = _answered_by(run)
    embedded = [
        model
        for provider, model in pairs
        if provider == "embedded" or any(mark in model.lower() for mark in _EMBEDDED_MARKERS)
    ]
    if embedded:
        return Banner(
            tone="danger",
            title="Demo-quality answers",
            text=(
                f"These answers come from {', '.join(sorted(set(embedded)))}, the tiny embedded "
                "model that lets a scenario run with no setup. Its answers are not realistic "
                "enough to base a decision on: re-run with a capable model "
                "(`tts run --provider ... --model ...`)."
            ),
        )
    if not pairs:
        return Banner(
            tone="info",
            title="Unknown model",
            text="The run directory does not say which model answered (no manifest).",
        )
    return None


def _run_notes(run: RunData) -> list[str]:
    return list(run.manifest.notes) if run.manifest else []


def _overview(run: RunData) -> Table:
    settings, manifest = run.settings, run.manifest
    rows: list[tuple[str, str]] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, "", []):
            rows.append((label, _plain(value)))

    add("Scenario", f"{settings.get('title') or run.scenario} ({run.scenario})")
    add("Source", run.plan.get("source_file"))
    requested = settings.get("model") or "(default)"
    if settings.get("provider"):
        requested = f"{settings['provider']} / {requested}"
    add("Model requested", requested)
    add("Answered by", ", ".join(f"{p} / {m}" for p, m in _answered_by(run)) or "unknown")
    add("Seed", manifest.seed if manifest else settings.get("seed"))
    plan_hash = (manifest.plan_hash if manifest else "") or run.plan.get("plan_hash")
    add("Plan hash", str(plan_hash)[:16] if plan_hash else None)
    if manifest is not None:
        add("Started", manifest.started)
        add("Finished", manifest.finished)
        add("Duration", f"{manifest.duration_s:.1f} s")
        add("Model calls", f"{manifest.model_calls} ({manifest.cache_hits} from cache)")
        if manifest.external_calls or manifest.external_cache_hits:
            add(
                "External calls",
                f"{manifest.external_calls} to systems under test "
                f"({manifest.external_cache_hits} from the record)",
            )
        quality = manifest.quality
        if quality.turns or quality.answers:
            add("Quality of answers", _quality_cell(quality).text)
        if quality.judged:
            add("Judge's mean scores", _scores_cell(quality))
        add("Tokens", f"{manifest.input_tokens} in, {manifest.output_tokens} out")
        add("Cost", f"{manifest.cost_usd:.4f} USD")
    # Distinct agents: an agent has a row per world and per replicate.
    agents = {row.get("agent") for row in run.rows}
    add("Agents", len(agents) if run.rows else None)
    return table(["", ""], rows)


# ------------------------------------------------------------------- analysis


def _expectations(analysis: AnalysisResult) -> Table | None:
    if not analysis.expectations:
        return None
    rows: list[list[Cell | str]] = []
    for item in analysis.expectations:
        status = Cell("PASS", tone="pass") if item.passed else Cell("FAIL", tone="fail")
        observed = shown_value(item.aggregate, item.observed)
        rows.append([status, item.statement, observed, item.reason, item.origin])
    return table(["Result", "Expectation", "Observed", "Detail", "Where"], rows)


def _arm_table(groups: Sequence[GroupStats], kind: str, levels: Sequence[str], first: str) -> Table:
    """Per-group statistics; `kind` is the field's kind, `first` the group column's title."""
    if kind in ("int", "float"):
        headers = [first, "n", "Missing", "Mean", "SD", "Median", "Min", "Max", "95% CI of mean"]
        rows = [
            [
                stats.group,
                str(stats.n),
                str(stats.missing),
                text.number(stats.mean),
                text.number(stats.sd),
                text.number(stats.median),
                text.number(stats.min),
                text.number(stats.max),
                text.interval(stats.ci),
            ]
            for stats in groups
        ]
        return table(headers, rows, numeric=range(1, 9))
    if kind in ("bool", "enum"):
        titles = ["share true (95% CI)"] if kind == "bool" else [f"{lv} (95% CI)" for lv in levels]
        rows = []
        for stats in groups:
            by_level = {share.level: share for share in stats.levels}
            row = [stats.group, str(stats.n), str(stats.missing)]
            for level in levels:
                share = by_level.get(level)
                row.append(
                    f"{text.percent(share.share)} ({share.count}) [{text.interval(share.ci, '%')}]"
                    if share is not None and share.share is not None
                    else text.NOT_AVAILABLE
                )
            rows.append(row)
        return table([first, "n", "Missing", *titles], rows, numeric=range(1, 3 + len(levels)))
    if kind == "rank":
        rank_rows = [
            [stats.group, str(stats.n), str(stats.missing), *_rank_cells(ranked)]
            for stats in groups
            for ranked in stats.ranks
        ]
        return table([first, "n", "Missing", *RANK_HEADERS], rank_rows, numeric=range(1, 7))
    rows = [
        [
            stats.group,
            str(stats.n),
            str(stats.missing),
            ", ".join(f"{item.item} ({item.count})" for item in stats.top_items),
        ]
        for stats in groups
    ]
    return table([first, "n", "Missing", "Most frequent"], rows, numeric=(1, 2))


RANK_HEADERS = ("Member", "First choice", "Mean rank", "Borda")


def _rank_cells(ranked: RankStats) -> list[str]:
    """A member's line of a ranking table (best Borda score first)."""
    first = f"{text.percent(ranked.first_share)} ({ranked.first})"
    return [ranked.member, first, text.number(ranked.mean_rank), str(ranked.borda)]


def _rankings(analysis: AnalysisResult) -> list[Table]:
    """Every `rank` field over all its answers (Borda: n-1 points for a first place ... 0)."""
    tables = []
    for item in analysis.fields:
        if item.kind != "rank":
            continue
        rows = [_rank_cells(ranked) for ranked in item.ranks]
        caption = f"Ranking `{item.name}` over {item.n} answers (Borda: n-1 points for first)"
        tables.append(table(list(RANK_HEADERS), rows, caption, numeric=(1, 2, 3)))
    return tables


def _world_summaries(run: RunData) -> list[Table]:
    """One table per `extract overall` record: each field and its value (or why missing)."""
    tables = []
    for record in run.summaries:
        reasons = record.get("_missing") if isinstance(record.get("_missing"), dict) else {}
        rows: list[list[Cell | str]] = []
        for key, value in record.items():
            if key in ("world", "step", "_missing", "replicate"):
                continue
            if value is None:
                reason = reasons.get(key) if isinstance(reasons, dict) else None
                rows.append(
                    [key, Cell(f"missing: {reason}" if reason else "missing", tone="muted")]
                )
            elif isinstance(value, list):
                rows.append([key, "; ".join(str(item) for item in value)])
            else:
                rows.append([key, str(value)])
        replicate = f"replicate {record['replicate']}, " if "replicate" in record else ""
        caption = f"World `{record.get('world')}` as a whole ({replicate}step {record.get('step')})"
        tables.append(table(["Field", "Value"], rows, caption))
    return tables


def _test_row(comparison: str, test: StatTest) -> list[Cell | str]:
    return [
        comparison,
        test.label,
        text.number(test.statistic),
        text.number(test.df),
        text.p_value(test.p_value),
        text.p_value(test.p_adjusted),
        test.note,
    ]


def _effect_row(comparison: str, effect: Effect) -> list[Cell | str]:
    if effect.name == "proportion_difference":
        shown = text.points(effect.value), text.interval(effect.ci, "pts")
    else:
        shown = text.number(effect.value), text.interval(effect.ci)
    return [comparison, effect.title, *shown]


def _field_levels(field: FieldCoverage | None, groups: Sequence[GroupStats]) -> list[str]:
    if field is not None and field.kind == "bool":
        return ["true"]
    seen = [share.level for stats in groups for share in stats.levels]
    return list(dict.fromkeys(seen))


def _compare_block(index: int, result: CompareResult, fields: dict[str, FieldCoverage]) -> Block:
    field = fields.get(result.field)
    kind = field.kind if field else ("int" if result.kind == "numeric" else "enum")
    levels = _field_levels(field, result.arms)
    tables = []
    chart = None
    extra: list[str] = []
    if not result.problem:
        tables.append(_arm_table(result.arms, kind, levels, "Arm"))
        test_rows = [_test_row("all arms", test) for test in result.tests]
        effect_rows = [_effect_row("all arms", effect) for effect in result.effects]
        for pair in result.pairs:
            label = f"{pair.arm} vs {pair.reference}"
            test_rows += [_test_row(label, test) for test in pair.tests]
            effect_rows += [_effect_row(label, effect) for effect in pair.effects]
        tables.append(
            table(
                ["Comparison", "Test", "Statistic", "df", "p", "Holm p", "Note"],
                test_rows,
                caption="Tests (Holm p: adjusted across all compare statements)",
                numeric=(2, 3, 4, 5),
            )
        )
        tables.append(
            table(
                ["Comparison", "Effect size", "Value", "95% CI"],
                effect_rows,
                caption="Effect sizes",
                numeric=(2,),
            )
        )
        title = f"{result.field} by {result.by}"
        prefix = f"compare-{index}"
        if result.kind == "numeric":
            chart = charts.means_chart(prefix, f"{title}: mean with 95% CI", result.arms, field)
        else:
            chart = charts.shares_chart(prefix, f"{title}: share with 95% CI", result.arms, levels)
        histogram = charts.histogram_chart(
            f"{prefix}-histogram",
            f"{title}: answers per group",
            result.arms,
            levels if result.kind == "categorical" else (),
        )
        extra = [histogram] if histogram else []
        extra += _spreads(prefix, title, result.spreads, tables)
    return Block(
        anchor=f"compare-{index}",
        title=result.statement,
        origin=result.origin,
        conclusion=result.conclusion,
        tone=_compare_tone(result),
        cautions=[],  # conclude() already names them
        chart=chart,
        tables=tables,
        charts=extra,
    )


def _summary_block(index: int, result: SummaryResult, fields: dict[str, FieldCoverage]) -> Block:
    field = fields.get(result.field)
    prefix = f"summary-{index}"
    chart = None
    tables = []
    extra: list[str] = []
    if not result.problem and result.kind is not None:
        groups = [*result.groups, *([result.overall] if result.overall else [])]
        levels = _field_levels(field, groups)
        tables.append(_arm_table(groups, result.kind, levels, result.by.capitalize()))
        title = f"{result.field} by {result.by}"
        if result.kind in ("int", "float"):
            chart = charts.means_chart(prefix, f"{title}: mean with 95% CI", result.groups, field)
        elif result.kind in ("bool", "enum"):
            chart = charts.shares_chart(
                prefix, f"{title}: share with 95% CI", result.groups, levels
            )
        elif result.overall is not None:
            chart = charts.items_chart(prefix, f"{result.field}: most frequent", result.overall)
        if result.kind in ("int", "float", "bool", "enum"):
            histogram = charts.histogram_chart(
                f"{prefix}-histogram",
                f"{title}: answers per group",
                result.groups,
                levels if result.kind in ("bool", "enum") else (),
            )
            extra += [histogram] if histogram else []
        extra += _spreads(prefix, title, result.spreads, tables)
    return Block(
        anchor=prefix,
        title=result.statement,
        origin=result.origin,
        conclusion=f"Not summarized: {result.problem}." if result.problem else "",
        tone="warn" if result.problem else "",
        cautions=list(result.cautions),
        chart=chart,
        tables=tables,
        charts=extra,
    )


def _compare_tone(result: CompareResult) -> str:
    """The block's tone: "good" when a group is ahead after adjustment, "warn" when
    there is too little data to say."""
    if result.problem or result.small_sample:
        return "warn"
    primary = primary_test(result)
    ahead = primary is not None and primary.p_adjusted is not None and primary.p_adjusted < ALPHA
    return "good" if ahead else ""


def _spreads(
    prefix: str, title: str, spreads: Sequence[ReplicateSpread], tables: list[Table]
) -> list[str]:
    """With replicates: the spread table (appended to `tables`) and its error-bar chart."""
    if not spreads:
        return []
    tables.append(_spread_table(spreads))
    chart = charts.spread_chart(f"{prefix}-spread", f"{title}: across replicates", spreads)
    return [chart] if chart else []


def _spread_table(spreads: Sequence[ReplicateSpread]) -> Table:
    """Each group's statistic per replicate, their mean, SD and range."""
    names = spreads[0].replicates
    proportion = all(spread.statistic.startswith("share") for spread in spreads)

    def shown(value: float | None) -> str:
        return text.percent(value) if proportion else text.number(value)

    rows = [
        [
            spread.group,
            spread.statistic,
            *(shown(value) for value in spread.values),
            shown(spread.mean),
            text.points(spread.sd) if proportion else text.number(spread.sd),
            f"{shown(spread.min)} to {shown(spread.max)}",
        ]
        for spread in spreads
    ]
    return table(
        ["Group", "Statistic", *(f"replicate {name}" for name in names), "Mean", "SD", "Range"],
        rows,
        caption=f"Across {len(names)} replicates (same people, other model seeds)",
        numeric=range(2, 5 + len(names)),
    )


def _validation_block(index: int, result: ValidationResult) -> Block:
    """Simulated against real: the overlay chart, each side's figures and every metric."""
    prefix = f"validation-{index}"
    tables: list[Table] = []
    chart = None
    if result.kind == "margins":
        chart = charts.margins_chart(prefix, f"{result.field}: simulated against real", result)
        share = result.statistic == "share"

        def shown(value: float | None) -> str:
            return text.percent(value) if share else text.number(value)

        rows = [
            [
                row.group,
                shown(row.simulated),
                shown(row.real),
                text.points(row.simulated - row.real)
                if share
                else text.number(row.simulated - row.real),
            ]
            for row in result.margins
        ]
        rows += [[group, "no answers", "", ""] for group in result.missing_groups]
        tables.append(
            table(
                [
                    "Group",
                    f"Simulated {result.statistic}",
                    f"Real {result.statistic}",
                    "Difference",
                ],
                rows,
                caption=f"Real margins from {result.path}",
                numeric=(1, 2, 3),
            )
        )
        metrics: list[list[Cell | str]] = [
            ["Pearson correlation", text.number(result.correlation), "1: the groups rank alike"],
            ["Mean absolute error", shown(result.mae), "0: every group's value matches"],
        ]
    elif result.kind is not None:
        chart = charts.validation_chart(prefix, f"{result.field}: simulated and real", result)
        tables.append(_sides_table(result))
        metrics = _metric_rows(result)
    else:
        metrics = []
    if metrics:
        tables.append(table(["Metric", "Value", "Reads"], metrics, caption="Metrics", numeric=(1,)))
    return Block(
        anchor=prefix,
        title=result.statement,
        origin=result.origin,
        conclusion=result.verdict,
        tone="warn" if result.warnings or result.problem else "",
        cautions=[*result.warnings, *result.notes],
        chart=chart,
        tables=tables,
    )


def _sides_table(result: ValidationResult) -> Table:
    """Each side's figures (numbers), or the counts and shares of each answer."""
    sim, real = result.simulated, result.real
    if result.kind == "numeric" and not result.categories:
        return table(
            ["Side", "n", "Mean", "Median", "SD"],
            [
                [name, str(side.n), *(text.number(v) for v in (side.mean, side.median, side.sd))]
                for name, side in (("simulated", sim), ("real", real))
            ],
            caption=f"Real answers from {result.path}",
            numeric=(1, 2, 3, 4),
        )

    def cell(count: int, n: int) -> str:
        return f"{count} ({text.percent(count / n if n else None)})"

    rows = [
        [category, cell(s, sim.n), cell(r, real.n)]
        for category, s, r in zip(result.categories, sim.counts, real.counts, strict=True)
    ]
    if result.kind == "numeric":
        rows += [
            [label, *(text.number(getattr(side, name)) for side in (sim, real))]
            for label, name in (("Mean", "mean"), ("Median", "median"), ("SD", "sd"))
        ]
    return table(
        ["Answer", f"Simulated (n={sim.n})", f"Real (n={real.n})"],
        rows,
        caption=f"Real answers from {result.path}",
        numeric=(1, 2),
    )


def _metric_rows(result: ValidationResult) -> list[list[Cell | str]]:
    """Every metric the validation computed, with how to read it; n/a where a test
    could not run (the notes say why)."""
    rows: list[list[Cell | str]] = []
    if result.kind == "numeric":
        ratio = result.sd_ratio
        narrow = ratio is not None and ratio < SD_RATIO_WARNING
        rows += [
            [
                "SD ratio (simulated / real)",
                Cell(text.number(ratio), tone="warn" if narrow else ""),
                f"1: the same spread; below {SD_RATIO_WARNING:g}: much narrower",
            ],
            [
                "Mean difference (simulated - real)",
                text.number(result.mean_difference),
                "95% CI " + _pair(result.difference_ci),
            ],
            [
                "Welch's t-test",
                f"t = {text.number(result.welch_t)}, df = {text.number(result.welch_df)}",
                f"{text.p_equals(result.welch_p)} (t real first, as TinyTroupe)",
            ],
            [
                "Mann-Whitney U",
                text.number(result.mann_whitney_u),
                text.p_equals(result.mann_whitney_p),
            ],
            [
                "Kolmogorov-Smirnov D",
                text.number(result.ks),
                f"{text.p_equals(result.ks_p)}; 0: the same distribution",
            ],
            ["Wasserstein-1", text.number(result.wasserstein), "in the field's units; 0: equal"],
            ["Overlap coefficient", text.number(result.overlap), "1: the histograms coincide"],
        ]
    if result.categories:
        rows.append(
            [
                "Chi-square (counts of each answer)",
                f"χ² = {text.number(result.chi2)}, df = {text.number(result.chi2_df)}",
                text.p_equals(result.chi2_p),
            ]
        )
    return rows


def _pair(values: tuple[float, float] | None) -> str:
    return text.interval(Interval(low=values[0], high=values[1]) if values else None)


def _distribution_block(index: int, result: FieldDistribution) -> Block:
    """A field's histogram per group, with the counts as a table (for Markdown too)."""
    prefix = f"distribution-{index}"
    by = f" by {result.by}" if result.by else ""
    numeric = result.kind in ("int", "float")
    if numeric:
        categories = [item.label for item in result.groups[0].histogram] if result.groups else []
        counts = [[item.count for item in stats.histogram] for stats in result.groups]
    else:
        categories = _field_levels(None, result.groups)
        counts = [
            [{s.level: s.count for s in stats.levels}.get(level, 0) for level in categories]
            for stats in result.groups
        ]
    rows = [
        [category, *(str(column[row]) for column in counts)]
        for row, category in enumerate(categories)
    ]
    headers = ["Answer", *(f"{stats.group} (n={stats.n})" for stats in result.groups)]
    chart = charts.histogram_chart(
        prefix,
        f"{result.field}{by}: answers per group",
        result.groups,
        () if numeric else categories,
    )
    return Block(
        anchor=prefix,
        title=f"{result.field}{by}",
        origin="",
        conclusion="",
        tone="",
        cautions=[],
        chart=chart,
        tables=[table(headers, rows, numeric=range(1, len(headers)))] if rows else [],
    )


def _funnel_block(index: int, result: FunnelResult) -> Block:
    rows = [
        [
            str(number),
            stage.field,
            str(stage.passed),
            text.percent(stage.share_of_all),
            text.percent(stage.share_of_previous),
            str(stage.dropped),
            text.percent(stage.drop_off),
            str(stage.missing),
        ]
        for number, stage in enumerate(result.stages, 1)
    ]
    headers = [
        "Stage",
        "Field",
        "Passed",
        "Of all",
        "Of previous",
        "Dropped",
        "Drop-off",
        "No answer",
    ]
    conclusion = (
        f"Not computed: {result.problem}."
        if result.problem
        else (
            f"{result.stages[-1].passed} of {result.total} agents "
            f"({text.percent(result.stages[-1].share_of_all)}) pass every stage."
            if result.stages
            else ""
        )
    )
    return Block(
        anchor=f"funnel-{index}",
        title=result.statement,
        origin=result.origin,
        conclusion=conclusion,
        tone="warn" if result.problem else "",
        cautions=list(result.cautions),
        chart=charts.funnel_chart(f"funnel-{index}", result),
        tables=[table(headers, rows, numeric=(0, 2, 3, 4, 5, 6, 7))] if rows else [],
    )


def _coverage(analysis: AnalysisResult) -> Table | None:
    if not analysis.fields:
        return None
    rows: list[list[Cell | str]] = [
        [
            item.name,
            item.kind,
            str(item.n),
            Cell(str(item.missing), tone="warn" if item.missing else ""),
            ", ".join(f"{reason} ({count})" for reason, count in item.missing_reasons.items()),
        ]
        for item in analysis.fields
    ]
    return table(["Field", "Type", "Answered", "Missing", "Why missing"], rows, numeric=(2, 3))


# ----------------------------------------------------------------- population


def _arm_columns(run: RunData) -> list[tuple[str, str]]:
    """(intervention name, result column) for each intervention."""
    names = [
        str(item.get("name"))
        for item in run.plan.get("interventions") or []
        if isinstance(item, dict) and item.get("name")
    ]
    if not names and run.rows:
        names = [key.removeprefix("variant_") for key in run.rows[0] if key.startswith("variant_")]
    columns = []
    for name in names:
        column = f"variant_{name}"
        if run.rows and column not in run.rows[0] and len(names) == 1:
            column = "variant"
        columns.append((name, column))
    return columns


def _balance(run: RunData) -> list[Table]:
    """How each intervention's arms were spread over the segments (the assignment check)."""
    tables = []
    for name, column in _arm_columns(run):
        counts: Counter[tuple[str, str]] = Counter()
        # Each agent once: its arm is the same in every world and replicate it has a row in.
        for row in {str(row.get("agent")): row for row in run.rows}.values():
            arm = row.get(column)
            if arm is not None:
                counts[(str(arm), str(row.get("segment") or "(none)"))] += 1
        if not counts:
            continue
        arms = sorted({arm for arm, _ in counts}, key=lambda arm: (arm == CONTROL, arm))
        segments = list(dict.fromkeys(segment for _, segment in counts))
        rows = [
            [
                arm,
                *(str(counts[(arm, s)]) for s in segments),
                str(sum(counts[(arm, s)] for s in segments)),
            ]
            for arm in arms
        ]
        tables.append(
            table(
                ["Arm", *segments, "Total"],
                rows,
                caption=f"Assignment: {name}",
                numeric=range(1, len(segments) + 2),
            )
        )
    return tables


def _persona_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(key for row in rows for key in row if key.startswith("persona_")))
    preferred = [f"persona_{name}" for name in _PERSONA_COLUMNS if f"persona_{name}" in keys]
    others = [key for key in keys if key not in preferred]
    return (preferred + others)[:_MAX_PERSONA_COLUMNS]


def _agent_cell(row: dict[str, Any]) -> Cell:
    agent = str(row.get("agent", ""))
    return Cell(agent, href=f"#{anchor(agent)}")


def _population(run: RunData) -> Table | None:
    if not run.rows:
        return None
    arms = _arm_columns(run)
    personas = _persona_columns(run.rows)
    headers = ["Agent", "Name", "Population", "Segment", *(name for name, _ in arms)]
    headers += [key.removeprefix("persona_").replace("_", " ") for key in personas]
    rows: list[list[Cell | str]] = [
        [
            _agent_cell(row),
            _short(row.get("name")),
            _short(row.get("population")),
            _short(row.get("segment")),
            *(_short(row.get(column)) for _, column in arms),
            *(_short(row.get(key), 40) for key in personas),
        ]
        for row in run.rows
    ]
    return table(headers, rows)


def _results(run: RunData, fields: Sequence[FieldCoverage]) -> Table | None:
    if not run.rows or not fields:
        return None
    rows: list[list[Cell]] = []
    for row in run.rows:
        reasons = row.get("_missing") if isinstance(row.get("_missing"), dict) else {}
        cells = [_agent_cell(row)]
        for item in fields:
            value = row.get(item.name)
            if value is None:
                reason = reasons.get(item.name) if isinstance(reasons, dict) else None
                cells.append(Cell(f"missing: {reason}" if reason else "missing", tone="muted"))
            else:
                cells.append(Cell(_short(value)))
        rows.append(cells)
    numeric = [i + 1 for i, item in enumerate(fields) if item.kind in ("int", "float")]
    return table(["Agent", *(item.name for item in fields)], rows, numeric=numeric)


def _steps(run: RunData) -> Table | None:
    status = {record.id: record for record in run.manifest.steps} if run.manifest else {}
    plan_steps = [item for item in run.plan.get("steps") or [] if isinstance(item, dict)]
    ids = [str(item.get("id")) for item in plan_steps] or list(status)
    if not ids:
        return None
    kinds = {str(item.get("id")): str(item.get("kind", "")) for item in plan_steps}
    rows: list[list[Cell | str]] = []
    checked = any(record.quality for record in status.values())
    for step_id in ids:
        done = status.get(step_id)
        state = done.status if done else "not run"
        rows.append(
            [
                step_id,
                kinds.get(step_id, ""),
                Cell(state, tone="fail" if state == "failed" else ""),
                f"{done.seconds:.1f}" if done else "",
                *([_quality_cell(done.quality if done else None)] if checked else []),
            ]
        )
    headers = ["Step", "Kind", "Status", "Seconds", *(["Quality of answers"] if checked else [])]
    return table(headers, rows, numeric=(3,))


def _quality(run: RunData) -> Table | None:
    """The steps whose turns or answers were checked, and what was flagged."""
    records = [r for r in run.manifest.steps if r.quality] if run.manifest else []
    if not records:
        return None
    judged = any(record.quality and record.quality.judged for record in records)
    rows: list[list[Cell | str]] = [
        [
            record.id,
            _quality_cell(record.quality),
            *([_scores_cell(record.quality)] if judged else []),
        ]
        for record in records
    ]
    caption = (
        "Turns that said nothing, said back what they heard, said a placeholder or "
        "repeated the turn before, and extracted answers that are blank or placeholders."
    )
    settings = run.plan.get("settings") or {}
    if judged:
        caption += (
            " The judge scored every agent turn from 0 to 9 (mean per criterion); a turn below "
            f"{settings.get('judge_threshold', '?')} on a criterion is flagged low_<criterion>."
        )
    return table(
        ["Step", "Flagged", *(["Judge's mean scores"] if judged else [])], rows, caption=caption
    )


def _scores_cell(counts: QualityCounts | None) -> str:
    """`persona_adherence 6.5, fluency 7.0 (4 turns)`: the judge's mean scores."""
    if counts is None or not counts.judged:
        return ""
    scores = ", ".join(f"{name} {score:.1f}" for name, score in counts.scores.items())
    return f"{scores} ({counts.judged} {'turn' if counts.judged == 1 else 'turns'})"


def _quality_cell(counts: QualityCounts | None) -> Cell:
    """`2 of 6 turns flagged (echo 2)`: the step's answer-quality checks (warn if any)."""
    if counts is None:
        return Cell("")
    parts = []
    if counts.turns:
        parts.append(f"{counts.turns_flagged} of {counts.turns} turns flagged")
    if counts.answers:
        parts.append(f"{counts.answers_flagged} of {counts.answers} answers flagged")
    text = "; ".join(parts)
    if counts.flags:
        text += " (" + ", ".join(f"{flag} {n}" for flag, n in sorted(counts.flags.items())) + ")"
    return Cell(text, tone="warn" if counts.flags else "")


def _entry(record: dict[str, Any]) -> Entry:
    source, target = record.get("source"), record.get("target")
    who = (
        f"{source} → {target}"
        if source and target
        else str(record.get("agent_name") or record.get("agent") or source or "")
    )
    kind = str(record.get("kind") or "")
    if record.get("type"):
        kind = f"{kind} / {record['type']}" if kind else str(record["type"])
    content = record.get("content")
    if not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False, indent=1)
    return Entry(
        time=str(record.get("time") or ""),
        step=str(record.get("step") or ""),
        kind=kind,
        who=who,
        content=content,
    )


# Row keys that are not facts about the agent: shown elsewhere, or a copy (`variant`
# repeats the only intervention's `variant_<name>` column).
_NOT_FACTS = frozenset({"agent", "name", "_missing", "variant"})


def _fact_label(key: str) -> str:
    for prefix in ("persona_", "variant_"):
        if key.startswith(prefix):
            return key.removeprefix(prefix).replace("_", " ")
    return key


def _agents(run: RunData, fields: Sequence[FieldCoverage]) -> list[AgentSection]:
    """A section per agent with its facts and every transcript record it is part of."""
    rows = {str(row.get("agent")): row for row in run.rows if row.get("agent") is not None}
    mentioned = [str(r.get("agent")) for r in run.transcript if r.get("agent") is not None]
    ordered = list(dict.fromkeys([*rows, *mentioned]))
    records: dict[str, list[dict[str, Any]]] = {agent: [] for agent in ordered}
    for record in sorted(run.transcript, key=lambda r: r.get("seq") or 0):
        for key in {record.get("agent"), record.get("target")}:
            if key is not None and str(key) in records:
                records[str(key)].append(record)
    field_names = [item.name for item in fields]
    sections = []
    for agent in ordered:
        row = rows.get(agent, {})
        facts = [
            (_fact_label(key), _plain(value))
            for key, value in row.items()
            if key not in _NOT_FACTS and key not in field_names and value not in (None, "", [])
        ]
        facts += [(name, _plain(row[name])) for name in field_names if row.get(name) is not None]
        name = str(
            row.get("name")
            or next((r.get("agent_name") for r in records[agent] if r.get("agent_name")), agent)
        )
        sections.append(
            AgentSection(
                anchor=anchor(agent),
                agent=agent,
                name=name,
                facts=facts,
                entries=[_entry(record) for record in records[agent]],
            )
        )
    return sections


def _verdict(result: CompareResult) -> Cell:
    """A compare's sentence for the verdict box, toned like its block."""
    # Analyses from before the verdict box (an older analysis.json) fall back to the conclusion.
    return Cell(result.verdict or result.conclusion, tone=_compare_tone(result))


def build_view(run: RunData) -> ReportView:
    """Everything the report shows, as text, from a loaded run directory."""
    view = ReportView(
        title=str(run.settings.get("title") or run.scenario),
        scenario=run.scenario,
        run_id=run.path.name,
        banner=_banner(run),
        problems=list(run.problems),
        overview=_overview(run),
        notes=_run_notes(run),
        balance=_balance(run),
        population=_population(run),
        steps=_steps(run),
        quality=_quality(run),
        world_summaries=_world_summaries(run),
    )
    analysis = run.analysis
    fields = analysis.fields if analysis else []
    view.results = _results(run, fields)
    view.agents = _agents(run, fields)
    if analysis is None:
        return view
    by_name = {item.name: item for item in analysis.fields}
    view.passed = sum(item.passed for item in analysis.expectations)
    view.failed = len(analysis.expectations_failed)
    view.expectations = _expectations(analysis)
    view.compares = [_compare_block(i, r, by_name) for i, r in enumerate(analysis.compares, 1)]
    view.verdicts = [_verdict(result) for result in analysis.compares]
    view.verdicts += [
        Cell(result.verdict, tone="warn" if result.warnings else "")
        for result in analysis.validations
        if result.verdict
    ]
    view.validations = [_validation_block(i, r) for i, r in enumerate(analysis.validations, 1)]
    view.distributions = [
        _distribution_block(i, r) for i, r in enumerate(analysis.distributions, 1)
    ]
    view.summaries = [_summary_block(i, r, by_name) for i, r in enumerate(analysis.summaries, 1)]
    view.funnels = [_funnel_block(i, r) for i, r in enumerate(analysis.funnels, 1)]
    view.coverage = _coverage(analysis)
    view.rankings = _rankings(analysis)
    if analysis.compares:
        tests = analysis.adjustment.family_size
        view.adjustment = (
            f"P-values are Holm-adjusted over {tests} test{'' if tests == 1 else 's'} "
            f"(alpha {analysis.adjustment.alpha:g}). {analysis.adjustment.note}"
        )
    return view
