"""Statistical building blocks: thin, checked wrappers around scipy.stats.

Every test and interval comes from scipy. Three small formulas are written out
because scipy has no function for them, each a line of textbook arithmetic on
scipy's outputs: Holm's step-down adjustment (scipy only offers Benjamini-Hochberg/
Yekutieli through `false_discovery_control`, and statsmodels is not a dependency),
Cohen's d with a pooled standard deviation, and Newcombe's hybrid score interval for
a difference of two proportions (built from scipy's Wilson intervals). Cliff's delta
is derived from scipy's Mann-Whitney U.

The wrappers turn NaN into `None` and explain in `note` why a test could not run,
so callers never have to guess what a missing number means.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import SupportsFloat

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.stats.contingency import association, expected_freq

from tiny_dsl.analysis.model import Effect, Interval, RankStats, StatTest

CONFIDENCE = 0.95
ALPHA = 0.05
# Below these, estimates are too unstable to interpret: flag, never conclude.
MIN_ARM_N = 10
MIN_EXPECTED_COUNT = 5.0

FloatArray = npt.NDArray[np.float64]


def finite(value: SupportsFloat | None) -> float | None:
    """A plain float, or None for NaN, infinities and None."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _interval(low: SupportsFloat, high: SupportsFloat) -> Interval | None:
    lo, hi = finite(low), finite(high)
    if lo is None or hi is None:
        return None
    return Interval(low=lo, high=hi)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Sort ascending; the k-th smallest (0-based) is multiplied by m - k, capped at 1,
    and made monotone with a running maximum. Controls the family-wise error rate
    without assuming the tests are independent.
    """
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def mean_ci(values: FloatArray) -> Interval | None:
    """t-based interval of the mean; a point interval when every answer is the same."""
    n = len(values)
    if n < 2:
        return None
    mean = float(np.mean(values))
    if float(np.ptp(values)) == 0.0:
        return Interval(low=mean, high=mean)
    low, high = stats.t.interval(CONFIDENCE, df=n - 1, loc=mean, scale=stats.sem(values))
    return _interval(low, high)


def wilson_ci(count: int, n: int) -> Interval | None:
    """Wilson score interval of a proportion; sensible at 0%, 100% and small n."""
    if n == 0:
        return None
    ci = stats.binomtest(count, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return _interval(ci.low, ci.high)


def proportion_difference(count: int, n: int, ref_count: int, ref_n: int, level: str) -> Effect:
    """Difference of proportions (arm minus reference) with Newcombe's hybrid score CI.

    Newcombe (1998), method 10: combines the two Wilson intervals; it keeps good
    coverage at small n and near 0 or 1, where the Wald interval fails.
    """
    label = "Difference in share"
    arm_ci, ref_ci = wilson_ci(count, n), wilson_ci(ref_count, ref_n)
    if arm_ci is None or ref_ci is None:
        return Effect(name="proportion_difference", label=label, value=None, level=level)
    p1, p2 = count / n, ref_count / ref_n
    diff = p1 - p2
    low = diff - math.hypot(p1 - arm_ci.low, ref_ci.high - p2)
    high = diff + math.hypot(arm_ci.high - p1, p2 - ref_ci.low)
    return Effect(
        name="proportion_difference",
        label=label,
        value=diff,
        ci=Interval(low=low, high=high),
        level=level,
    )


def cohens_d(x: FloatArray, y: FloatArray) -> Effect:
    """Standardised mean difference (x minus y) over the pooled standard deviation."""
    label = "Cohen's d"
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return Effect(name="cohens_d", label=label, value=None)
    pooled_var = ((nx - 1) * np.var(x, ddof=1) + (ny - 1) * np.var(y, ddof=1)) / (nx + ny - 2)
    if pooled_var == 0:
        return Effect(name="cohens_d", label=label, value=None)
    value = (float(np.mean(x)) - float(np.mean(y))) / math.sqrt(float(pooled_var))
    return Effect(name="cohens_d", label=label, value=value)


def cliffs_delta(x: FloatArray, y: FloatArray) -> Effect:
    """P(x > y) - P(x < y) over all pairs, from Mann-Whitney's U: 2U / (nx ny) - 1.

    scipy's U for `x` counts pairs with x > y plus half the ties, hence the identity.
    """
    label = "Cliff's delta"
    if len(x) == 0 or len(y) == 0:
        return Effect(name="cliffs_delta", label=label, value=None)
    u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic
    return Effect(name="cliffs_delta", label=label, value=2 * float(u) / (len(x) * len(y)) - 1)


def mean_difference(x: FloatArray, y: FloatArray) -> tuple[StatTest, Effect]:
    """Welch's t-test (unequal variances) and the difference of means with its Welch CI."""
    test = StatTest(name="welch_t", label="Welch's t-test")
    effect = Effect(name="mean_difference", label="Difference in means", value=None)
    if len(x) < 2 or len(y) < 2:
        test.note = "not computed: each arm needs at least 2 answers"
        if len(x) and len(y):
            effect.value = float(np.mean(x)) - float(np.mean(y))
        return test, effect
    effect.value = float(np.mean(x)) - float(np.mean(y))
    if float(np.ptp(x)) == 0.0 and float(np.ptp(y)) == 0.0:
        test.note = "not computed: every answer in both arms is the same"
        return test, effect
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(x, y, equal_var=False)
        ci = result.confidence_interval(CONFIDENCE)
    test.statistic, test.df = finite(result.statistic), finite(result.df)
    test.p_value = finite(result.pvalue)
    effect.ci = _interval(ci.low, ci.high)
    return test, effect


