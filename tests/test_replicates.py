"""Runs: `replicates N` / `--replicates N`, `param NAME value` with `--set`, and `--seed`.

Replicates run the timeline again on the same people and assignment with other
seeds: checked here on the built-in engine with the scripted provider of
`test_runtime`, and on TinyTroupe with the hash provider of
`test_tinytroupe_engine` (skipped where TinyTroupe is not installed). A run that
fails in the middle of replicate 2 resumes there and ends as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tests.test_runtime import prompts, run, scripted_client, sent
from tests.test_tinytroupe_engine import HashProvider, needs_tinytroupe
from tests.test_tinytroupe_engine import run as run_tinytroupe
from tiny_dsl.checks import CheckResult, Overrides, check_file
from tiny_dsl.cli import main
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.model import Plan, ReplicateStep, replicate_of
from tiny_dsl.reporting import diff_runs, diff_runs_json
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.checkpoints import CheckpointStore
from tiny_dsl.runtime.engines.tinytroupe import INSTALL_HINT, tinytroupe_installed
from tiny_dsl.runtime.providers.base import ChatRequest, ProviderError
from tiny_dsl.session import RunOptions, RunOutcome, Session
from tiny_dsl.source import SourceFile
from tiny_dsl.syntax.formatter import format_source

STUDY = """\
scenario study {
  title "Replicated study"
  seed 5
  replicates 2
}

param product "VitaBoost"
param pitch "Try {product} today."
param rounds 3

demographics folks {
  age { 20..40 50%; 41..60 50% }
}

population panel {
  from folks
  size 4
}

world poll {
  mode survey
  agents panel
}

intervention offer {
  channel email
  targets panel
  control 50%
  variant plain { content "{pitch} ({rounds} offers)" }
}

timeline {
  deliver offer in poll
  ask poll "Would you buy {product}? Rate it from 1 to 5."
  checkpoint asked
  ask poll "And after thinking it over?"
}

extract from poll at asked {
  first int 1..5 "The first rating"
}

extract from poll {
  final int 1..5 "The last rating"
}

extract overall from poll {
  mood text "The panel's mood"
}

analyze {
  expect mean(final) between 1 and 5
  expect mean(first) between 1 and 5
}

