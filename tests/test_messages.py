"""The `messages` output: one row per utterance, with its author and a clock that moves."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from tests.test_runtime import run, scripted_client
from tiny_dsl.checks import check_source
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.model import Plan
from tiny_dsl.runtime.messages import REACTION_S, typing_seconds
from tiny_dsl.source import SourceFile

SCENARIO = """\
scenario posts {
  seed 5
}

demographics town {
  age { 20..29 50%; 30..39 50% }
}

population people {
  from town
  size 4
}

world forum {
  mode focus_group
  agents people
  start "2025-03-03 08:00"
}

world poll {
  mode survey
  agents people
  start "2025-03-03 08:00"
}

intervention promo {
  targets people
  channel email
  variant short { content "Buy now." }
}

timeline {
  deliver promo in poll
  broadcast forum "What do you think of the new park?"
  run forum 2 rounds
  ask poll "Would you visit it?"
}

output {
  formats [messages]
}
"""


def _plan() -> Plan:
    return compile_plan(check_source(SourceFile("posts.tts", SCENARIO)).require_program())


def test_messages_are_the_utterances_with_their_authors(tmp_path: Path) -> None:
    plan = _plan()
    outcome = run(plan, scripted_client(), tmp_path)
    rows = [
        json.loads(line) for line in (outcome.run_dir / "messages.jsonl").read_text().splitlines()
    ]
    transcript = [
        json.loads(line) for line in (outcome.run_dir / "transcript.jsonl").read_text().splitlines()
    ]
    said = [
        e
        for e in transcript
        if e["kind"] == "action" and e["type"] in ("TALK", "THINK") and e["content"].strip()
    ]
    assert [row["text"] for row in rows] == [e["content"] for e in said]
    assert rows, "the scripted agents said something"
    assignment = plan.interventions[0].assignment
    members = {agent.id: agent for agent in plan.agents}
    for row in rows:
        assert row["replicate"] == 1
        assert row["kind"] in ("talk", "think")
        assert row["population"] == "people"
        assert row["segment"] == members[row["agent"]].segment
        assert row["variant"] == assignment[row["agent"]] == row["variant_promo"]
        assert row["persona_age"] == members[row["agent"]].attributes["age"]
    with (outcome.run_dir / "messages.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["text"] for r in table] == [r["text"] for r in rows]
    assert list(table[0])[:4] == ["replicate", "world", "step", "time"]
    assert list(table[0])[-1] == "text"


def test_a_discussion_has_a_clock_that_moves_and_a_survey_one_per_respondent(
    tmp_path: Path,
) -> None:
    outcome = run(_plan(), scripted_client(), tmp_path)
    rows = [
        json.loads(line) for line in (outcome.run_dir / "messages.jsonl").read_text().splitlines()
    ]
    forum = [row for row in rows if row["world"] == "forum"]
    times = [datetime.fromisoformat(row["time"]) for row in forum]
    # One clock for the whole discussion: strictly increasing, each utterance later than
    # the previous one by the pause and the typing time of the previous one.
    for before, after, previous in zip(times, times[1:], forum, strict=False):
        assert (after - before).total_seconds() == REACTION_S + typing_seconds(previous["text"])
    assert len(set(times)) == len(times) > 1
    poll = [row for row in rows if row["world"] == "poll"]
    first: dict[str, str] = {}
    for row in poll:
        first.setdefault(row["agent"], row["time"])
    # Survey respondents answer alone: each starts REACTION_S after the question.
    assert set(first.values()) == {"2025-03-03T08:00:08"}


def test_no_messages_files_without_the_format(tmp_path: Path) -> None:
    plan = compile_plan(
        check_source(
            SourceFile("posts.tts", SCENARIO.replace("formats [messages]", "formats [json]"))
        ).require_program()
    )
    outcome = run(plan, scripted_client(), tmp_path)
    assert not (outcome.run_dir / "messages.jsonl").exists()
    assert (
        "messages.jsonl" not in json.loads((outcome.run_dir / "manifest.json").read_text())["files"]
    )
