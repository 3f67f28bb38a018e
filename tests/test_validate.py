"""`validate` against real data, and the v2 aggregates, filters and groupings, computed
over result rows and compared with direct scipy/pandas computations."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tests.conftest import ROOT
from tests.origins import origin_at
from tiny_dsl.analysis import analyze, analyze_plan
from tiny_dsl.checks import check_file
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.model import AnalysisPlan, AnalyzeStep, FieldPlan, Plan

# TinyTroupe's notebook "Bottled Gazpacho Market Research 5": the 50 real votes
# (`control_data`) and the 50 simulated ones (`treatment_data`), as its outputs show.
REAL_VOTES = [4, 1, 1, 5, 3, 4, 2, 4, 1, 1, 3, 2, 2, 5, 4, 3, 3, 5, 4, 2, 3, 5, 3, 3, 5]
REAL_VOTES += [1, 3, 4, 3, 1, 1, 4, 3, 3, 2, 1, 4, 3, 4, 2, 1, 1, 2, 1, 2, 5, 2, 4, 3, 5]
SIMULATED_VOTES = [4, 2, 3, 3, 3, 3, 2, 2, 3, 4, 3, 3, 2, 3, 3, 3, 2, 3, 4, 3, 3, 3, 2, 3, 3]
SIMULATED_VOTES += [3, 3, 3, 2, 3, 2, 3, 3, 3, 4, 2, 3, 3, 3, 2, 3, 2, 3, 4, 3, 2, 3, 2, 2, 3]

SCENARIO = """\
scenario gazpacho {
  seed 5
}

population americans {
  size 50
  context "Adults who shop in US supermarkets."
}

world market {
  mode survey
  agents americans
}

timeline {
  ask market "Would you buy bottled gazpacho? From 1 to 5."
}

extract from market {
  response int 1..5 "The purchase propensity, from 1 to 5"
}

analyze {
  validate response against "gazpacho_votes.csv" column "Vote"
  expect sd_ratio(response) > 0.7
  expect ks_p(response) > 0.05
}
"""


def _plan(tmp_path: Path, text: str = SCENARIO) -> Plan:
    shutil.copy(ROOT / "scenarios" / "v2" / "data" / "gazpacho_votes.csv", tmp_path)
    (tmp_path / "gazpacho.tts").write_text(text, encoding="utf-8")
    return compile_plan(check_file(tmp_path / "gazpacho.tts").require_program())


def _rows(plan: Plan, values: list[Any], field: str = "response") -> list[dict[str, Any]]:
    return [
        {
            "agent": agent.id,
            "world": "market",
            "population": agent.population,
            "segment": agent.segment,
            field: value,
            "_missing": {},
        }
        for agent, value in zip(plan.agents, values, strict=False)
    ]


def test_validate_reproduces_tinytroupes_gazpacho_numbers(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    result = analyze_plan(plan, _rows(plan, SIMULATED_VOTES))
    (validation,) = result.validations
    assert validation.problem is None
    # What TinyTroupe's SimulationExperimentEmpiricalValidator printed in the notebook.
    assert round(validation.welch_t or 0, 4) == 0.1910
    assert round(validation.welch_p or 0, 4) == 0.8491
    assert round(validation.welch_df or 0, 2) == 67.24
    assert validation.difference_ci is not None
    assert [round(x, 3) for x in validation.difference_ci] == [-0.458, 0.378]
    assert round(validation.ks or 0, 2) == 0.24
    assert round(validation.ks_p or 0, 4) == 0.1124
    assert round(validation.real.sd or 0, 3) == 1.355
    assert round(validation.simulated.sd or 0, 3) == 0.596
    assert round(validation.overlap or 0, 3) == 0.370
    # What it does not compute, each equal to scipy's.
    sim, real = np.array(SIMULATED_VOTES, float), np.array(REAL_VOTES, float)
    mann_whitney = stats.mannwhitneyu(sim, real, alternative="two-sided")
    assert validation.mann_whitney_u == pytest.approx(mann_whitney.statistic)
    assert validation.mann_whitney_p == pytest.approx(mann_whitney.pvalue)
    assert validation.wasserstein == pytest.approx(stats.wasserstein_distance(sim, real))
    counts = [
        [SIMULATED_VOTES.count(v) for v in range(1, 6)],
        [REAL_VOTES.count(v) for v in range(1, 6)],
    ]
    chi2 = stats.chi2_contingency(np.array(counts), correction=False)
    assert validation.chi2 == pytest.approx(chi2.statistic)
    assert validation.chi2_p == pytest.approx(chi2.pvalue)
    assert validation.categories == ["1", "2", "3", "4", "5"]
    assert validation.sd_ratio == pytest.approx(np.std(sim, ddof=1) / np.std(real, ddof=1))
    # The variance compression the research warns about is said plainly, and expected.
    assert any("much less varied" in warning for warning in validation.warnings)
    sd_ratio, ks_p = result.expectations
    assert not sd_ratio.passed and sd_ratio.observed == pytest.approx(validation.sd_ratio)
    assert ks_p.passed  # the KS test "passes", as in the notebook, although the spread does not


def test_validate_with_too_few_answers_says_so_without_nan(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    result = analyze_plan(plan, _rows(plan, [3]))
    (validation,) = result.validations
    assert validation.problem is not None and "not enough data" in validation.problem
    assert validation.welch_p is None and validation.ks is None
    assert all(not e.passed for e in result.expectations)
    assert "NaN" not in result.to_json()


def test_validate_by_group_against_margins(tmp_path: Path) -> None:
    text = SCENARIO.replace(
        'validate response against "gazpacho_votes.csv" column "Vote"\n'
        "  expect sd_ratio(response) > 0.7\n"
        "  expect ks_p(response) > 0.05",
        'validate response by world against "margins.csv"\n  expect correlation(response) > 0.8',
    )
    text = text.replace(
        "world market {\n  mode survey\n  agents americans\n}",
        "world market {\n  mode survey\n  agents americans\n}\n\n"
        "world store {\n  mode survey\n  agents americans\n}",
    ).replace('ask market "Would', 'ask store "Again?"\n  ask market "Would')
    text = text.replace("extract from market {", "extract from market, store {")
    (tmp_path / "margins.csv").write_text("world,mean\nmarket,3.0\nstore,2.0\n", encoding="utf-8")
    plan = _plan(tmp_path, text.replace("extract from market, store {", "extract from market {"))
    rows = _rows(plan, [3] * 25 + [4] * 25)
    rows += [{**row, "world": "store", "response": 2} for row in rows]
    result = analyze_plan(plan, rows)
    (validation,) = result.validations
    assert [(m.group, m.simulated, m.real) for m in validation.margins] == [
        ("market", 3.5, 3.0),
        ("store", 2.0, 2.0),
    ]
    assert validation.mae == pytest.approx(0.25)
    assert validation.correlation == pytest.approx(1.0)
    assert result.expectations[0].passed


# ------------------------------------------------------------- aggregates, filters, groups

GROUPED = """\
scenario grouped {
  seed 3
}