output {
  formats [csv, json]
}
"""


def checked(tmp_path: Path, text: str = STUDY, **overrides: Any) -> CheckResult:
    path = tmp_path / "study.tts"
    path.write_text(text, encoding="utf-8")
    return check_file(path, overrides=Overrides(**overrides))


def planned(tmp_path: Path, text: str = STUDY, **overrides: Any) -> Plan:
    return compile_plan(checked(tmp_path, text, **overrides).require_program())


def problems(result: CheckResult) -> list[tuple[str, int | None, int | None, str]]:
    """(code, line, column, message) of every diagnostic."""
    found = []
    for item in result.diagnostics:
        span = item.primary.span if item.primary is not None else None
        found.append(
            (item.code, span.line if span else None, span.column if span else None, item.message)
        )
    return found


def helps(result: CheckResult, code: str) -> list[str]:
    return [line for d in result.diagnostics if d.code == code for line in d.help]


# ------------------------------------------------------------------------- params


def test_params_replace_braces_in_every_string_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "lib.tts").write_text(
        'param brand "Acme"\npersona lisa {\n  name "Lisa"\n  age 30\n'
        '  occupation "Sells {brand} {product} {env.HOME}"\n}\n',
        encoding="utf-8",
    )
    text = STUDY.replace("param rounds 3\n", 'param rounds 3\nimport "lib.tts"\n').replace(
        "agents panel\n", "agents panel, lisa\n"
    )
    program = checked(tmp_path, text).require_program()
    assert program.params == {
        "product": "VitaBoost",
        "pitch": "Try VitaBoost today.",  # a param may use another param
        "rounds": 3,
        "brand": "Acme",  # params of an imported file are the program's
    }
    variant = program.interventions["offer"].variants[0]
    assert variant.content == "Try VitaBoost today. (3 offers)"
    assert program.timeline[1].question == "Would you buy VitaBoost? Rate it from 1 to 5."
    # Only declared params are replaced: `{env.HOME}` stays as written.
    assert program.personas["lisa"].spec["occupation"] == "Sells Acme VitaBoost {env.HOME}"


def test_set_replaces_a_default_and_a_number_param_takes_a_number(tmp_path: Path) -> None:
    program = checked(tmp_path, params={"product": "ZenTea", "rounds": "2"}).require_program()
    assert program.params == {"product": "ZenTea", "pitch": "Try ZenTea today.", "rounds": 2}
    assert program.interventions["offer"].variants[0].content == "Try ZenTea today. (2 offers)"

    result = checked(tmp_path, params={"prodcut": "x", "rounds": "two"})
    assert sorted((c, m) for c, _, _, m in problems(result) if c.startswith("E")) == [
        ("E303", "`--set rounds=two`: param `rounds` takes a number"),
        ("E370", "`--set prodcut=...` names no param of the scenario"),
    ]
    assert helps(result, "E370") == [
        "did you mean `product`?",
        "the scenario's params: `product`, `pitch`, `rounds`",
    ]
    assert helps(result, "E303") == ["for example: `--set rounds=3`"]
    wrong = next(d for d in result.diagnostics if d.code == "E303")
    assert wrong.secondary[0].span.line == 9  # where `rounds` is declared a number


def test_param_problems_are_located_with_a_fix(tmp_path: Path) -> None:
    text = (
        STUDY.replace('param product "VitaBoost"', 'param product "{pitch} X"')
        .replace("param rounds 3", 'param rounds [1, 2]\nparam pitch "again"')
        .replace("And after thinking it over?", "And {prodcut}?")
    )
    result = checked(tmp_path, text)
    assert [(c, line, column) for c, line, column, _ in problems(result)] == [
        ("E371", 7, 15),  # product -> pitch -> product
        ("E303", 9, 14),  # a list is neither a string nor a number
        ("E202", 10, 7),  # pitch declared twice
        ("W170", 37, 12),  # `{prodcut}`: a typo of a param, kept verbatim
    ]
    cycle = next(d for d in result.diagnostics if d.code == "E371")
    assert cycle.message == "params use each other in a cycle: product -> pitch -> product"
    assert helps(result, "E371") == ["write one of the values out instead of using another param"]
    assert helps(result, "W170") == ["did you mean `product`?"]


def test_param_is_formatted_canonically(tmp_path: Path) -> None:
    source = SourceFile("p.tts", 'param   topic    "AI"   # what the panel discusses\nparam n  3\n')
    formatted, errors = format_source(source)
    assert errors == []
    assert formatted == 'param topic "AI"  # what the panel discusses\nparam n 3\n'
    again, _ = format_source(SourceFile("p.tts", formatted or ""))
    assert again == formatted


# ----------------------------------------------------------------- replicates: plan


def test_replicates_range_is_checked(tmp_path: Path) -> None:
    result = checked(tmp_path, STUDY.replace("replicates 2", "replicates 51"))
    assert [(c, line, column) for c, line, column, _ in problems(result)] == [("E304", 4, 14)]
    result = checked(tmp_path, replicates=0)
    assert [(c, m) for c, _, _, m in problems(result)] == [
        ("E304", "`--replicates 0` is out of range")
    ]


def test_plan_repeats_the_timeline_and_multiplies_calls(tmp_path: Path) -> None:
    one = planned(tmp_path, replicates=1)
    three = planned(tmp_path, replicates=3)
    ids = [step.id for step in three.steps]
    timeline = [
        "02-deliver-offer",
        "03-ask-poll",
        "04-checkpoint-asked",
        "05-extract-poll",
        "06-ask-poll",
        "07-extract-poll",
        "08-extract_overall-poll",
    ]
    assert ids == [
        "01-generate-panel",
        *timeline,
        "replicate@r2",
        *(f"{step}@r2" for step in timeline),
        "replicate@r3",
        *(f"{step}@r3" for step in timeline),
        "09-analyze",
    ]
    # Replicate 1 is the single-replicate plan: same ids and hashes, so its cached
    # answers and checkpoints stay valid when replicates are added.
    assert [(s.id, s.hash) for s in three.steps[:8]] == [(s.id, s.hash) for s in one.steps[:8]]
    opening = three.steps[8]
    assert isinstance(opening, ReplicateStep)
    assert (opening.replicate, opening.after, opening.calls) == (2, "01-generate-panel", 0)
    assert opening.origin.line == 4  # the `replicates` setting
    people = one.steps[0].calls
    per_replicate = sum(step.calls for step in one.steps[1:])
    assert people == 4 and per_replicate == 4 * 4 + 1
    assert three.estimate.calls == people + 3 * per_replicate
    assert [replicate_of(i) for i in ids].count(3) == len(timeline) + 1


def test_seed_and_params_are_in_the_plan_and_its_hash(tmp_path: Path) -> None:
    base = planned(tmp_path)
    assert base.params == {"product": "VitaBoost", "pitch": "Try VitaBoost today.", "rounds": 3}
    reseeded = planned(tmp_path, seed=6)
    assert reseeded.settings.seed == 6
    assert reseeded.steps[0].hash != base.steps[0].hash

    # A param no step uses changes the plan's hash, but no step's: nothing is redone.
    unused = STUDY.replace("param rounds 3", 'param rounds 3\nparam note "a"')
    a = planned(tmp_path, unused)
    b = planned(tmp_path, unused, params={"note": "b"})
    assert [s.hash for s in a.steps] == [s.hash for s in b.steps]
    assert a.plan_hash != b.plan_hash
    # A param a step uses changes that step on, and only from there.
    c = planned(tmp_path, params={"product": "ZenTea"})
    assert c.steps[0].hash == base.steps[0].hash  # the people do not depend on it
    assert c.steps[1].hash != base.steps[1].hash


# --------------------------------------------------------------- replicates: run


def by_replicate(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["replicate"], []).append(row)
    return grouped


def assert_same_people_other_seeds(result: RunOutcome, requests: list[ChatRequest]) -> None:
    """Both replicates have the same people and arms; replicate 2 asked with other seeds."""
    assert result.exit_code == 0, [d.message for d in result.diagnostics]
    rows = by_replicate(result.rows)
    assert sorted(rows) == [1, 2]
    who = {
        replicate: [(r["agent"], r["name"], r["variant"], r["persona_age"]) for r in group]
        for replicate, group in rows.items()
    }
    assert who[1] == who[2] and len(who[1]) == 4
    assert {r["variant"] for r in result.rows} == {"plain", "control"}
    for row in result.rows:  # both extract blocks joined one row per agent and replicate
        assert row["first"] is not None and row["final"] is not None
    # The people were generated once, before the replicates.
    generated = [r for r in requests if r.purpose.startswith("generate")]
    assert len(generated) == 4
    # Replicate 2's calls are other requests than replicate 1's: other seeds, hence
    # other cache keys (no call of the fresh cache is a hit).
    acts: dict[str, list[int]] = {}
    for request in requests:
        if request.purpose.startswith("act") or request.purpose.startswith("extract"):
            acts.setdefault(request.purpose, []).append(request.seed)
    for seeds in acts.values():
        assert len(seeds) == len(set(seeds))
    assert result.manifest.cache_hits == 0
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert [record["replicate"] for record in summary] == [1, 2]
    events = [event.seq for event in result.transcript]
    assert events == sorted(set(events))  # numbered on across replicates
    steps = {event.step for event in result.transcript}
    assert "03-ask-poll@r2" in steps and "03-ask-poll" in steps
    header = (result.run_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["agent", "name", "world", "population", "segment", "replicate"]


def test_builtin_replicate_two_starts_from_the_same_people(tmp_path: Path) -> None:
    plan = planned(tmp_path)
    client = scripted_client()
    result = run(plan, client, tmp_path)
    assert_same_people_other_seeds(result, sent(client))
    # Replicate 2's first question reaches the member as it was after generation:
    # the prompt is replicate 1's, word for word (nothing of replicate 1 remembered).
    for member in plan.agents:
        acts = prompts(client, member.id)
        assert len(acts) == 4  # two questions in each replicate
        assert acts[2:] == acts[:2]


def test_builtin_run_failing_in_replicate_two_resumes_there(
    tmp_path: Path, llm_cache: LLMCache
) -> None:
    plan = planned(tmp_path, replicates=3)
    reference = run(plan, scripted_client(), tmp_path / "reference")

    count = {"seen": 0}

    def fail(request: ChatRequest) -> Exception | None:
        # Replicate 2's second question: the 5th of 4-per-replicate calls.
        if request.purpose.startswith("act") and "after thinking it over" in str(request.messages):
            count["seen"] += 1
            if count["seen"] == 5:
                return ProviderError("connection reset by peer")
        return None

    failed = run(plan, scripted_client(cache=llm_cache, fail=fail), tmp_path / "resumed")
    assert failed.exit_code == 3
    assert failed.diagnostics[0].message.startswith("step 06-ask-poll@r2 failed")

    client = scripted_client(cache=llm_cache)
    resumed = run(plan, client, tmp_path / "resumed")
    assert resumed.exit_code == 0
    assert resumed.restored[-3:] == [
        "03-ask-poll@r2",
        "04-checkpoint-asked@r2",
        "05-extract-poll@r2",
    ]
    assert resumed.executed[0] == "06-ask-poll@r2"
    # Replicate 3 starts from the people state this run did not make: read from the
    # generation step's checkpoint.
    assert "replicate@r3" in resumed.executed and "01-generate-panel" in resumed.restored
    assert not [r for r in sent(client) if r.purpose.startswith("generate")]
    assert resumed.rows == reference.rows
    assert [e.to_json() for e in resumed.transcript] == [e.to_json() for e in reference.transcript]


def test_going_from_one_to_two_replicates_reuses_replicate_one_and_diffs(
    tmp_path: Path, llm_cache: LLMCache
) -> None:
    one = run(planned(tmp_path, replicates=1), scripted_client(cache=llm_cache), tmp_path)
    two = run(planned(tmp_path), scripted_client(cache=llm_cache), tmp_path)
    assert "replicate" not in one.rows[0]  # a single replicate: rows as before
    assert two.restored == [step.id for step in planned(tmp_path).steps[:8]]
    assert two.executed[0] == "replicate@r2" and two.manifest.cache_hits == 0

    text = diff_runs(one.run_dir, two.run_dir)
    assert "replicates" in text
    changes = json.loads(diff_runs_json(one.run_dir, two.run_dir))
    assert {"key": "replicates", "a": 1, "b": 2} in changes["settings"]
    added = [s["id"] for s in changes["steps"] if s["change"] == "added"]
    assert added[0] == "replicate@r2" and all(replicate_of(i) == 2 for i in added)
    # Replicate 1's steps are neither changed nor rehashed; only the analysis is.
    assert [s["id"] for s in changes["steps"] if s["change"] != "added"] == ["09-analyze"]


@needs_tinytroupe
def test_tinytroupe_replicate_two_starts_from_the_same_people(tmp_path: Path) -> None:
    plan = planned(tmp_path)
    provider = HashProvider()
    result, _ = run_tinytroupe(plan, tmp_path, provider)
    assert_same_people_other_seeds(result, provider.requests)
    # The hash provider's answers are a function of the whole prompt: replicate 2's
    # first answers equal replicate 1's only if each member remembered the same.
    said = {
        (event.step, event.agent): event.content
        for event in result.transcript
        if event.kind == "action" and event.type == "TALK"
    }
    for (step, agent), content in said.items():
        if step == "03-ask-poll":
            assert said[("03-ask-poll@r2", agent)] == content


@needs_tinytroupe
def test_tinytroupe_run_failing_in_replicate_two_resumes_there(tmp_path: Path) -> None:
    plan = planned(tmp_path, replicates=3)
    reference, _ = run_tinytroupe(plan, tmp_path / "reference", HashProvider())

    count = {"seen": 0}

    def fail(request: ChatRequest) -> Exception | None:
        if request.purpose.startswith("act") and "after thinking it over" in str(request.messages):
            count["seen"] += 1
            if count["seen"] == 5:
                return ProviderError("connection reset by peer")
        return None

    cache = LLMCache(tmp_path / "cache.sqlite")
    failed, _ = run_tinytroupe(plan, tmp_path / "resumed", HashProvider(fail=fail), cache=cache)
    assert failed.exit_code == 3
    assert failed.diagnostics[0].message.startswith("step 06-ask-poll@r2 failed")
    resumed, _ = run_tinytroupe(plan, tmp_path / "resumed", HashProvider(), cache=cache)
    assert resumed.exit_code == 0
    assert resumed.executed[0] == "06-ask-poll@r2" and "replicate@r3" in resumed.executed
    assert resumed.rows == reference.rows
    assert [e.to_json() for e in resumed.transcript] == [e.to_json() for e in reference.transcript]


# ------------------------------------------------------------------------- the CLI


def test_tts_run_with_set_and_replicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tts run file.tts --set product="..." --replicates 3`, as the seed's
    `generate_sentiment_scenario(topic, N)` was called."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.tts").write_text(STUDY, encoding="utf-8")
    client = scripted_client()
    monkeypatch.setattr(Session, "_provider", lambda self, plan, options: client.provider)
    result = CliRunner().invoke(
        main,
        ["run", "study.tts", "--set", "product=Oat milk", "--replicates", "3", "--seed", "8", "-q"],
    )
    assert result.exit_code == 0, result.stderr
    run_dir = Path("outputs/study/latest").resolve()
    with (run_dir / "results.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({row["replicate"] for row in rows}) == ["1", "2", "3"] and len(rows) == 12
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["params"]["product"] == "Oat milk" and plan["settings"]["seed"] == 8
    acts = [r for r in sent(client) if r.purpose.startswith("act")]
    assert len(acts) == 4 * 2 * 3  # members, questions, replicates
    assert all("Would you buy Oat milk?" in r.messages[-1].content for r in acts)
    assert not any("VitaBoost" in m.content for r in acts for m in r.messages)

    code = CliRunner().invoke(main, ["plan", "study.tts", "--set", "prodct=x"])
    assert code.exit_code == 2 and "did you mean `product`?" in code.stderr


# ------------------------------------------------------------ the normative example

CAMPAIGN = ROOT / "scenarios" / "v2" / "campaign_sequence.tts"


def campaign_text() -> str:
    """The normative `campaign_sequence.tts`, unchanged."""
    return CAMPAIGN.read_text(encoding="utf-8")


def test_campaign_example_params_and_replicates_run_on_the_builtin_engine(
    tmp_path: Path,
) -> None:
    plan = planned(tmp_path, campaign_text())
    assert plan.settings.replicates == 2 and plan.params == {"product": "VitaBoost"}
    delivered = [s for s in plan.steps if s.kind == "deliver"]
    assert len(delivered) == 4  # two touches, two replicates
    contents = {d.content for step in delivered for d in step.deliveries}
    assert "Still tired? VitaBoost ships tomorrow." in contents
    assert not any("{product}" in content for content in contents)
    # Each touch reaches every target in the arm it got, in both replicates.
    arms = [{d.agent: d.variant for d in step.deliveries} for step in delivered]
    assert arms[0] == arms[1] == arms[2] == arms[3]

    result = run(plan, scripted_client(), tmp_path)
    assert result.exit_code == 0, [d.message for d in result.diagnostics]
    rows = by_replicate(result.rows)
    assert sorted(rows) == [1, 2] and len(rows[1]) == len(rows[2]) == 12
    assert [r["agent"] for r in rows[1]] == [r["agent"] for r in rows[2]]
    assert all(r["intent_first"] is not None and r["intent_final"] is not None for r in result.rows)
    # The analyses run over both replicates' rows: by income (a demographics attribute),
    # by replicate, and the expectations with filters and an aggregate as the bound.
    assert result.analysis is not None
    by_income, per_replicate = result.analysis.summaries
    assert sum(group.n for group in per_replicate.groups) == 24
    assert [group.group for group in per_replicate.groups] == ["1", "2"]
    assert sum(group.n for group in by_income.groups) == 24
    families, versus = result.analysis.expectations
    assert families.n == 2 * 6 and families.passed
    assert versus.bound is not None and versus.reason
    messages = (result.run_dir / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["replicate"] for line in messages} == {1, 2}


def test_a_saved_plan_refuses_other_params_seed_or_replicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.tts").write_text(STUDY, encoding="utf-8")
    saved = CliRunner().invoke(
        main, ["plan", "study.tts", "--set", "product=Tea", "-o", "plan.json"]
    )
    assert saved.exit_code == 0, saved.stderr
    assert json.loads(Path("plan.json").read_text())["params"]["product"] == "Tea"
    for flags, named in (
        (["--set", "product=Coffee"], "--set product"),
        (["--seed", "9"], "--seed"),
        (["--replicates", "3"], "--replicates"),
    ):
        refused = CliRunner().invoke(main, ["run", "plan.json", *flags])
        assert refused.exit_code == 2
        assert f"{named} would change a saved plan" in refused.stderr


def test_report_counts_each_agent_once_and_names_the_replicate(tmp_path: Path) -> None:
    plan = planned(tmp_path, STUDY.replace("formats [csv, json]", "formats [json, md]"))
    result = run(plan, scripted_client(), tmp_path)
    assert result.exit_code == 0
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert "| Agents | 4 |" in report  # 8 rows: 4 agents in 2 replicates
    arms = {r["agent"]: r["variant"] for r in result.rows}
    for arm in ("plain", "control"):
        count = sum(1 for variant in arms.values() if variant == arm)
        assert f"| {arm} | {count} | {count} |" in report
    assert "as a whole (replicate 2, step 08-extract_overall-poll@r2)" in report


PERSONAS_ONLY = """\
scenario pair {
  seed 3
  replicates 2
}

