"""The experiment examples end to end on the real embedded model, through the `tts` command.

`email_ab.tts` and `onboarding_journey.tts` run unchanged in a scratch copy of
`scenarios/`, in a child process as a user would start them. The answers of a
135M-parameter model are weak, so these tests judge structure and behaviour:
assignment, delivery framing and timing, the statistics chosen, the report, the
exit codes; never what the personas say.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM, PNG_SIGNATURE, console_errors, render
from tests.conftest import ROOT

pytestmark = pytest.mark.model

SECRET_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY")


def tts(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "tiny_dsl", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One scratch copy of the scenarios for the module: later tests reuse its cache."""
    path = tmp_path_factory.mktemp("examples")
    shutil.copytree(ROOT / "scenarios", path / "scenarios")
    return path


def latest_run(workdir: Path, scenario: str) -> Path:
    """The run folder `latest` names now; a later run of the same scenario moves `latest`."""
    return (workdir / "outputs" / scenario / "latest").resolve()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def transcript(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


# ------------------------------------------------------------------------- email A/B


@pytest.fixture(scope="module")
def email_run(workdir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    # The scenario names gpt-4o-mini; `--provider embedded` runs it with no API key.
    done = tts(workdir, "run", "scenarios/email_ab.tts", "--provider", "embedded", "--quiet")
    return done, latest_run(workdir, "email_campaign_ab")


def test_email_ab_runs_and_names_the_model_that_answered(
    email_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, run_dir = email_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "embedded/SmolLM2-135M-Instruct" in done.stdout
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "ok" and manifest["exit_code"] == 0
    assert manifest["provider"] == "embedded"
    # One persona per member, one answer and one extraction per member, plus repairs.
    assert manifest["model_calls"] >= 24 * 3
    assert manifest["model_calls"] == sum(step["model_calls"] for step in manifest["steps"])
    for name in ("results.csv", "results.json", "analysis.json", "report.html", "plan.json"):
        assert (run_dir / name).is_file(), name
    # Every generated member is saved as a TinyTroupe agent file, reusable with `persona x from`.
    saved = sorted((run_dir / "personas" / "consumers").glob("*.agent.json"))
    assert len(saved) == 24
    assert all(read_json(path)["type"] == "TinyPerson" for path in saved)


def test_email_ab_assignment_is_stratified_balanced_and_written_to_the_results(
    email_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = email_run
    rows = read_rows(run_dir / "results.csv")
    assert len(rows) == 24
    assert len({row["name"] for row in rows}) == 24
    plan = read_json(run_dir / "plan.json")
    (intervention,) = plan["interventions"]
    assert {row["agent"]: row["variant"] for row in rows} == intervention["assignment"]
    by_segment: dict[str, Counter[str]] = {}
    for row in rows:
        by_segment.setdefault(row["segment"], Counter())[row["variant"]] += 1
    assert set(by_segment) == {"young_professionals", "families", "general"}
    for segment, arms in by_segment.items():
        assert set(arms) == {"emotional", "rational", "control"}, segment
        # 20% control of 8, the rest split evenly between the two variants.
        assert arms["control"] in (1, 2), (segment, arms)
        assert abs(arms["emotional"] - arms["rational"]) <= 1, (segment, arms)


def test_email_ab_deliveries_are_framed_by_channel_and_timed(
    email_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = email_run
    rows = {row["agent"]: row for row in read_rows(run_dir / "results.csv")}
    deliveries = [e for e in transcript(run_dir) if e["source"] == "email_campaign"]
    delivered_to = {e["agent"] for e in deliveries}
    assert delivered_to == {agent for agent, row in rows.items() if row["variant"] != "control"}
    for event in deliveries:
        assert event["content"].startswith("[email]"), event
        hour = int(event["time"][11:13])
        if rows[event["agent"]]["variant"] == "emotional":  # timing morning
            assert 6 <= hour < 12, event
        else:  # timing afternoon
            assert 12 <= hour < 18, event


def test_email_ab_statistics_follow_the_field_types(
    email_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = email_run
    analysis = read_json(run_dir / "analysis.json")
    intent, opened = analysis["compares"]
    assert (intent["field"], intent["kind"], opened["field"], opened["kind"]) == (
        "purchase_intent",
        "numeric",
        "opened",
        "categorical",
    )
    assert {arm["group"] for arm in intent["arms"]} == {"emotional", "rational", "control"}
    assert sum(arm["n"] + arm["missing"] for arm in intent["arms"]) == 24
    # Three arms: an omnibus test over all of them, then each variant against control.
    assert {test["name"] for test in intent["tests"]} == {"anova", "kruskal_wallis"}
    assert intent["reference"] == "control"
    for pair in intent["pairs"]:
        assert "welch_t" in {test["name"] for test in pair["tests"]}
        assert {effect["name"] for effect in pair["effects"]} >= {"cohens_d", "cliffs_delta"}
    for pair in opened["pairs"]:
        assert {test["name"] for test in pair["tests"]} & {"chi_square", "fisher_exact"}
    # About five people per arm: the analysis must say so rather than conclude.
    assert intent["small_sample"] and opened["small_sample"]
    adjusted = [
        test
        for compare in (intent, opened)
        for test in [*compare["tests"], *(t for pair in compare["pairs"] for t in pair["tests"])]
        if test["p_value"] is not None
    ]
    assert adjusted and all(test["p_adjusted"] >= test["p_value"] for test in adjusted)
    (summary,) = analysis["summaries"]
    assert {group["group"] for group in summary["groups"]} == {
        "young_professionals",
        "families",
        "general",
    }
    (expectation,) = analysis["expectations"]
    assert expectation["passed"], expectation


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian package `chromium`")
def test_email_ab_report_renders_its_charts_in_headless_chromium(
    email_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = email_run
    screenshot, dom, log = render(run_dir / "report.html", "email_ab-report.png")
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert console_errors(log) == []
    assert dom.count("<svg") >= 3  # a chart per compare statement and the summary
    assert "Email campaign A/B test" in dom
    rows = read_rows(run_dir / "results.csv")
    # Each agent's transcript is a section of the page, linked from the population table.
    anchors = [f'id="agent-{row["agent"].replace("/", "-")}"' for row in rows]
    assert all(anchor in dom for anchor in anchors)


@pytest.fixture(scope="module")
def guarded_run(
    email_run: tuple[subprocess.CompletedProcess[str], Path], workdir: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The email scenario again with one more expectation, which can never pass."""
    assert email_run[0].returncode == 0
    text = (workdir / "scenarios" / "email_ab.tts").read_text(encoding="utf-8")
    # The population has 24 members, so the count of answers cannot exceed 24.
    guarded = text.replace(
        "expect mean(purchase_intent) between 1 and 10",
        "expect mean(purchase_intent) between 1 and 10\n  expect count(opened) > 24",
    )
    assert guarded != text
    (workdir / "scenarios" / "email_ab_guarded.tts").write_text(guarded, encoding="utf-8")
    done = tts(
        workdir, "run", "scenarios/email_ab_guarded.tts", "--provider", "embedded", "--quiet"
    )
    return done, latest_run(workdir, "email_campaign_ab")


def test_a_failed_expectation_exits_1_without_new_model_calls(
    guarded_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    failed, run_dir = guarded_run
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # The summary names the failed expectation where it is written, and why it failed.
    assert "email_ab_guarded.tts:72:3: expect count(opened) > 24 (" in failed.stderr
    manifest = read_json(run_dir / "manifest.json")
    # Only the analysis changed: every model answer came from the first run.
    assert manifest["model_calls"] == 0
    assert manifest["expectations_failed"] == 1
    assert (run_dir / "report.html").is_file()


def test_report_regenerates_and_diff_compares_two_runs(
    email_run: tuple[subprocess.CompletedProcess[str], Path],
    guarded_run: tuple[subprocess.CompletedProcess[str], Path],
    workdir: Path,
) -> None:
    first, second = email_run[1], guarded_run[1]
    assert first != second
    original = (first / "report.html").read_bytes()
    (first / "report.html").unlink()
    done = tts(workdir, "report", str(first))
    assert done.returncode == 0, done.stderr
    assert (first / "report.html").read_bytes() == original
    assert not (first / "report.md").exists()  # the scenario's output block names html only

    done = tts(workdir, "diff", str(first), str(second))
    assert done.returncode == 0, done.stderr
    assert "count(opened) > 24" in done.stdout
    changes = json.loads(tts(workdir, "diff", "--json", str(first), str(second)).stdout)
    assert changes["steps"], changes


# ------------------------------------------------------------------ onboarding journey


INTERVENTIONS = ("welcome", "reminder")


@pytest.fixture(scope="module")
def onboarding_run(workdir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    done = tts(workdir, "run", "scenarios/onboarding_journey.tts", "--quiet")
    return done, latest_run(workdir, "onboarding_journey")


def test_onboarding_journey_runs_two_touchpoints_days_apart_then_interviews(
    onboarding_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, run_dir = onboarding_run
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_rows(run_dir / "results.csv")
    assert len(rows) == 6 and len({row["name"] for row in rows}) == 6
    events = transcript(run_dir)
    for row in rows:
        mine = [e for e in events if e["agent"] == row["agent"] and e["source"] in INTERVENTIONS]
        assert [(e["source"], e["content"].split("]")[0]) for e in mine] == [
            ("welcome", "[in_app"),
            ("reminder", "[push"),
        ]
        assert mine[0]["time"][:10] == "2025-05-01" and mine[1]["time"][:10] == "2025-05-04"
    # The interviewer puts the question to each member in a 1:1 session, in order.
    asked = [
        e["agent"]
        for e in events
        if e["step"] == "07-interview-users"
        and e["kind"] == "stimulus"
        and e["source"] == "interviewer"
    ]
    assert asked == sorted(row["agent"] for row in rows)


def test_onboarding_journey_funnel_and_report(
    onboarding_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = onboarding_run
    (funnel,) = read_json(run_dir / "analysis.json")["funnels"]
    assert funnel["fields"] == ["linked_account", "set_budget"] and funnel["total"] == 6
    first, second = funnel["stages"]
    assert second["passed"] <= first["passed"]
    assert first["passed"] + first["dropped"] + first["missing"] <= 6
    assert (run_dir / "report.html").is_file()
    assert not (run_dir / "report.md").exists()  # formats [csv, html]
