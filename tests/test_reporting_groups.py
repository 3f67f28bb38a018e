"""The report's verdict box, histograms per group, spread across replicates and the
validation section, on synthetic rows of two replicates checked against pandas and
scipy, and rendered in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from markupsafe import escape
from scipy import stats

from tests.browser import CHROMIUM, PNG_SIGNATURE, console_errors, render
from tests.conftest import ROOT
from tests.test_validate import SIMULATED_VOTES
from tiny_dsl.analysis import analyze_plan, text
from tiny_dsl.checks import check_file
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.model import Plan
from tiny_dsl.reporting import build_view
from tiny_dsl.reporting.render import render_html, render_markdown
from tiny_dsl.reporting.rundir import RunData

SCENARIO = """
scenario groups {
  title "Groups"
}

demographics base {
  age { 18..34 40%; 35..64 60% }
  income { low 50%; high 50% }
}

population buyers {
  from base
  size 50
  segment young {
    size 20
    age 18..34
  }
}

world shop {
  mode survey
  agents buyers
}

intervention mail {
  channel email
  targets buyers
  variant rational { content "Facts." }
  variant emotional { content "Feelings." }
}

timeline {
  deliver mail in shop
  ask shop "Would you buy it?"
}

extract from shop {
  score int 1..5
  liked bool
  mood enum [happy, sad]
}