persona ann {
  name "Ann Lee"
  age 30
  occupation "Nurse"
}

persona bob {
  name "Bob Hart"
  age 52
  occupation "Baker"
}

world room {
  mode focus_group
  agents ann, bob
}

timeline {
  ask room "What do you think of {topic}?"
  run room 1 rounds
}

param topic "tea"

extract from room {
  score int 1..5 "How much the person likes it"
}
"""


@pytest.mark.parametrize("engine", ["builtin", "tinytroupe"])
def test_without_people_steps_replicates_start_from_the_set_up_agents(
    tmp_path: Path, engine: str
) -> None:
    plan = planned(tmp_path, PERSONAS_ONLY)
    opening = next(step for step in plan.steps if isinstance(step, ReplicateStep))
    assert opening.after is None and opening.id == "replicate@r2"
    if engine == "builtin":
        client = scripted_client()
        result = run(plan, client, tmp_path)
    else:
        if not tinytroupe_installed():
            pytest.skip(INSTALL_HINT)
        result, _ = run_tinytroupe(plan, tmp_path, HashProvider())
    assert result.exit_code == 0, [d.message for d in result.diagnostics]
    said: dict[str, list[str]] = {}
    for event in result.transcript:
        if event.kind == "action" and event.type == "TALK":
            said.setdefault(event.step, []).append(f"{event.agent}: {event.content}")
    # The same people, remembering nothing of replicate 1: the same first answers.
    assert said["01-ask-room@r2"] == said["01-ask-room"]
    assert [r["replicate"] for r in result.rows] == [1, 1, 2, 2]


def test_every_replicate_starts_from_the_people_unchanged_by_earlier_ones(tmp_path: Path) -> None:
    """Goals and thoughts that replicates 1 and 2 add to the generated people are not
    in the state replicate 3 starts from."""
    text = STUDY.replace("replicates 2", "replicates 3").replace(
        "  deliver offer in poll\n",
        '  goal panel "Find a good {product} deal."\n'
        '  think panel "I am thirsty."\n'
        "  deliver offer in poll\n",
    )
    plan = planned(tmp_path, text)
    client = scripted_client()
    result = run(plan, client, tmp_path)
    assert result.exit_code == 0, [d.message for d in result.diagnostics]
    for member in plan.agents:
        acts = prompts(client, member.id)
        assert len(acts) == 6  # two questions in three replicates
        assert acts[0:2] == acts[2:4] == acts[4:6]
        assert "Find a good VitaBoost deal." in acts[0]


@needs_tinytroupe
def test_tinytroupe_every_replicate_starts_from_the_same_people(tmp_path: Path) -> None:
    text = STUDY.replace("replicates 2", "replicates 3").replace(
        "  deliver offer in poll\n",
        '  goal panel "Find a good {product} deal."\n  deliver offer in poll\n',
    )
    plan = planned(tmp_path, text)
    result, _ = run_tinytroupe(plan, tmp_path, HashProvider())
    assert result.exit_code == 0, [d.message for d in result.diagnostics]
    said: dict[str, list[str]] = {}
    for event in result.transcript:
        if event.kind == "action" and event.type == "TALK":
            said.setdefault(event.step, []).append(f"{event.agent}: {event.content}")
    ask = next(step.id for step in plan.steps if step.kind == "ask")
    assert said[ask] == said[f"{ask}@r2"] == said[f"{ask}@r3"]


def test_session_api_takes_params_seed_and_replicates(tmp_path: Path) -> None:
    path = tmp_path / "study.tts"
    path.write_text(STUDY, encoding="utf-8")
    session = Session(root=tmp_path, state_dir=tmp_path / "state")
    options = RunOptions(params={"product": "Kefir"}, seed=11, replicates=3)
    assert session.check(path, options).program is not None
    plan = session.plan(path, options).plan
    assert plan is not None
    assert (plan.settings.seed, plan.settings.replicates) == (11, 3)
    assert plan.params["pitch"] == "Try Kefir today."
    bad = session.plan(path, RunOptions(params={"produce": "x"}))
    assert bad.plan is None and [d.code for d in bad.diagnostics] == ["E370"]


KILL_DRIVER = """
import sys
from pathlib import Path
from tests.test_runtime import scripted_client
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.interpreter import load_plan
from tiny_dsl.session import Session

