"""Language v2 extraction on both engines: where each extraction looks, merged rows,
one summary per world, rankings.

Each test asserts what the extraction was shown (the prompts sent), not only that
a step ran: `at CHECKPOINT` sees only what happened up to the checkpoint, a group
source the member's whole memory, a world source only its events there, and
`extract overall` every participant of the world.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_runtime import compile_text, default_reply, run, scripted_client, sent
from tests.test_tinytroupe_engine import HashProvider, needs_tinytroupe
from tests.test_tinytroupe_engine import run as run_tinytroupe
from tiny_dsl.analysis import analyze_plan
from tiny_dsl.extraction import field_schema, validate_value
from tiny_dsl.plan.model import ExtractOverallStep, ExtractStep, FieldPlan
from tiny_dsl.plan.render import render_plan
from tiny_dsl.runtime.providers.base import ChatRequest, validate_json

SCENARIO = """
scenario panel_test {
  title "Panel"
  seed 3
}

persona ann {
  name "Ann"
  age 30
  occupation "Teacher"
}

persona bo {
  name "Bo"
  age 41
  occupation "Nurse"
}

world panel {
  mode focus_group
  agents ann, bo
  context "A product panel."
}

world lobby {
  mode survey
  agents ann, bo
}

timeline {
  ask panel "EARLY QUESTION about features?"
  checkpoint ideas_in
  ask panel "LATE QUESTION about the finalists?"
  ask lobby "LOBBY QUESTION about coffee?"
}

extract from panel at ideas_in {
  first_idea text "The first feature the person proposed"
}

extract from panel {
  ranking rank [summarise, rewrite, translate] "The ranking of the finalists"
}

extract from lobby {
  ranking rank [summarise, rewrite, translate] "The ranking of the finalists"
}

extract from ann, bo {
  overall_mood text
}

extract overall from panel {
  ideas     list of text "Every distinct idea"
  consensus text         "What the panel agreed on"
}

analyze {
  summarize ranking by world
}