def mann_whitney(x: FloatArray, y: FloatArray) -> StatTest:
    test = StatTest(name="mann_whitney_u", label="Mann-Whitney U test")
    if len(x) < 2 or len(y) < 2:
        test.note = "not computed: each arm needs at least 2 answers"
        return test
    result = stats.mannwhitneyu(x, y, alternative="two-sided")
    test.statistic, test.p_value = finite(result.statistic), finite(result.pvalue)
    return test


def anova_and_kruskal(groups: Sequence[FloatArray]) -> list[StatTest]:
    """One-way ANOVA and its rank-based counterpart, Kruskal-Wallis, over 3+ arms."""
    anova = StatTest(name="anova", label="One-way ANOVA")
    kruskal = StatTest(name="kruskal_wallis", label="Kruskal-Wallis H test")
    if any(len(group) < 2 for group in groups):
        anova.note = kruskal.note = "not computed: every arm needs at least 2 answers"
        return [anova, kruskal]
    if float(np.ptp(np.concatenate(groups))) == 0.0:
        anova.note = kruskal.note = "not computed: every answer is the same"
        return [anova, kruskal]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f_result = stats.f_oneway(*groups)
    anova.statistic, anova.p_value = finite(f_result.statistic), finite(f_result.pvalue)
    total = sum(len(group) for group in groups)
    anova.note = f"F with ({len(groups) - 1}, {total - len(groups)}) degrees of freedom"
    if anova.p_value is None:
        anova.note = "not computed: no variation within arms"
    h_result = stats.kruskal(*groups)
    kruskal.statistic, kruskal.p_value = finite(h_result.statistic), finite(h_result.pvalue)
    kruskal.df = float(len(groups) - 1)
    return [anova, kruskal]


def independence_test(table: npt.NDArray[np.int64]) -> tuple[StatTest, Effect, bool]:
    """Test of independence for an arms x categories count table.

    Empty rows and columns must already be removed. Fisher's exact test replaces
    chi-square for a 2x2 table with an expected count below 5; larger tables keep
    chi-square and report the small expected counts (the third value) so the caller
    can flag the result. Returns the test, Cramér's V and that flag.
    """
    v = Effect(name="cramers_v", label="Cramér's V", value=None)
    if table.shape[0] < 2 or table.shape[1] < 2:
        test = StatTest(name="chi_square", label="Chi-square test of independence")
        test.note = (
            "not computed: fewer than two arms with answers"
            if table.shape[0] < 2
            else "not computed: every answer falls in one category"
        )
        return test, v, False
    small = bool((expected_freq(table) < MIN_EXPECTED_COUNT).any())
    v.value = finite(association(table, method="cramer"))
    if table.shape == (2, 2) and small:
        fisher = stats.fisher_exact(table)
        test = StatTest(
            name="fisher_exact",
            label="Fisher's exact test",
            statistic=finite(fisher.statistic),
            p_value=finite(fisher.pvalue),
            note="used instead of chi-square: an expected count is below 5; statistic is "
            "the odds ratio",
        )
        return test, v, small
    chi = stats.chi2_contingency(table)
    note = "with Yates' continuity correction" if table.shape == (2, 2) else ""
    if small:
        note = "expected counts below 5: the chi-square approximation is unreliable"
    test = StatTest(
        name="chi_square",
        label="Chi-square test of independence",
        statistic=finite(chi.statistic),
        df=float(chi.dof),
        p_value=finite(chi.pvalue),
        note=note,
    )
    return test, v, small


def rank_stats(rankings: Sequence[Sequence[str]], members: Sequence[str]) -> list[RankStats]:
    """First-choice shares, mean ranks and Borda scores of `members` over full
    `rankings` (each a permutation of the members, best first; others are skipped),
    best Borda score first, ties in declared order."""
    full = [list(r) for r in rankings if sorted(r) == sorted(members)]
    n = len(members)
    results = []
    for member in members:
        places = [ranking.index(member) + 1 for ranking in full]
        first = places.count(1)
        results.append(
            RankStats(
                member=member,
                first=first,
                first_share=first / len(full) if full else None,
                mean_rank=sum(places) / len(places) if places else None,
                borda=sum(n - place for place in places),
            )
        )
    return sorted(results, key=lambda stats: -stats.borda)
