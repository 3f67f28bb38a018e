"""TinyTroupe's example notebooks written as scenarios (`scenarios/tinytroupe/`).

Each file checks, formats and plans like every example; on the real embedded model
each runs end to end through the `tts` command, and the run is judged by structure:
the statements' effects in the transcript, one result row per agent, the plan's
call count against the calls made. Never by what the 135M-parameter model says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tiny_dsl.cli import main

NOTEBOOKS = sorted((ROOT / "scenarios" / "tinytroupe").glob("*.tts"))
SECRET_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_notebook_names_the_notebook_it_follows() -> None:
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        assert path.read_text(encoding="utf-8").startswith("# After TinyTroupe's notebook ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_checks_formats_and_plans(path: Path, workdir: Path) -> None:
    name = f"scenarios/tinytroupe/{path.name}"
    runner = CliRunner()
    assert runner.invoke(main, ["check", name]).exit_code == 0
    assert runner.invoke(main, ["fmt", "--check", name]).exit_code == 0
    planned = runner.invoke(main, ["plan", name, "--json"])
    assert planned.exit_code == 0
    assert json.loads(planned.stdout)["estimate"]["calls"] > 0


def _run(workdir: Path, name: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "tiny_dsl", "run", f"scenarios/tinytroupe/{name}.tts", "-q"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _run_as_planned(workdir: Path, name: str, calls: int) -> Path:
    """Run notebook `name`; it succeeds with exactly the `calls` its plan estimated, plus
    one per repair of an answer the model got wrong (which no plan can foresee).
    Returns its run folder."""
    finished = _run(workdir, name)
    assert finished.returncode == 0, finished.stderr
    run_dir = (workdir / "outputs" / name / "latest").resolve()
    summary = _read(run_dir / "manifest.json")
    assert _read(run_dir / "plan.json")["estimate"]["calls"] == calls
    assert summary["retries"] == 0
    assert summary["model_calls"] - summary["repairs"] == calls, summary
    return run_dir


@pytest.mark.model
def test_simple_chat_runs_on_the_embedded_model(workdir: Path) -> None:
    run_dir = _run_as_planned(workdir, "simple_chat", 8)
    events = _events(run_dir)
    goals = [e for e in events if e["type"] == "GOAL"]
    # Both hold the room's purpose; only Lisa the goal of getting to know Oscar.
    assert sorted(e["agent"] for e in goals) == ["lisa", "lisa", "oscar"]
    assert all(e["world"] is None for e in goals)
    # In turns: within a round Lisa acts first, and Oscar's turn follows hers.
    acting = [e["agent"] for e in events if e["kind"] == "action" and e["world"] == "chat_room"]
    firsts = list(dict.fromkeys(acting))
    assert firsts == ["lisa", "oscar"]
    rows = _read(run_dir / "results.json")
    assert sorted(row["agent"] for row in rows) == ["lisa", "oscar"]


@pytest.mark.model
def test_product_brainstorming_runs_on_the_embedded_model(workdir: Path) -> None:
    run_dir = _run_as_planned(workdir, "product_brainstorming", 11)
    events = _events(run_dir)
    # The rapporteur is asked outside the panel: only Lisa hears it, in no world.
    told = [e for e in events if e["step"].endswith("-tell-lisa") and e["kind"] == "stimulus"]
    assert [(e["agent"], e["world"]) for e in told] == [("lisa", None)]
    # Everyone in the panel heard the three broadcasts.
    heard = {e["agent"] for e in events if "-broadcast-" in e["step"]}
    assert heard == {"lisa", "oscar", "marcos"}
    rows = _read(run_dir / "results.json")
    assert [(row["agent"], row["world"]) for row in rows] == [("lisa", None)]
    assert "ideas" in rows[0]


@pytest.mark.model
def test_synthetic_data_generation_runs_on_the_embedded_model(workdir: Path) -> None:
    run_dir = _run_as_planned(workdir, "synthetic_data_generation", 8)
    # The two workers were generated from the context alone and saved as agent files.
    saved = sorted((run_dir / "personas" / "workers").glob("*.agent.json"))
    assert len(saved) == 2
    names = {_read(path)["persona"]["name"] for path in saved}
    assert len(names) == 2
    # The corpus: one row per utterance, with its author, as the transcript has them.
    said = [
        e
        for e in _events(run_dir)
        if e["kind"] == "action" and e["type"] in ("TALK", "THINK") and e["content"].strip()
    ]
    lines = (run_dir / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    messages = [json.loads(line) for line in lines]
    assert [(m["agent"], m["text"]) for m in messages] == [(e["agent"], e["content"]) for e in said]
    assert all(m["population"] == "workers" and m["world"] == "some_corp" for m in messages)
    times = [m["time"] for m in messages]
    assert times == sorted(times) and len(set(times)) == len(times)


def _run_to_the_end(workdir: Path, name: str, calls: int) -> Path:
    """Run notebook `name` whose expectations the small model may fail (exit 1): it
    finishes, with the calls its plan estimated plus the re-asks of broken answers."""
    finished = _run(workdir, name)
    assert finished.returncode in (0, 1), finished.stderr
    run_dir = (workdir / "outputs" / name / "latest").resolve()
    manifest = _read(run_dir / "manifest.json")
    assert _read(run_dir / "plan.json")["estimate"]["calls"] == calls
    assert manifest["model_calls"] == calls + manifest["repairs"] + manifest["retries"]
    return run_dir


@pytest.mark.model
def test_creating_and_validating_agents_runs_on_the_embedded_model(workdir: Path) -> None:
    run_dir = _run_to_the_end(workdir, "creating_and_validating_agents", 10)
    # Both people were written by the model from their descriptions and saved.
    for agent in ("banker", "monk"):
        assert _read(run_dir / "personas" / f"{agent}.agent.json")["persona"]["name"]
    # One row per person; the banker's expectations were scored for both of them.
    rows = {row["agent"]: row for row in _read(run_dir / "results.json")}
    assert sorted(rows) == ["banker", "monk"]
    assert "banker_score" in rows["banker"] and "monk_score" not in rows["banker"]
    assert {"monk_score", "banker_score"} <= set(rows["monk"])
    analysis = _read(run_dir / "analysis.json")
    statements = [item["statement"] for item in analysis["expectations"]]
    assert statements == [
        "expect mean(banker_score) for banker >= 0.5",
        "expect mean(monk_score) >= 0.5",
        "expect mean(banker_score) for monk < 0.5",
    ]
    # `for banker` and `for monk` each read one row of the pooled column.
    assert [item["n"] for item in analysis["expectations"]] == [
        int(rows["banker"]["banker_score"] is not None),
        int(rows["monk"]["monk_score"] is not None),
        int(rows["monk"]["banker_score"] is not None),
    ]


@pytest.mark.model
def test_gazpacho_market_research_runs_on_the_embedded_model(workdir: Path) -> None:
    run_dir = _run_to_the_end(workdir, "gazpacho_market_research", 13)
    plan = _read(run_dir / "plan.json")
    rows = _read(run_dir / "results.json")
    assert len(rows) == 4
    # Sampled from TinyTroupe's USA file, adults only, plus the ten `vary` dimensions.
    assert all(row["persona_age"] >= 18 for row in rows)
    dimensions = [v["name"] for v in plan["populations"][0]["vary"]]
    assert len(dimensions) == 10
    for dimension in dimensions:
        assert all(row[f"persona_{dimension}"] for row in rows)
        # the quota: every value the model proposed is held by as many members, give or take one
        counts = Counter(row[f"persona_{dimension}"] for row in rows)
        assert max(counts.values()) - min(counts.values()) <= 1
    analysis = _read(run_dir / "analysis.json")
    (validation,) = analysis["validations"]
    assert validation["real"]["n"] == 50
    assert validation["simulated"]["n"] == sum(row.get("response") is not None for row in rows)
    assert (run_dir / "report.html").read_text(encoding="utf-8").count('id="validation-1"') == 1