output {
  formats [json, csv, md, html]
}
"""

RANKINGS = {
    "ann": ["rewrite", "summarise", "translate"],
    "bo": ["rewrite", "translate", "summarise"],
}


def ranked_reply(request: ChatRequest, who: str) -> dict[str, Any]:
    """The default answers, with a full ranking per agent for `rank` fields."""
    values = default_reply(request, who)
    if request.schema_name == "extraction":
        agent = who.split(" ")[-1]
        for name, schema in (request.json_schema or {})["properties"].items():
            if schema["anyOf"][0].get("uniqueItems"):
                values[name] = RANKINGS.get(agent, ["summarise", "rewrite", "translate"])
    return values


def extraction_prompts(requests: list[ChatRequest], purpose: str) -> list[str]:
    return ["\n".join(m.content for m in r.messages) for r in requests if r.purpose == purpose]


def test_the_plan_places_each_extraction(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path / "panel.tts")
    kinds = [(step.kind, getattr(step, "at", None)) for step in plan.steps]
    checkpoint = kinds.index(("checkpoint", None))
    # Right after the checkpoint: the extraction `at` it, before the later questions.
    assert kinds[checkpoint + 1] == ("extract", "ideas_in")
    assert [kind for kind, _ in kinds[checkpoint + 2 :]] == [
        "ask",
        "ask",
        "extract",
        "extract",
        "extract",
        "extract_overall",
        "analyze",
    ]
    group = next(s for s in plan.steps if isinstance(s, ExtractStep) and s.world is None)
    assert group.group == ["ann", "bo"] and group.agents == ["ann", "bo"]
    overall = next(s for s in plan.steps if isinstance(s, ExtractOverallStep))
    assert overall.calls == 1 and overall.agents == ["ann", "bo"]
    assert sum(step.calls for step in plan.steps if step.kind.startswith("extract")) == 2 * 4 + 1


def test_builtin_extractions_see_what_their_source_and_checkpoint_allow(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path / "panel.tts")
    client = scripted_client(ranked_reply)
    result = run(plan, client, tmp_path)
    assert result.exit_code == 0, result
    requests = sent(client)
    # The plan's estimate is exact in calls: 3 asks of 2 agents, 4 x 2 rows, 1 summary.
    assert client.stats.model_calls == plan.estimate.calls == 6 + 8 + 1
    # Four row extractions per agent, in step order, and one for the world.
    first, panel_rank, lobby_rank, group = extraction_prompts(requests, "extract ann")
    assert "EARLY QUESTION" in first and "LATE QUESTION" not in first
    assert "LATE QUESTION" in panel_rank and "LOBBY QUESTION" not in panel_rank
    assert "LOBBY QUESTION" in lobby_rank and "EARLY QUESTION" not in lobby_rank
    assert all(q in group for q in ("EARLY QUESTION", "LATE QUESTION", "LOBBY QUESTION"))
    (overall,) = extraction_prompts(requests, "extract overall panel")
    assert "## Ann" in overall and "## Bo" in overall and "LOBBY QUESTION" not in overall
    assert "bo says" in overall and "ann says" in overall  # both participants' words
    # Extraction only reads: nobody hears or remembers it.
    extract_steps = {s.id for s in plan.steps if s.kind.startswith("extract")}
    assert not [event for event in result.transcript if event.step in extract_steps]

    # One row per agent and world; the two panel blocks fill the same row.
    rows = {(row["agent"], row["world"]): row for row in result.rows}
    assert set(rows) == {(a, w) for a in ("ann", "bo") for w in ("panel", "lobby", None)}
    assert rows[("ann", "panel")]["first_idea"] == "text of ann"
    assert rows[("ann", "panel")]["ranking"] == RANKINGS["ann"]
    assert rows[("ann", None)]["overall_mood"] == "text of ann"
    assert "first_idea" not in rows[("ann", "lobby")]

    run_dir = result.run_dir
    assert run_dir is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == [
        {
            "world": "panel",
            "step": next(s.id for s in plan.steps if s.kind == "extract_overall"),
            "ideas": ["theme of overall panel"],
            "consensus": "text of overall panel",
            "_missing": {},
        }
    ]
    assert "summary.json" in result.manifest.files
    with (run_dir / "results.csv").open() as handle:
        cells = {(r["agent"], r["world"]): r["ranking"] for r in csv.DictReader(handle)}
    assert cells[("ann", "panel")] == "rewrite | summarise | translate"
    report = (run_dir / "report.md").read_text()
    summary_section = report.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "World `panel` as a whole" in summary_section
    assert "text of overall panel" in summary_section
    assert "Ranking `ranking`" in report and "Borda" in report
    assert "World `panel` as a whole" in (run_dir / "report.html").read_text()


def test_a_world_summary_reads_the_situation_as_a_context_step_left_it(tmp_path: Path) -> None:
    changed = SCENARIO.replace(
        '  ask lobby "LOBBY QUESTION about coffee?"\n',
        '  ask lobby "LOBBY QUESTION about coffee?"\n  context panel "THE FINALISTS ARE SHOWN."\n',
    )
    plan = compile_text(changed, tmp_path / "panel.tts")
    client = scripted_client(ranked_reply)
    assert run(plan, client, tmp_path).exit_code == 0
    (overall,) = extraction_prompts(sent(client), "extract overall panel")
    assert "THE FINALISTS ARE SHOWN." in overall and "A product panel." not in overall


def test_rankings_give_first_choices_mean_ranks_and_borda(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path / "panel.tts")
    rows = [
        {"agent": a, "world": "panel", "ranking": RANKINGS[a], "_missing": {}} for a in RANKINGS
    ]
    analysis = analyze_plan(plan, rows)
    (summary,) = analysis.summaries
    assert summary.overall is not None
    stats = {ranked.member: ranked for ranked in summary.overall.ranks}
    # Both put `rewrite` first; `summarise` is 2nd and 3rd, `translate` 3rd and 2nd.
    assert summary.overall.ranks[0].member == "rewrite"
    assert (stats["rewrite"].first, stats["rewrite"].first_share) == (2, 1.0)
    assert stats["rewrite"].mean_rank == 1.0 and stats["rewrite"].borda == 4
    assert stats["summarise"].mean_rank == 2.5 and stats["summarise"].borda == 1
    assert stats["translate"].first_share == 0.0 and stats["translate"].borda == 1
    field = next(item for item in analysis.fields if item.name == "ranking")
    assert field.kind == "rank" and field.ranks == summary.overall.ranks


def test_a_ranking_must_name_every_member_once() -> None:
    field = FieldPlan(name="r", kind="rank", members=["a", "b", "c"])
    schema = field_schema(field)
    assert validate_json(["b", "a", "c"], schema) == []
    assert validate_json(["a", "a", "c"], schema)  # repeated: the client repairs it
    assert validate_json(["a", "b"], schema)
    assert validate_value(field, ["c", "b", "a"]) == (["c", "b", "a"], None)
    value, reason = validate_value(field, ["a", "b"])
    assert value is None and reason == "not a ranking of all of a, b, c: it leaves out c"
    value, reason = validate_value(field, ["a", "a", "b"])
    assert value is None and reason is not None and "leaves out c" in reason
    assert validate_value(field, ["a", "b", "d"])[1] == '"d" is not one of a, b, c'


def test_an_invalid_ranking_is_repaired(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path / "panel.tts")
    attempts: dict[str, int] = {}

    def repeat_once(request: ChatRequest, who: str) -> dict[str, Any]:
        values = ranked_reply(request, who)
        if "ranking" in values:
            attempts[request.purpose] = attempts.get(request.purpose, 0) + 1
            if attempts[request.purpose] == 1:
                values["ranking"] = ["rewrite", "rewrite", "translate"]
        return values

    client = scripted_client(repeat_once)
    result = run(plan, client, tmp_path)
    assert client.stats.repairs >= 2
    ranked = [row["ranking"] for row in result.rows if "ranking" in row]
    assert ranked and all(sorted(r) == ["rewrite", "summarise", "translate"] for r in ranked)


@needs_tinytroupe
def test_tinytroupe_extractions_see_what_their_checkpoint_allows(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path / "panel.tts")

    def full_ranking(data: dict[str, Any]) -> dict[str, Any]:
        if "ranking" in data:
            data = {**data, "ranking": ["translate", "rewrite", "summarise"]}
        return data

    provider = HashProvider(extraction=full_ranking)
    result, _ = run_tinytroupe(plan, tmp_path, provider)
    assert result.exit_code == 0, result
    first, panel_rank, lobby_rank, group = extraction_prompts(provider.requests, "extract ann")
    assert "EARLY QUESTION" in first and "LATE QUESTION" not in first
    assert "LATE QUESTION" in panel_rank and "LOBBY QUESTION" in lobby_rank
    assert all(q in group for q in ("EARLY QUESTION", "LATE QUESTION", "LOBBY QUESTION"))
    (overall,) = extraction_prompts(provider.requests, "extract overall panel")
    # TinyTroupe's own world rendering, one history per participant of the world.
    assert "Interactions from the point of view of Ann agent" in overall
    assert "Interactions from the point of view of Bo agent" in overall
    assert "environment called panel" in overall
    extract_steps = {s.id for s in plan.steps if s.kind.startswith("extract")}
    assert not [event for event in result.transcript if event.step in extract_steps]
    rows = {(row["agent"], row["world"]): row for row in result.rows}
    assert set(rows) == {(a, w) for a in ("ann", "bo") for w in ("panel", "lobby", None)}
    assert rows[("bo", "panel")]["ranking"] == ["translate", "rewrite", "summarise"]
    assert rows[("bo", "panel")]["first_idea"] is not None
    assert result.run_dir is not None
    (record,) = json.loads((result.run_dir / "summary.json").read_text())
    assert record["world"] == "panel" and record["consensus"] and record["_missing"] == {}
    assert "World `panel` as a whole" in (result.run_dir / "report.md").read_text()


def test_the_text_plan_says_what_each_extraction_reads(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path / "panel.tts")
    text = render_plan(plan)
    assert "extract from 2 agents in panel at ideas_in" in text
    assert "extract from 2 agents of ann, bo (whole memory)" in text
    assert "extract overall from panel (1 record)" in text


@pytest.mark.parametrize(
    "source",
    ["extract from panel at ideas_in {", "extract overall from panel {", "extract from ann, bo {"],
)
def test_step_labels_name_the_source(tmp_path: Path, source: str) -> None:
    from tiny_dsl.runtime.outputs import step_label

    plan = compile_text(SCENARIO, tmp_path / "panel.tts")
    labels = [step_label(step) for step in plan.steps]
    assert source.removesuffix(" {") in labels