analyze {
  compare score by age
  summarize liked by replicate
  summarize mood by income
  compare score by mail
  validate score against "votes.csv" column "Vote"
  expect share(score in [4, 5]) for buyers.young between 10% and 90%
}
"""


def _plan(folder: Path) -> Plan:
    shutil.copy(ROOT / "scenarios" / "v2" / "data" / "gazpacho_votes.csv", folder / "votes.csv")
    (folder / "groups.tts").write_text(SCENARIO, encoding="utf-8")
    return compile_plan(check_file(folder / "groups.tts").require_program())


def _rows(plan: Plan) -> list[dict[str, Any]]:
    """Both replicates of every agent: `rational` answers about two points higher."""
    rng = np.random.default_rng(11)
    assignment = plan.interventions[0].assignment
    rows = []
    for replicate in (1, 2):
        for agent in plan.agents:
            arm = assignment[agent.id]
            rows.append(
                {
                    "agent": agent.id,
                    "name": agent.id,
                    "world": "shop",
                    "population": "buyers",
                    "segment": agent.segment,
                    "replicate": replicate,
                    "variant_mail": arm,
                    "persona_age": agent.attributes["age"],
                    "persona_income": agent.attributes["income"],
                    "score": int(
                        np.clip(rng.integers(1, 4) + (2 if arm == "rational" else 0), 1, 5)
                    ),
                    "liked": bool(rng.integers(0, 2)),
                    "mood": ["happy", "sad"][int(rng.integers(0, 2))],
                    "_missing": {},
                }
            )
    return rows


@pytest.fixture
def run(tmp_path: Path) -> RunData:
    plan = _plan(tmp_path)
    rows = _rows(plan)
    data = RunData(path=tmp_path, plan=plan.model_dump(mode="json"), rows=rows)
    data.analysis = analyze_plan(plan, rows)
    return data


def test_the_verdict_names_the_group_ahead_with_its_interval_and_adjusted_p(run: RunData) -> None:
    assert run.analysis is not None
    by_mail = next(item for item in run.analysis.compares if item.by == "mail")
    frame = pd.DataFrame(run.rows)
    rational = frame[frame.variant_mail == "rational"].score.to_numpy(float)
    emotional = frame[frame.variant_mail == "emotional"].score.to_numpy(float)
    welch = stats.ttest_ind(emotional, rational, equal_var=False)
    low, high = welch.confidence_interval()
    (pair,) = by_mail.pairs
    adjusted = pair.tests[0].p_adjusted
    assert adjusted is not None and adjusted < 0.05
    difference = rational.mean() - emotional.mean()
    assert by_mail.verdict == (
        f"score by mail: 'rational' is ahead of 'emotional' by {text.number(difference)} "
        f"on average (95% CI {text.number(-high)} to {text.number(-low)}, "
        f"Holm-adjusted {text.p_equals(adjusted)})."
    )
    by_age = next(item for item in run.analysis.compares if item.by == "age")
    assert by_age.verdict.startswith("score by age: ")


def test_every_summary_and_compare_shows_its_spread_across_replicates(run: RunData) -> None:
    assert run.analysis is not None
    assert run.analysis.replicates == 2
    by_replicate, by_income = run.analysis.summaries
    frame = pd.DataFrame(run.rows)
    for spread in by_income.spreads:
        level = spread.statistic.removeprefix("share ")
        group = frame[frame.persona_income == spread.group]
        per = [(group[group.replicate == r].mood == level).mean() for r in (1, 2)]
        assert spread.values == pytest.approx(per)
        assert spread.mean == pytest.approx(np.mean(per))
        assert spread.sd == pytest.approx(np.std(per, ddof=1))
        assert (spread.min, spread.max) == (pytest.approx(min(per)), pytest.approx(max(per)))
    assert {spread.group for spread in by_income.spreads} == {"low", "high"}
    # grouped by replicate, each group holds one replicate: its other value is None
    assert [spread.values.count(None) for spread in by_replicate.spreads] == [1, 1]
    by_mail = next(item for item in run.analysis.compares if item.by == "mail")
    for spread in by_mail.spreads:
        arm = frame[frame.variant_mail == spread.group]
        per = [arm[arm.replicate == r].score.mean() for r in (1, 2)]
        assert spread.statistic == "mean" and spread.values == pytest.approx(per)


def test_distributions_count_every_answer_per_group(run: RunData) -> None:
    assert run.analysis is not None
    score = next(item for item in run.analysis.distributions if item.field == "score")
    assert score.by == "age"  # the first compare of `score`
    frame = pd.DataFrame(run.rows)
    for group in score.groups:
        inside = (
            frame.persona_age.between(18, 34)
            if group.group == "18..34"
            else frame.persona_age >= 35
        )
        counts = frame[inside].score.value_counts()
        assert [b.label for b in group.histogram] == ["1", "2", "3", "4", "5"]
        assert [b.count for b in group.histogram] == [int(counts.get(v, 0)) for v in range(1, 6)]
    assert {item.field for item in run.analysis.distributions} == {"score", "liked", "mood"}


def test_html_and_markdown_open_with_the_verdict_box(run: RunData) -> None:
    view = build_view(run)
    html, markdown = render_html(view), render_markdown(view)
    assert run.analysis is not None
    sentences = [item.verdict for item in run.analysis.compares]
    sentences += [item.verdict for item in run.analysis.validations]
    assert html.index('id="verdicts"') < html.index('class="toc"') < html.index('id="summary"')
    for sentence in sentences:
        assert str(escape(sentence)) in html  # as Jinja escapes it
        assert sentence in markdown
    assert markdown.index("> **Verdict**") < markdown.index("## Summary")
    assert "replicate 1" in html and "replicate 2" in html and "across replicates" in html
    assert "## Distributions" in markdown and "18..34 (n=" in markdown


def test_the_validation_section_overlays_both_sides_and_lists_every_metric(
    run: RunData, tmp_path: Path
) -> None:
    assert run.analysis is not None
    (validation,) = run.analysis.validations
    view = build_view(run)
    html, markdown = render_html(view), render_markdown(view)
    assert 'id="validation"' in html and 'id="validation-1"' in html
    section = markdown[markdown.index("## Validation against real data") :]
    for metric in (
        "SD ratio",
        "Welch's t-test",
        "Mann-Whitney U",
        "Kolmogorov-Smirnov D",
        "Wasserstein-1",
        "Overlap coefficient",
        "Chi-square",
    ):
        assert metric in section
    assert f"SD ratio (simulated / real) | {text.number(validation.sd_ratio)}" in section
    # the real side's counts per answer, as the CSV holds them
    real = pd.read_csv(tmp_path / "votes.csv")["Vote"].value_counts()
    simulated = pd.Series([row["score"] for row in run.rows]).value_counts()
    for vote in range(1, 6):
        s, r = int(simulated.get(vote, 0)), int(real.get(vote, 0))
        row = f"| {vote} | {s} ({s / len(run.rows):.0%}) | {r} ({r / real.sum():.0%}) |"
        assert row in section


def test_a_narrow_simulated_spread_is_a_plain_warning_first(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    rows = _rows(plan)
    for row, vote in zip(rows, SIMULATED_VOTES * 2, strict=True):
        row["score"] = vote  # TinyTroupe's compressed simulated votes
    data = RunData(path=tmp_path, plan=plan.model_dump(mode="json"), rows=rows)
    data.analysis = analyze_plan(plan, rows)
    view = build_view(data)
    (validation,) = data.analysis.validations
    assert validation.sd_ratio is not None and validation.sd_ratio < 0.7
    warning = next(cell for cell in view.verdicts if cell.tone == "warn")
    assert "the simulated spread is much narrower than the real one" in warning.text
    markdown = render_markdown(view)
    assert "> Caution: the simulated answers are much less varied than the real ones" in markdown


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian package `chromium`")
def test_the_report_with_replicates_renders_in_headless_chromium(
    run: RunData, tmp_path: Path
) -> None:
    html = render_html(build_view(run))
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    screenshot, dom, log = render(path, "report-groups.png")
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert console_errors(log) == []
    assert dom.count("<svg") == html.count("<svg") > 8
    assert 'id="verdicts"' in dom and "-spread-" in dom and 'id="validation-1"' in dom
