"""The normative examples of language v2 (`scenarios/v2/`, copied unchanged from the
contract's `examples/v2/`): each checks, formats and plans; on the real embedded model
each runs end to end, judged by structure, never by what the small model says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tiny_dsl.cli import main

V2 = ROOT / "scenarios" / "v2"
EXAMPLES = sorted(V2.glob("*.tts"))
CONTRACT = ROOT.parent / "shared" / "spec" / "examples" / "v2"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_checks_formats_and_plans(path: Path, workdir: Path) -> None:
    name = f"scenarios/v2/{path.name}"
    runner = CliRunner()
    checked = runner.invoke(main, ["check", name])
    assert checked.exit_code == 0, checked.output
    assert runner.invoke(main, ["fmt", "--check", name]).exit_code == 0
    planned = runner.invoke(main, ["plan", name, "--json"])
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.stdout)["estimate"]["calls"] > 0


@pytest.mark.skipif(not CONTRACT.is_dir(), reason="the contract is not beside the repository")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_the_contracts_unchanged(path: Path) -> None:
    assert path.read_bytes() == (CONTRACT / path.name).read_bytes()


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.model
def test_brainstorm_runs_on_the_embedded_model(workdir: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(main, ["run", "scenarios/v2/brainstorm.tts", "-q"])
    assert done.exit_code == 0, done.output
    run_dir = (workdir / "outputs" / "brainstorm" / "latest").resolve()
    plan = _read(run_dir / "plan.json")
    manifest = _read(run_dir / "manifest.json")
    # As planned, plus the re-asks of answers that broke their schema (a ranking that is
    # not a permutation is the small model's usual one).
    assert plan["estimate"]["calls"] == 17
    assert manifest["model_calls"] == 17 + manifest["repairs"] + manifest["retries"]
    # Oscar was written by the model from his description and saved as an agent file.
    oscar = _read(run_dir / "personas" / "oscar.agent.json")["persona"]
    assert oscar["name"]
    # Marcos is Tomas's file with two fields changed.
    marcos = _read(run_dir / "personas" / "marcos.agent.json")["persona"]
    assert (marcos["name"], marcos["nationality"]) == ("Marcos Almeida", "Brazilian")
    rows = _read(run_dir / "results.json")
    assert sorted(row["agent"] for row in rows) == ["lisa", "marcos", "oscar"]
    assert all({"first_idea", "ranking"} <= set(row) for row in rows)
    summary = _read(run_dir / "summary.json")
    assert [record["world"] for record in summary] == ["panel"]
    assert {"ideas", "consensus"} <= set(summary[0])