work = Path(sys.argv[1])
seen = {"count": 0}

def delay(request):
    # Replicate 1 asks the second question of 4 members; then replicate 2 hangs
    # there, so that the test kills the run in the middle of replicate 2.
    if request.purpose.startswith("act") and "after thinking it over" in str(request.messages):
        seen["count"] += 1
        return 600.0 if seen["count"] > 4 else 0.0
    return 0.0

client = scripted_client(cache=LLMCache(work / "cache.sqlite"), delay=delay)
plan = load_plan(work / "plan.json")
Session(state_dir=work / "state").execute(plan, client, output_dir=work / "out")
"""


def test_a_run_killed_in_replicate_two_resumes_there(tmp_path: Path) -> None:
    plan = planned(tmp_path, replicates=3)
    reference = run(plan, scripted_client(), tmp_path / "reference")
    (tmp_path / "plan.json").write_text(plan.model_dump_json(), encoding="utf-8")
    (tmp_path / "driver.py").write_text(KILL_DRIVER, encoding="utf-8")
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    store = CheckpointStore(tmp_path / "state", plan.settings.scenario)
    last_done = next(s for s in plan.steps if s.id == "05-extract-poll@r2")
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not store.path(last_done.hash).exists():
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the run did not reach replicate 2"
            time.sleep(0.05)
        time.sleep(0.3)  # into 06-ask-poll@r2, whose calls hang
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    client = scripted_client(cache=LLMCache(tmp_path / "cache.sqlite"))
    resumed = run(plan, client, tmp_path)
    assert resumed.exit_code == 0
    assert resumed.restored[-1] == "05-extract-poll@r2"
    assert resumed.executed[0] == "06-ask-poll@r2"
    assert not [r for r in sent(client) if r.purpose.startswith("generate")]
    assert resumed.rows == reference.rows
    assert [e.to_json() for e in resumed.transcript] == [e.to_json() for e in reference.transcript]


@needs_tinytroupe
def test_campaign_example_runs_unchanged_on_tinytroupe(tmp_path: Path) -> None:
    """The normative campaign on `--engine tinytroupe`: both touches reach each target
    in the arm it got, in both replicates, and the analyses read both replicates."""
    plan = planned(tmp_path, campaign_text())
    result, _ = run_tinytroupe(plan, tmp_path, HashProvider())
    assert result.exit_code in (0, 1), [d.message for d in result.diagnostics]
    assert result.manifest is not None and result.manifest.engine == "tinytroupe"
    rows = by_replicate(result.rows)
    assert sorted(rows) == [1, 2] and len(rows[1]) == len(rows[2]) == 12
    assert [r["variant_campaign"] for r in rows[1]] == [r["variant_campaign"] for r in rows[2]]
    heard = [
        (event.step, event.agent, event.content)
        for event in result.transcript
        if event.kind == "stimulus" and "-deliver-" in event.step
    ]
    assignment = plan.interventions[0].assignment
    contents = {
        variant.name: [touch.content for touch in variant.touches]
        for variant in plan.interventions[0].variants
    }
    for _, agent, content in heard:  # framed by its channel: `[email] You receive ...`
        got = [arm for arm, texts in contents.items() if any(t in content for t in texts)]
        assert got == [assignment[agent]]
    assert len({step for step, _, _ in heard}) == 4  # two touches, two replicates
    assert result.analysis is not None
    by_income, per_replicate = result.analysis.summaries
    assert [group.group for group in per_replicate.groups] == ["1", "2"]
    assert sum(group.n for group in by_income.groups) == 24
    assert len(result.analysis.expectations) == 2
