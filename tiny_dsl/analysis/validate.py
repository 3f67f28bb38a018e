"""`validate`: simulated answers against real ones, or group means against real margins.

Against real answers (`validate F against "real.csv" column "C"`), for numbers:
n, mean and SD of both sides, Welch's t-test, Mann-Whitney U, Kolmogorov-Smirnov,
Wasserstein-1, chi-square on the category counts (whole-number scales, bool, enum),
the SD ratio (simulated over real: the variance compression that simulated
respondents are known for) and the overlap coefficient. Welch's t, its degrees of
freedom and the overlap follow TinyTroupe's `SimulationExperimentEmpiricalValidator`
(real data first: t > 0 when the real mean is higher; the difference and its 95%
interval are simulated minus real), so that its published numbers can be checked.
For bool and enum fields: the distributions and the chi-square test.

Against margins (`validate F by G against "margins.csv"`): the simulated mean (or
share) of each group next to the real one, Pearson's correlation and the mean
absolute error across the groups found on both sides.

Everything statistical is scipy's; where a test cannot run (fewer than two values on
a side, no variance) its metric is None with the reason, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from tiny_dsl.analysis import text
from tiny_dsl.analysis.data import NUMERIC_KINDS, field_series, grouping
from tiny_dsl.analysis.describe import MAX_BINS, histogram
from tiny_dsl.analysis.model import MarginRow, SideStats, ValidationResult
from tiny_dsl.analysis.stats import finite
from tiny_dsl.plan.model import AnalysisPlan, FieldPlan, InterventionPlan

__all__ = ["SD_RATIO_WARNING", "validate"]

SD_RATIO_WARNING = 0.7  # below: a plain warning that the simulated spread is too narrow
OVERLAP_BINS = 50  # TinyTroupe's histogram for the overlap coefficient
CONFIDENCE = 0.95


def validate(
    plan: AnalysisPlan,
    frame: pd.DataFrame,
    fields: dict[str, FieldPlan],
    interventions: Sequence[InterventionPlan],
) -> ValidationResult:
    """The metrics of one `validate` statement over the result rows."""
    name = plan.field or ""
    result = ValidationResult(
        statement=plan.text, origin=str(plan.origin), field=name, path=plan.path or ""
    )
    field = fields.get(name)
    if field is None:
        result.problem = f"no extracted field named `{name}`"
        return result
    if plan.margins:
        _against_margins(result, plan, frame, field, interventions)
    else:
        _against_answers(result, plan, field_series(frame, field).dropna().tolist(), field)
    result.verdict = verdict(result)
    return result


def verdict(result: ValidationResult) -> str:
    """One sentence for the report's verdict box: how close the simulated answers
    come to the real ones, leading with a too-narrow spread when there is one."""
    subject = f"{result.field} against {'real margins' if result.margins else 'real answers'}"
    if result.problem:
        return f"{subject}: {result.problem}."
    if result.kind == "margins":
        return (
            f"{subject}: correlation r = {text.number(result.correlation)}, mean absolute "
            f"error {text.number(result.mae)} over {len(result.margins)} groups."
        )
    sim, real = result.simulated, result.real
    sides = f"n = {sim.n} simulated, {real.n} real"
    if result.kind == "categorical":
        return f"{subject} ({sides}): chi-square {text.p_equals(result.chi2_p)}."
    spread = (
        f"SD {text.number(sim.sd)} against {text.number(real.sd)} "
        f"(ratio {text.number(result.sd_ratio)})"
    )
    if result.sd_ratio is not None and result.sd_ratio < SD_RATIO_WARNING:
        spread += ": the simulated spread is much narrower than the real one"
    return (
        f"{subject} ({sides}): mean {text.number(sim.mean)} against "
        f"{text.number(real.mean)}; {spread}; KS D = {text.number(result.ks)} "
        f"({text.p_equals(result.ks_p)})."
    )


# ------------------------------------------------------------------- answers


def _against_answers(
    result: ValidationResult, plan: AnalysisPlan, simulated: list[Any], field: FieldPlan
) -> None:
    real = list(plan.real)
    result.kind = "numeric" if field.kind in NUMERIC_KINDS else "categorical"
    if result.kind == "numeric":
        sim = np.asarray([float(v) for v in simulated], dtype=float)
        ref = np.asarray([float(v) for v in real], dtype=float)
        result.simulated = _side(sim)
        result.real = _side(ref)
        _numeric_metrics(result, sim, ref)
        categories = _whole_scale(sim, ref, field)
        if not categories and len(sim) and len(ref):
            edges = _shared_edges(np.concatenate([sim, ref]))
            result.simulated.histogram = histogram(sim, edges)
            result.real.histogram = histogram(ref, edges)
    else:
        categories = _labels(field, simulated, real)
        sim_labels = [_label(v) for v in simulated]
        real_labels = [_label(v) for v in real]
        result.simulated = SideStats(n=len(sim_labels))
        result.real = SideStats(n=len(real_labels))
        simulated, real = sim_labels, real_labels
    if categories:
        counts_sim = [sum(1 for v in simulated if _label(v) == c) for c in categories]
        counts_real = [sum(1 for v in real if _label(v) == c) for c in categories]
        result.categories = categories
        result.simulated.counts = counts_sim
        result.real.counts = counts_real
        _chi_square(result, counts_sim, counts_real)
    if result.sd_ratio is not None and result.sd_ratio < SD_RATIO_WARNING:
        result.warnings.append(
            f"the simulated answers are much less varied than the real ones: SD "
            f"{result.simulated.sd:.2f} against {result.real.sd:.2f} (ratio "
            f"{result.sd_ratio:.2f}, below {SD_RATIO_WARNING}); simulated respondents "
            "agree with each other more than real people do"
        )


def _side(values: np.ndarray) -> SideStats:
    side = SideStats(n=len(values))
    if len(values):
        side.mean = float(np.mean(values))
        side.median = float(np.median(values))
    if len(values) >= 2:
        side.sd = float(np.std(values, ddof=1))
    return side


def _numeric_metrics(result: ValidationResult, sim: np.ndarray, ref: np.ndarray) -> None:
    if len(sim) < 2 or len(ref) < 2:
        result.problem = (
            f"not enough data: {len(sim)} simulated and {len(ref)} real answers "
            "(each side needs at least 2)"
        )
        return
    if result.simulated.sd is not None and result.real.sd:
        result.sd_ratio = result.simulated.sd / result.real.sd
    result.mean_difference = float(np.mean(sim) - np.mean(ref))
    var_sim, var_ref = float(np.var(sim, ddof=1)), float(np.var(ref, ddof=1))
    se = math.sqrt(var_ref / len(ref) + var_sim / len(sim))
    if se > 0:
        welch = stats.ttest_ind(ref, sim, equal_var=False)
        result.welch_t = finite(welch.statistic)
        result.welch_p = finite(welch.pvalue)
        numerator = (var_ref / len(ref) + var_sim / len(sim)) ** 2
        denominator = (var_ref / len(ref)) ** 2 / (len(ref) - 1) + (var_sim / len(sim)) ** 2 / (
            len(sim) - 1
        )
        result.welch_df = numerator / denominator
        margin = float(stats.t.ppf(1 - (1 - CONFIDENCE) / 2, result.welch_df)) * se
        result.difference_ci = (result.mean_difference - margin, result.mean_difference + margin)
    else:
        result.notes.append("Welch's t-test: both sides have no variance")
    if np.ptp(np.concatenate([sim, ref])) > 0:
        mann_whitney = stats.mannwhitneyu(sim, ref, alternative="two-sided")
        result.mann_whitney_u = finite(mann_whitney.statistic)
        result.mann_whitney_p = finite(mann_whitney.pvalue)
    else:
        result.notes.append("Mann-Whitney U: every answer is the same")
    ks = stats.ks_2samp(ref, sim)
    result.ks = finite(ks.statistic)
    result.ks_p = finite(ks.pvalue)
    result.wasserstein = finite(stats.wasserstein_distance(sim, ref))
    result.overlap = _overlap(ref, sim)


def _overlap(ref: np.ndarray, sim: np.ndarray) -> float | None:
    """TinyTroupe's overlap coefficient: the sum of the smaller of the two density
    histograms (50 edges over the common range) over the sum of the larger."""
    low, high = float(min(ref.min(), sim.min())), float(max(ref.max(), sim.max()))
    if high <= low:
        return 1.0
    edges = np.linspace(low, high, OVERLAP_BINS)
    ref_hist, _ = np.histogram(ref, bins=edges, density=True)
    sim_hist, _ = np.histogram(sim, bins=edges, density=True)
    larger = float(np.sum(np.maximum(ref_hist, sim_hist)))
    return float(np.sum(np.minimum(ref_hist, sim_hist))) / larger if larger > 0 else None


def _shared_edges(values: np.ndarray) -> list[float]:
    """Histogram edges over both sides' answers, so that their bars line up."""
    edges = np.histogram_bin_edges(values, bins="auto")
    if len(edges) > MAX_BINS + 1:
        edges = np.histogram_bin_edges(values, bins=MAX_BINS)
    return [float(edge) for edge in edges]