import "stdlib/demographics/usa.tts"

population people {
  from usa
  size 40
  segment young {
    size 20
    age 18..29
  }
}

world room {
  mode survey
  agents people
}

timeline {
  ask room "Rate it."
}

extract from room {
  score int 1..10
}

analyze {
  summarize score by age
  compare score by income
  expect share(score >= 4) > 0
  expect share(score in [4, 5]) >= 0
  expect sd(score) >= 0
  expect mean(score) for people.young >= 0
  expect mean(score) for segment == young >= mean(score) for segment == general
}
"""


def _grouped(tmp_path: Path) -> Plan:
    (tmp_path / "grouped.tts").write_text(GROUPED, encoding="utf-8")
    return compile_plan(check_file(tmp_path / "grouped.tts").require_program())


def _grouped_rows(plan: Plan, scores: list[int | None]) -> list[dict[str, Any]]:
    return [
        {
            "agent": agent.id,
            "world": "room",
            "population": "people",
            "segment": agent.segment,
            "persona_age": agent.attributes["age"],
            "persona_income": agent.attributes["income"],
            "score": score,
            "_missing": {} if score is not None else {"score": "unknown"},
        }
        for agent, score in zip(plan.agents, scores, strict=True)
    ]


def test_groups_by_demographics_brackets_and_attribute_values(tmp_path: Path) -> None:
    plan = _grouped(tmp_path)
    scores = [(i % 10) + 1 for i in range(40)]
    result = analyze_plan(plan, _grouped_rows(plan, scores))
    by_age = result.summaries[0]
    step = plan.steps[-1]
    assert isinstance(step, AnalyzeStep)
    brackets = step.analyses[0].brackets
    labels = [b.label for b in brackets]
    # Groups are the brackets of usa's age distribution, in bracket order.
    groups = [group.group for group in by_age.groups]
    assert groups == [label for label in labels if label in groups]
    ages = {agent.id: agent.attributes["age"] for agent in plan.agents}
    for group in by_age.groups:
        bracket = next(b for b in brackets if b.label == group.group)
        members = [
            s
            for a, s in zip(plan.agents, scores, strict=True)
            if bracket.low <= ages[a.id] <= bracket.high
        ]
        assert group.n == len(members)
        assert group.mean == pytest.approx(np.mean(members))
    compare = result.compares[0]
    assert compare.problem is None and len(compare.arms) >= 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(1, 10)), min_size=40, max_size=40))
def test_aggregates_and_filters_agree_with_pandas(
    tmp_path_factory: Any, scores: list[int | None]
) -> None:
    plan = _grouped(tmp_path_factory.mktemp("g"))
    result = analyze_plan(plan, _grouped_rows(plan, scores))
    present = [s for s in scores if s is not None]
    share_ge, share_in, sd, young, versus = result.expectations
    if not present:
        assert all(e.observed is None and not e.passed for e in result.expectations)
        return
    assert share_ge.observed == pytest.approx(np.mean([s >= 4 for s in present]))
    assert share_in.observed == pytest.approx(np.mean([s in (4, 5) for s in present]))
    if len(present) >= 2:
        assert sd.observed == pytest.approx(np.std(present, ddof=1))
    else:
        assert sd.observed is None and "not enough data" in sd.reason
    segments = [a.segment for a in plan.agents]
    young_scores = [
        s for s, g in zip(scores, segments, strict=True) if g == "young" and s is not None
    ]
    general = [s for s, g in zip(scores, segments, strict=True) if g == "general" and s is not None]
    if young_scores:
        assert young.observed == pytest.approx(np.mean(young_scores))
    if young_scores and general:
        assert versus.observed == pytest.approx(np.mean(young_scores))
        assert versus.bound == pytest.approx(np.mean(general))
        assert versus.passed == (np.mean(young_scores) >= np.mean(general) - 1e-12)
    assert "NaN" not in result.to_json()


# ------------------------------------------------------------------ properties

GROUPS = ["a", "b", "c", "d"]
SCORE = FieldPlan(name="score", kind="int", low=1, high=5)
# Random answers in random groups: empty and one-answer groups, ties, constant values.
grouped_answers = st.lists(
    st.tuples(st.sampled_from(GROUPS), st.one_of(st.none(), st.integers(1, 5), st.just(3))),
    max_size=40,
)


def _by_g(data: list[tuple[str, int | None]]) -> list[dict[str, Any]]:
    return [{"agent": f"p/{i}", "persona_g": g, "score": v} for i, (g, v) in enumerate(data)]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's own calls on constant samples
@settings(max_examples=60, deadline=None)
@given(grouped_answers)
def test_compare_and_summarize_by_an_attribute_equal_scipy_and_never_nan(
    data: list[tuple[str, int | None]],
) -> None:
    plans = [
        AnalysisPlan(kind=kind, origin=origin_at(), field="score", by="g", column="persona_g")
        for kind in ("compare", "summarize")
    ]
    result = analyze(plans, _by_g(data), [SCORE], [])
    _no_nan(result.model_dump())
    compare, summary = result.compares[0], result.summaries[0]
    present = list(dict.fromkeys(g for g, _ in data))  # groups in first-appearance order
    samples = [
        np.array([v for g, v in data if g == name and v is not None], float) for name in present
    ]
    assert [group.n for group in summary.groups] == [len(s) for s in samples]
    for group, sample in zip(summary.groups, samples, strict=True):
        assert group.mean == (pytest.approx(sample.mean()) if len(sample) else None)
        assert sum(b.count for b in group.histogram) == len(sample)
    assert compare.verdict and compare.conclusion
    if len(present) < 2:
        assert compare.problem is not None and "not enough data" in compare.verdict
        return
    if len(present) > 2:
        anova = next(test for test in compare.tests if test.name == "anova")
        usable = [s for s in samples if len(s)]
        if anova.p_value is not None:
            assert anova.p_value == pytest.approx(stats.f_oneway(*usable).pvalue)
        else:
            assert anova.note
    for pair, sample in zip(compare.pairs, samples[1:], strict=True):
        welch = pair.tests[0]
        if welch.p_value is not None:
            expected = stats.ttest_ind(sample, samples[0], equal_var=False)
            assert welch.p_value == pytest.approx(expected.pvalue)
        else:
            assert welch.note


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 5), max_size=30),
    st.lists(st.integers(1, 5), min_size=2, max_size=30),
)
def test_validation_metrics_equal_scipy_and_never_nan(
    simulated: list[int], real: list[int]
) -> None:
    plan = AnalysisPlan(
        kind="validate", origin=origin_at(), field="score", real=[float(v) for v in real]
    )
    rows = [{"agent": f"p/{i}", "score": v} for i, v in enumerate(simulated)]
    (validation,) = analyze([plan], rows, [SCORE], []).validations
    _no_nan(validation.model_dump())
    assert validation.verdict
    sim, ref = np.array(simulated, float), np.array(real, float)
    if len(sim) < 2:
        assert validation.problem is not None and validation.ks is None
        return
    assert validation.ks == pytest.approx(stats.ks_2samp(ref, sim).statistic)
    assert validation.wasserstein == pytest.approx(stats.wasserstein_distance(sim, ref))
    if np.var(sim) + np.var(ref) > 0:
        assert validation.welch_p == pytest.approx(
            stats.ttest_ind(ref, sim, equal_var=False).pvalue
        )
        assert validation.mann_whitney_p == pytest.approx(
            stats.mannwhitneyu(sim, ref, alternative="two-sided").pvalue
        )
    else:
        assert validation.welch_p is None and validation.notes
    if np.std(ref) > 0:
        assert validation.sd_ratio == pytest.approx(np.std(sim, ddof=1) / np.std(ref, ddof=1))
    assert validation.simulated.counts == [simulated.count(v) for v in range(1, 6)]


def _no_nan(value: Any) -> None:
    """No NaN or infinity anywhere (pydantic would write them to JSON as null, hiding them)."""
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, dict):
        for item in value.values():
            _no_nan(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _no_nan(item)
