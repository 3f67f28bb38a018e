"""Statistics of the `analyze` block, checked against hand computations and scipy."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.stats.contingency import association

from tests.origins import ORIGIN
from tiny_dsl.analysis import AnalysisResult, CompareResult, analyze, holm
from tiny_dsl.analysis.stats import cliffs_delta, cohens_d, proportion_difference
from tiny_dsl.plan.model import AnalysisPlan, FieldPlan, InterventionPlan, VariantPlan

INTENT = FieldPlan(name="intent", kind="int", low=1, high=10)
SCORE = FieldPlan(name="score", kind="float")
OPENED = FieldPlan(name="opened", kind="bool")
MOOD = FieldPlan(name="mood", kind="enum", members=["positive", "neutral", "negative"])
CONCERN = FieldPlan(name="concern", kind="text")
THEMES = FieldPlan(name="themes", kind="list")
FIELDS = [INTENT, SCORE, OPENED, MOOD, CONCERN, THEMES]


def intervention(variants: list[str], control: float = 0.0, name: str = "test") -> InterventionPlan:
    return InterventionPlan(
        name=name,
        channel="email",
        control=control,
        assign="random",
        variants=[VariantPlan(name=v, content=f"{v} text", timing=None) for v in variants],
        targets=["people"],
        assignment={},
    )


def arm_rows(field: str, arms: dict[str, list[Any]], name: str = "test") -> list[dict[str, Any]]:
    """One row per value; `arms` maps an arm to the values its agents answered."""
    rows: list[dict[str, Any]] = []
    for arm, values in arms.items():
        for value in values:
            rows.append({"agent": f"p/{len(rows):03d}", f"variant_{name}": arm, field: value})
    return rows


def compare_one(
    field: FieldPlan, arms: dict[str, list[Any]], control: bool = False
) -> tuple[CompareResult, AnalysisResult]:
    variants = [arm for arm in arms if arm != "control"]
    plan = AnalysisPlan(kind="compare", origin=ORIGIN, field=field.name, by="test")
    result = analyze(
        [plan],
        arm_rows(field.name, arms),
        FIELDS,
        [intervention(variants, control=0.2 if control else 0.0)],
    )
    return result.compares[0], result


def effect(pair: Any, name: str, level: str | None = None) -> Any:
    return next(e for e in pair.effects if e.name == name and e.level == level)


def find_test(pair: Any, name: str) -> Any:
    return next(t for t in pair.tests if t.name == name)


# ------------------------------------------------------------------ building blocks


def test_holm_matches_a_hand_computed_example() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_handles_trivial_families() -> None:
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2]
    assert holm([]) == []


def test_cohens_d_uses_the_pooled_standard_deviation() -> None:
    # means 4 and 2; variances 4 and 1; pooled variance (2*4 + 2*1) / 4 = 2.5
    d = cohens_d(np.array([2.0, 4.0, 6.0]), np.array([1.0, 2.0, 3.0]))
    assert d.value == pytest.approx(2 / math.sqrt(2.5))


def test_cliffs_delta_on_a_worked_example() -> None:
    # x > y in 1 pair, x < y in 6 pairs, 2 ties, of 9: (1 - 6) / 9
    delta = cliffs_delta(np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0]))
    assert delta.value == pytest.approx(-5 / 9)


def test_proportion_difference_matches_newcombe_1998() -> None:
    # Newcombe (1998), Stat Med 17:873, example 56/70 vs 48/80, method 10: 0.0524 to 0.3339
    diff = proportion_difference(56, 70, 48, 80, "true")
    assert diff.value == pytest.approx(0.2)
    assert diff.ci is not None
    assert (diff.ci.low, diff.ci.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)


# ------------------------------------------------------------------ compare: numeric


def test_two_numeric_arms_get_welch_mann_whitney_and_effect_sizes() -> None:
    a = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    b = [2, 4, 6, 8, 10, 2, 4, 6, 8, 10]
    result, _ = compare_one(INTENT, {"a": a, "b": b})
    assert result.kind == "numeric"
    assert result.reference == "a"  # no control: the first arm
    assert [arm.group for arm in result.arms] == ["a", "b"]
    assert result.arms[0].mean == pytest.approx(3.0)
    assert result.arms[1].sd == pytest.approx(np.std(b, ddof=1))
    low, high = stats.t.interval(0.95, df=9, loc=6.0, scale=stats.sem(b))
    assert result.arms[1].ci is not None
    assert (result.arms[1].ci.low, result.arms[1].ci.high) == pytest.approx((low, high))

    (pair,) = result.pairs
    assert (pair.arm, pair.reference) == ("b", "a")
    welch = find_test(pair, "welch_t")
    # by hand: (6 - 3) / sqrt(20/9/10 + 80/9/10) and the Welch-Satterthwaite df
    va, vb = np.var(a, ddof=1) / 10, np.var(b, ddof=1) / 10
    assert welch.statistic == pytest.approx(3 / math.sqrt(va + vb))
    assert welch.df == pytest.approx((va + vb) ** 2 / (va**2 / 9 + vb**2 / 9))
    assert welch.p_value == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    mwu = find_test(pair, "mann_whitney_u")
    scipy_mwu = stats.mannwhitneyu(b, a, alternative="two-sided")
    assert (mwu.statistic, mwu.p_value) == pytest.approx((scipy_mwu.statistic, scipy_mwu.pvalue))
    assert effect(pair, "mean_difference").value == pytest.approx(3.0)
    assert effect(pair, "cohens_d").value == pytest.approx(
        3 / math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    )
    assert effect(pair, "cliffs_delta").value == pytest.approx(2 * scipy_mwu.statistic / 100 - 1)
    assert not result.small_sample


def test_three_numeric_arms_get_anova_kruskal_and_pairwise_welch_vs_control() -> None:
    groups = {"x": [1, 2, 3] * 4, "y": [2, 3, 4] * 4, "control": [5, 6, 7] * 4}
    result, _ = compare_one(INTENT, groups, control=True)
    assert result.reference == "control"
    anova, kruskal = result.tests
    assert anova.name == "anova" and kruskal.name == "kruskal_wallis"
    # by hand: group means 2, 3, 6; SSB = 12 * (16/9 + 4/9 + 64/9)... F from scipy agrees
    f = stats.f_oneway(*groups.values())
    assert (anova.statistic, anova.p_value) == pytest.approx((f.statistic, f.pvalue))
    h = stats.kruskal(*groups.values())
    assert (kruskal.statistic, kruskal.p_value) == pytest.approx((h.statistic, h.pvalue))
    assert [(p.arm, p.reference) for p in result.pairs] == [("x", "control"), ("y", "control")]
    for pair in result.pairs:
        expected = stats.ttest_ind(groups[pair.arm], groups["control"], equal_var=False)
        assert [t.name for t in pair.tests] == ["welch_t"]
        assert pair.tests[0].p_value == pytest.approx(expected.pvalue)


def test_anova_f_matches_a_hand_computation() -> None:
    # means 2, 3, 6 (grand mean 11/3); SSB = 3 * 26/3 = 26 on 2 df; SSW = 6 on 6 df: F = 13
    result, _ = compare_one(INTENT, {"x": [1, 2, 3], "y": [2, 3, 4], "z": [5, 6, 7]})
    assert result.tests[0].statistic == pytest.approx(13.0)


def test_small_numeric_arms_are_flagged_never_concluded() -> None:
    result, _ = compare_one(INTENT, {"a": [1, 1, 2, 1, 1], "b": [10, 9, 10, 10, 9]})
    assert result.pairs[0].tests[0].p_value is not None
    assert result.pairs[0].tests[0].p_value < 0.001  # a huge difference ...
    assert result.small_sample  # ... but 5 answers per arm
    assert result.conclusion.startswith("Not enough data")
    assert "fewer than 10 answers" in result.cautions[0]
    assert "significant" not in result.conclusion.lower()
    assert "evidence" not in result.conclusion.lower()


def test_large_clear_difference_is_reported_with_its_direction() -> None:
    result, _ = compare_one(
        INTENT,
        {"treated": [7, 8, 9, 8, 7, 9, 8, 8, 9, 7], "control": [3, 4, 2, 3, 4, 3, 2, 4, 3, 3]},
        control=True,
    )
    assert not result.small_sample
    assert result.conclusion.startswith("Evidence of a difference")
    # means 8.0 and 3.1
    assert "'treated' averages 4.90 more than 'control'" in result.conclusion


def test_no_difference_is_not_read_as_equality() -> None:
    values = [1, 5, 3, 8, 2, 9, 4, 6, 7, 5]
    result, _ = compare_one(INTENT, {"a": values, "b": list(reversed(values))})
    assert result.conclusion.startswith("No clear difference")
    assert "does not show that they are equal" in result.conclusion


def test_missing_and_ill_typed_values_are_excluded_and_counted() -> None:
    a = [3, 4, None, 5, "seven", 6, 4, 5, 3, 4, 5, True]
    b = [6, 7, 8, None, 7, 6, 8, 7, 9, 6, 7]
    result, analysis = compare_one(INTENT, {"a": a, "b": b})
    clean_a = [3, 4, 5, 6, 4, 5, 3, 4, 5]
    clean_b = [6, 7, 8, 7, 6, 8, 7, 9, 6, 7]
    assert (result.arms[0].n, result.arms[0].missing) == (9, 3)
    assert (result.arms[1].n, result.arms[1].missing) == (10, 1)
    expected = stats.ttest_ind(clean_b, clean_a, equal_var=False)
    assert result.pairs[0].tests[0].p_value == pytest.approx(expected.pvalue)
    assert "Excluded: 4 missing answers" in result.conclusion
    coverage = next(f for f in analysis.fields if f.name == "intent")
    assert (coverage.n, coverage.missing) == (19, 4)


def test_agents_outside_the_intervention_are_excluded() -> None:
    rows = arm_rows("intent", {"a": [1, 2] * 6, "b": [3, 4] * 6})
    rows.append({"agent": "outsider", "intent": 10})
    plan = AnalysisPlan(kind="compare", origin=ORIGIN, field="intent", by="test")
    result = analyze([plan], rows, FIELDS, [intervention(["a", "b"])]).compares[0]
    assert result.not_assigned == 1
    assert sum(arm.n for arm in result.arms) == 24


def test_missing_reasons_come_from_the_extractor() -> None:
    rows: list[dict[str, Any]] = [
        {"agent": "a", "intent": 5, "_missing": {}},
        {"agent": "b", "intent": None, "_missing": {"intent": "no answer"}},
        {"agent": "c", "intent": None, "_missing": {"intent": "no answer"}},
        {"agent": "d", "_missing": {}},
    ]
    coverage = analyze([], rows, [INTENT], []).fields[0]
    assert coverage.missing_reasons == {"no answer": 2, "no value": 1}


# ------------------------------------------------------------------ compare: categorical


def test_bool_arms_with_large_counts_get_chi_square_and_cramers_v() -> None:
    arms = {"a": [True] * 30 + [False] * 10, "control": [True] * 15 + [False] * 25}
    result, _ = compare_one(OPENED, arms, control=True)
    assert result.kind == "categorical"
    table = np.array([[30, 10], [15, 25]])
    (pair,) = result.pairs
    chi = find_test(pair, "chi_square")
    expected = stats.chi2_contingency(table)  # with Yates' correction, as for any 2x2
    assert (chi.statistic, chi.p_value, chi.df) == pytest.approx(
        (expected.statistic, expected.pvalue, 1)
    )
    # by hand: uncorrected chi-square = 7.5^2 * (2/22.5 + 2/17.5) over N = 80
    by_hand = math.sqrt(7.5**2 * (2 / 22.5 + 2 / 17.5) / 80)
    assert effect(pair, "cramers_v").value == pytest.approx(by_hand)
    assert effect(pair, "cramers_v").value == pytest.approx(association(table, method="cramer"))
    diff = effect(pair, "proportion_difference", "true")
    assert diff.value == pytest.approx(0.75 - 0.375)
    share = result.arms[0].levels[0]
    wilson = stats.binomtest(30, 40).proportion_ci(method="wilson")
    assert (share.level, share.count, share.share) == ("true", 30, 0.75)
    assert share.ci is not None
    assert (share.ci.low, share.ci.high) == pytest.approx((wilson.low, wilson.high))
    assert not result.small_sample
    assert "share answering true is +38 pts in 'a'" in result.conclusion


def test_small_2x2_table_uses_fisher_and_is_flagged() -> None:
    arms = {"a": [True, True, True, False], "control": [True, False, False, False]}
    result, _ = compare_one(OPENED, arms, control=True)
    fisher = result.pairs[0].tests[0]
    expected = stats.fisher_exact(np.array([[3, 1], [1, 3]]))
    assert fisher.name == "fisher_exact"
    assert (fisher.statistic, fisher.p_value) == pytest.approx(
        (expected.statistic, expected.pvalue)
    )
    assert result.small_sample
    assert any("expected counts are below 5" in c for c in result.cautions)
    assert result.conclusion.startswith("Not enough data")


def test_larger_table_with_small_counts_keeps_chi_square_with_a_flag() -> None:
    arms = {
        "a": ["positive"] * 6 + ["neutral"] * 3 + ["negative"] * 3,
        "b": ["positive"] * 2 + ["neutral"] * 5 + ["negative"] * 5,
    }
    result, _ = compare_one(MOOD, arms)
    chi = result.pairs[0].tests[0]
    table = np.array([[2, 5, 5], [6, 3, 3]])  # arm b first: pairs are arm vs reference
    expected = stats.chi2_contingency(table)
    assert chi.name == "chi_square"
    assert (chi.statistic, chi.p_value, chi.df) == pytest.approx(
        (expected.statistic, expected.pvalue, 2)
    )
    assert "unreliable" in chi.note
    assert result.small_sample
    levels = [e.level for e in result.pairs[0].effects if e.name == "proportion_difference"]
    assert levels == ["positive", "neutral", "negative"]


def test_three_categorical_arms_get_an_omnibus_test_and_pairs() -> None:
    arms = {
        "x": [True] * 20 + [False] * 20,
        "y": [True] * 30 + [False] * 10,
        "control": [True] * 10 + [False] * 30,
    }
    result, _ = compare_one(OPENED, arms, control=True)
    table = np.array([[20, 20], [30, 10], [10, 30]])
    expected = stats.chi2_contingency(table)
    assert result.tests[0].p_value == pytest.approx(expected.pvalue)
    assert result.effects[0].value == pytest.approx(association(table, method="cramer"))
    assert [p.arm for p in result.pairs] == ["x", "y"]


def test_compare_problems_are_reported_not_raised() -> None:
    plans = [
        AnalysisPlan(kind="compare", origin=ORIGIN, field="nope", by="test"),
        AnalysisPlan(kind="compare", origin=ORIGIN, field="concern", by="test"),
        AnalysisPlan(kind="compare", origin=ORIGIN, field="intent", by="nothing"),
        AnalysisPlan(kind="compare", origin=ORIGIN, field="intent", by="other"),
    ]
    rows = arm_rows("intent", {"a": [1, 2], "b": [3, 4]})
    interventions = [intervention(["a", "b"]), intervention(["c", "d"], name="other")]
    compares = analyze(plans, rows, FIELDS, interventions).compares
    assert "no extracted field named `nope`" in (compares[0].problem or "")
    assert "compare needs a number, bool or enum field" in (compares[1].problem or "")
    assert "no intervention or result column named `nothing`" in (compares[2].problem or "")
    assert "no agent in the results is assigned to an arm of `other`" in (compares[3].problem or "")
    assert all(c.conclusion.startswith("Not compared") for c in compares)


def test_holm_adjusts_across_every_compare_statement() -> None:
    rows = arm_rows("intent", {"a": [1, 2, 3, 4] * 3, "b": [3, 4, 5, 6] * 3})
    for row, opened in zip(rows, [True, False] * 12, strict=True):
        row["opened"] = opened
    plans = [
        AnalysisPlan(kind="compare", origin=ORIGIN, field="intent", by="test"),
        AnalysisPlan(kind="compare", origin=ORIGIN, field="opened", by="test"),
    ]
    result = analyze(plans, rows, FIELDS, [intervention(["a", "b"])])
    family = [t for c in result.compares for p in c.pairs for t in p.tests]
    assert [t.name for t in family] == ["welch_t", "mann_whitney_u", "chi_square"]
    raw = [t.p_value or 0.0 for t in family]
    assert [t.p_adjusted for t in family] == pytest.approx(holm(raw))
    assert result.adjustment.family_size == 3


# ------------------------------------------------------------------ summarize


def test_summarize_numeric_by_segment() -> None:
    rows = [
        {"agent": f"a{i}", "segment": seg, "intent": v}
        for i, (seg, v) in enumerate(
            [("young", 2), ("young", 4), ("young", 9), ("family", 5), ("family", None), (None, 7)]
        )
    ]
    plan = AnalysisPlan(kind="summarize", origin=ORIGIN, field="intent", by="segment")
    summary = analyze([plan], rows, FIELDS, []).summaries[0]
    assert [g.group for g in summary.groups] == ["young", "family", "(none)"]
    young = summary.groups[0]
    assert (young.n, young.mean, young.median) == (3, pytest.approx(5.0), 4.0)
    assert young.sd == pytest.approx(np.std([2, 4, 9], ddof=1))
    assert (summary.groups[1].n, summary.groups[1].missing) == (1, 1)
    assert summary.overall is not None and summary.overall.n == 5
    assert "fewer than 10 answers" in summary.cautions[0]


def test_summarize_text_and_list_report_top_items() -> None:
    rows = [
        {"agent": "a", "segment": "s", "concern": "Price", "themes": ["cost", "Taste"]},
        {"agent": "b", "segment": "s", "concern": " price ", "themes": ["taste", "taste"]},
        {"agent": "c", "segment": "s", "concern": "taste", "themes": []},
    ]
    plans = [
        AnalysisPlan(kind="summarize", origin=ORIGIN, field="concern", by="segment"),
        AnalysisPlan(kind="summarize", origin=ORIGIN, field="themes", by="segment"),
    ]
    concern, themes = analyze(plans, rows, FIELDS, []).summaries
    assert [(i.item, i.count) for i in concern.groups[0].top_items] == [("Price", 2), ("taste", 1)]
    # a list item counts once per agent; its share is of agents
    assert [(i.item, i.count) for i in themes.groups[0].top_items] == [("Taste", 2), ("cost", 1)]
    assert themes.groups[0].top_items[0].share == pytest.approx(2 / 3)


def test_summarize_by_variant_uses_the_only_intervention() -> None:
    rows = arm_rows("opened", {"a": [True, False, True], "control": [False, False]})
    plan = AnalysisPlan(kind="summarize", origin=ORIGIN, field="opened", by="variant")
    summary = analyze([plan], rows, FIELDS, [intervention(["a"], control=0.4)]).summaries[0]
    assert [g.group for g in summary.groups] == ["a", "control"]
    assert summary.groups[0].levels[0].share == pytest.approx(2 / 3)


def test_summarize_by_variant_is_ambiguous_with_two_interventions() -> None:
    plan = AnalysisPlan(kind="summarize", origin=ORIGIN, field="opened", by="variant")
    two = [intervention(["a"], name="one"), intervention(["b"], name="two")]
    summary = analyze([plan], [{"agent": "x", "opened": True}], FIELDS, two).summaries[0]
    assert "ambiguous" in (summary.problem or "")


# ------------------------------------------------------------------ funnel


def test_funnel_counts_stage_shares_and_drop_off() -> None:
    linked = [True] * 8 + [False] * 2
    budget = [True] * 5 + [False, None, False] + [True, False]  # agent 8: budget but not linked
    rows = [
        {"agent": f"u{i}", "linked": a, "budget": b}
        for i, (a, b) in enumerate(zip(linked, budget, strict=True))
    ]
    fields = [FieldPlan(name="linked", kind="bool"), FieldPlan(name="budget", kind="bool")]
    plan = AnalysisPlan(kind="funnel", origin=ORIGIN, fields=["linked", "budget"])
    funnel = analyze([plan], rows, fields, []).funnels[0]
    assert funnel.total == 10
    first, second = funnel.stages
    assert (first.passed, first.share_of_all, first.dropped, first.drop_off) == (8, 0.8, 2, 0.2)
    assert (second.passed, second.share_of_all) == (5, 0.5)
    assert (second.share_of_previous, second.dropped, second.drop_off) == (0.625, 3, 0.375)
    assert second.missing == 1


def test_funnel_needs_bool_fields() -> None:
    plan = AnalysisPlan(kind="funnel", origin=ORIGIN, fields=["opened", "intent"])
    funnel = analyze([plan], [{"agent": "a", "opened": True}], FIELDS, []).funnels[0]
    assert "not bool: intent" in (funnel.problem or "")


# ------------------------------------------------------------------ expect

EXPECT_ROWS: list[dict[str, Any]] = [
    {"agent": "a", "intent": 2, "opened": True, "mood": "positive", "themes": ["price"]},
    {"agent": "b", "intent": 4, "opened": True, "mood": "neutral", "themes": ["taste"]},
    {"agent": "c", "intent": 9, "opened": False, "mood": "positive", "themes": ["price", "x"]},
    {"agent": "d", "intent": None, "opened": None, "mood": None, "themes": None},
]


def expectation(aggregate: str, field: str, comparator: str, **kwargs: Any) -> AnalysisPlan:
    return AnalysisPlan(
        kind="expect",
        origin=ORIGIN,
        aggregate=aggregate,
        field=field,
        comparator=comparator,
        **kwargs,
    )


# mean(intent) = 5, median = 4, share(opened) = 2/3, 2 of 3 moods positive, count = 3
EXPECTATIONS = [
    (expectation("mean", "intent", "between", low=1, high=10), True, 5.0),
    (expectation("mean", "intent", "between", low=6, high=10), False, 5.0),
    (expectation("median", "intent", ">", bound=3), True, 4.0),
    (expectation("median", "intent", "<=", bound=3), False, 4.0),
    (expectation("mean", "opened", ">=", bound=0.5), True, 2 / 3),
    (expectation("share", "opened", ">=", bound=0.5), True, 2 / 3),
    (expectation("share", "opened", "<", bound=0.5), False, 2 / 3),
    (
        expectation(
            "share", "mood", "==", bound=2 / 3, match_comparator="==", match_value="positive"
        ),
        True,
        2 / 3,
    ),
    (
        expectation("share", "mood", ">", bound=0.7, match_comparator="==", match_value="positive"),
        False,
        2 / 3,
    ),
    (
        expectation("share", "mood", ">", bound=0.3, match_comparator="!=", match_value="positive"),
        True,
        1 / 3,
    ),
    (expectation("count", "intent", "==", bound=3), True, 3.0),
    (expectation("count", "intent", "!=", bound=3), False, 3.0),
    (
        expectation("count", "opened", ">=", bound=2, match_comparator="==", match_value=True),
        True,
        2.0,
    ),
    (
        expectation("count", "themes", ">", bound=2, match_comparator="==", match_value="price"),
        False,
        2.0,
    ),
    (
        expectation("share", "intent", ">=", bound=0.3, match_comparator=">=", match_value=4),
        True,
        2 / 3,
    ),
]


@pytest.mark.parametrize(("plan", "passed", "observed"), EXPECTATIONS)
def test_expectations_pass_and_fail(plan: AnalysisPlan, passed: bool, observed: float) -> None:
    result = analyze([plan], EXPECT_ROWS, FIELDS, [])
    (item,) = result.expectations
    assert item.passed is passed, item.reason
    assert item.observed == pytest.approx(observed)
    assert item.n == 3
    assert (item in result.expectations_failed) is not passed
    assert ("does not hold" in item.reason or "outside" in item.reason) is not passed


def test_expectation_reason_reads_like_the_rule() -> None:
    plans = [
        expectation(
            "mean", "intent", "between", low=1, high=10, text="expect mean(intent) between 1 and 10"
        ),
        expectation("share", "opened", ">", bound=0.9),
    ]
    ok, failed = analyze(plans, EXPECT_ROWS, FIELDS, []).expectations
    assert ok.statement == "expect mean(intent) between 1 and 10"
    assert ok.reason == "mean(intent) = 5.00 over 3 answers, within 1..10"
    assert failed.reason == "share(opened) = 67% over 3 answers; > 90% does not hold"


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        (expectation("mean", "intent", "between", low=1, high=10), "all 2 agents are missing it"),
        (expectation("mean", "concern", ">", bound=1), "mean() needs a number or bool field"),
        (expectation("share", "intent", ">", bound=0.1), "share() needs a bool field"),
        (
            expectation("mean", "mood", ">", bound=1, match_comparator="==", match_value="x"),
            "takes a field, not a comparison",
        ),
        (
            expectation("share", "mood", ">", bound=0.1, match_comparator=">", match_value="x"),
            "`>` needs a number field",
        ),
        (expectation("mean", "ghost", ">", bound=1), "no extracted field named `ghost`"),
        (expectation("total", "mood", ">", bound=1), "unknown aggregate `total`"),
    ],
)
def test_expectations_that_cannot_be_evaluated_fail_with_a_reason(
    plan: AnalysisPlan, reason: str
) -> None:
    rows: list[dict[str, Any]] = [
        {"agent": "a", "intent": None, "concern": "x", "mood": "positive"},
        {"agent": "b", "intent": None, "concern": "y", "mood": "neutral"},
    ]
    if plan.aggregate == "share" and plan.field == "intent":
        rows[0]["intent"] = 5
    result = analyze([plan], rows, FIELDS, [])
    (item,) = result.expectations
    assert not item.passed
    assert item.observed is None
    assert reason in item.reason
    assert result.expectations_failed == [item]


# ------------------------------------------------------------------ serialisation


def test_analysis_json_round_trips_without_nan() -> None:
    rows = arm_rows("intent", {"a": [5], "b": [5, 5, 5]})  # sd and tests undefined
    plans = [
        AnalysisPlan(kind="compare", origin=ORIGIN, field="intent", by="test"),
        expectation("mean", "intent", "between", low=1, high=10),
    ]
    result = analyze(plans, rows, FIELDS, [intervention(["a", "b"])])
    text = result.to_json()
    assert "NaN" not in text
    json.loads(text)  # strict JSON
    assert AnalysisResult.from_json(text) == result
    welch = result.compares[0].pairs[0].tests[0]
    assert welch.p_value is None and "at least 2 answers" in welch.note


def test_numbers_read_right_in_sentences() -> None:
    # Regressions: "p = <0.001", "-0 pts", and a budget of $0.001 shown as "$0.00".
    from tiny_dsl.analysis import text
    from tiny_dsl.plan.estimate import usd

    assert text.p_equals(0.0001) == "p < 0.001" and text.p_equals(0.034) == "p = 0.034"
    assert text.points(-0.001) == "0 pts" and text.points(0.38) == "+38 pts"
    assert text.points(-0.2) == "-20 pts"
    assert usd(0.001) == "$0.001" and usd(5) == "$5.00" and usd(1234.5) == "$1,234.50"