def _whole_scale(sim: np.ndarray, ref: np.ndarray, field: FieldPlan) -> list[str]:
    """The categories of a whole-number scale (`int 1..5`): each value a category."""
    if field.kind != "int":
        return []
    values = np.concatenate([sim, ref])
    if not len(values) or not np.all(np.equal(np.mod(values, 1), 0)):
        return []
    low = int(field.low) if field.low is not None else int(values.min())
    high = int(field.high) if field.high is not None else int(values.max())
    if high - low > 20:
        return []
    return [str(v) for v in range(low, high + 1)]


def _labels(field: FieldPlan, simulated: list[Any], real: list[Any]) -> list[str]:
    if field.kind == "bool":
        return ["true", "false"]
    if field.members:
        return list(field.members)
    return sorted({_label(v) for v in [*simulated, *real]})


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _chi_square(result: ValidationResult, counts_sim: list[int], counts_real: list[int]) -> None:
    """Chi-square test of homogeneity on the 2 x k table of counts (empty categories out)."""
    kept = [(s, r) for s, r in zip(counts_sim, counts_real, strict=True) if s + r > 0]
    if len(kept) < 2 or sum(s for s, _ in kept) == 0 or sum(r for _, r in kept) == 0:
        result.notes.append("chi-square: fewer than two categories hold answers on both sides")
        return
    table = np.asarray([[s for s, _ in kept], [r for _, r in kept]])
    test = stats.chi2_contingency(table, correction=False)
    result.chi2 = finite(test.statistic)
    result.chi2_p = finite(test.pvalue)
    result.chi2_df = int(test.dof)


# ------------------------------------------------------------------- margins


def _against_margins(
    result: ValidationResult,
    plan: AnalysisPlan,
    frame: pd.DataFrame,
    field: FieldPlan,
    interventions: Sequence[InterventionPlan],
) -> None:
    result.kind = "margins"
    result.statistic = plan.statistic
    groups = grouping(frame, plan.by or "", interventions, plan.column, plan.brackets)
    values = field_series(frame, field)
    if groups is None:
        result.problem = f"the results have no column `{plan.by}` to group by"
        return
    simulated: dict[str, float] = {}
    for group in groups.order:
        present = values[groups.labels == group].dropna()
        if present.empty:
            continue
        if field.kind == "bool":
            simulated[group] = float((present == "true").mean())
        elif field.kind in NUMERIC_KINDS:
            simulated[group] = float(present.astype(float).mean())
    pairs = [(g, simulated[g], real) for g, real in plan.margins.items() if g in simulated]
    result.margins = [MarginRow(group=g, simulated=s, real=r) for g, s, r in pairs]
    result.missing_groups = [g for g in plan.margins if g not in simulated]
    if len(pairs) < 2:
        result.problem = f"not enough data: {len(pairs)} group(s) found on both sides"
        return
    sim = np.asarray([s for _, s, _ in pairs])
    real = np.asarray([r for _, _, r in pairs])
    result.mae = float(np.mean(np.abs(sim - real)))
    if np.ptp(sim) > 0 and np.ptp(real) > 0:
        result.correlation = finite(stats.pearsonr(sim, real).statistic)
    else:
        result.notes.append("correlation: one side is the same in every group")


def metrics_of(result: ValidationResult) -> dict[str, float | None]:
    """The metrics `expect` may bound, by name (and `n`: the simulated answers)."""
    return {
        "ks": result.ks,
        "ks_p": result.ks_p,
        "welch_p": result.welch_p,
        "mann_whitney_p": result.mann_whitney_p,
        "wasserstein": result.wasserstein,
        "chi2_p": result.chi2_p,
        "sd_ratio": result.sd_ratio,
        "overlap": result.overlap,
        "correlation": result.correlation,
        "mae": result.mae,
        "n": float(result.simulated.n) if result.simulated else None,
    }
