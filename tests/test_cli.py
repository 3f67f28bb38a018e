"""The `tts` command: every subcommand's output and exit code, on real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT, SCENARIOS
from tiny_dsl.cli import main
from tiny_dsl.plan.model import SCHEMA_VERSION


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the scenarios in a scratch working directory (outputs land there)."""
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    monkeypatch.chdir(tmp_path)
    for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_examples_check_format_and_plan(path: Path, workdir: Path) -> None:
    name = f"scenarios/{path.name}"
    assert invoke("check", name)[0] == 0
    assert invoke("fmt", "--check", name)[0] == 0
    code, out, _ = invoke("plan", name)
    assert code == 0
    assert "steps" in out and "total" in out
    code, out, _ = invoke("plan", name, "--json")
    assert code == 0
    steps = json.loads(out)["steps"]
    assert steps and all({"id", "kind", "origin", "hash"} <= step.keys() for step in steps)


def test_check_reports_every_problem_with_location_and_help(workdir: Path) -> None:
    bad = workdir / "bad.tts"
    bad.write_text(
        "scenario s {\n  seed 1\n}\n\nworld w {\n  mode survy\n  agents lsa\n}\n"
        'persona lisa {\n  name "Lisa"\n  age 30\n  occupation "Nurse"\n}\n',
        encoding="utf-8",
    )
    code, _, err = invoke("check", "bad.tts")
    assert code == 2
    assert "bad.tts:6:" in err and "bad.tts:7:" in err
    assert "did you mean `survey`?" in err and "did you mean `lisa`?" in err
    assert "^" in err
    code, out, _ = invoke("check", "--format", "json", "bad.tts")
    assert code == 2
    problems = json.loads(out)
    assert {p["primary"]["line"] for p in problems if p["severity"] == "error"} >= {6, 7}
    assert all(p["code"] and p["help"] for p in problems if p["severity"] == "error")


def test_files_checked_together_report_a_shared_module_once(workdir: Path) -> None:
    (workdir / "lib.tts").write_text(
        'persona ann { name "Ann"; age 40; occupation "Nurse"; hobby "chess" }\n',
        encoding="utf-8",
    )
    for name in ("a.tts", "b.tts"):
        (workdir / name).write_text(
            'import "lib.tts"\nscenario s { title "s" }\nworld w { mode survey; agents ann }\n'
            'timeline {\n  ask w "Hi?"\n}\n',
            encoding="utf-8",
        )
    code, _, err = invoke("check", "a.tts", "b.tts")
    assert code == 0
    assert err.count("warning[W101]") == 1
    assert err.rstrip().endswith("ok: 2 files checked (1 warning)")
    code, out, _ = invoke("check", "--format", "json", "a.tts", "b.tts")
    assert [problem["code"] for problem in json.loads(out)] == ["W101"]


def test_fmt_check_and_rewrite(workdir: Path) -> None:
    messy = workdir / "messy.tts"
    messy.write_text('scenario s {\nseed 1\n    title "t"}\n', encoding="utf-8")
    assert invoke("fmt", "--check", "messy.tts")[0] == 1
    assert invoke("fmt", "messy.tts")[0] == 0
    assert messy.read_text(encoding="utf-8") == 'scenario s {\n  seed 1\n  title "t"\n}\n'
    assert invoke("fmt", "--check", "messy.tts")[0] == 0


def test_fmt_diff_prints_the_changes_and_writes_nothing(workdir: Path) -> None:
    messy = workdir / "messy.tts"
    text = "scenario s {\nseed 1\n}\n"
    messy.write_text(text, encoding="utf-8")
    code, out, err = invoke("fmt", "--diff", "messy.tts")
    assert code == 0
    assert "-seed 1\n+  seed 1\n" in out and "would reformat messy.tts" in err
    assert messy.read_text(encoding="utf-8") == text
    code, out, _ = invoke("fmt", "--diff", "--check", "messy.tts")
    assert code == 1 and "+  seed 1" in out
    assert messy.read_text(encoding="utf-8") == text
    assert invoke("fmt", "--diff", "scenarios/focus_group.tts")[:2] == (0, "")


def test_fmt_of_a_directory_or_a_missing_file_is_a_diagnostic(workdir: Path) -> None:
    code, _, err = invoke("fmt", "scenarios")
    assert code == 2
    assert "error[E210]: `scenarios` is a directory, not a scenario file" in err
    assert "`scenarios/focus_group.tts`" in err
    code, _, err = invoke("fmt", "scenarios/focus_grup.tts")
    assert code == 2
    assert "error[E203]" in err and "did you mean `scenarios/focus_group.tts`" in err


def test_check_names_a_directory_and_the_near_file(workdir: Path) -> None:
    code, _, err = invoke("check", "scenarios/")
    assert code == 2
    assert "`scenarios` is a directory, not a scenario file" in err and "UTF-8" not in err
    code, _, err = invoke("check", "scenarios/focus_group.ts")
    assert code == 2 and "did you mean `scenarios/focus_group.tts`?" in err


def test_plan_saves_json_and_library_files_are_not_runnable(workdir: Path) -> None:
    code, _, _ = invoke("plan", "scenarios/focus_group.tts", "-o", "plan.json")
    assert code == 0
    saved = json.loads((workdir / "plan.json").read_text(encoding="utf-8"))
    assert saved["schema_version"] == SCHEMA_VERSION and saved["source_hash"]
    library = workdir / "lib.tts"
    library.write_text('fragment f {\n  likes ["tea"]\n}\n', encoding="utf-8")
    code, _, err = invoke("plan", "lib.tts")
    assert code == 2 and "scenario" in err


def test_explain_known_and_unknown_codes() -> None:
    code, out, _ = invoke("explain", "E201")
    assert code == 0 and out.startswith("E201")
    code, _, err = invoke("explain", "E20")
    assert code == 2 and "unknown diagnostic code" in err


def test_run_refuses_missing_credentials_before_spending(workdir: Path) -> None:
    code, _, err = invoke("run", "scenarios/email_ab.tts", "--state-dir", ".state")
    assert code == 2
    assert "OPENAI_API_KEY" in err and "--provider embedded" in err
    assert not (workdir / "outputs").exists()


def test_run_failures_are_coded_diagnostics_also_as_json(workdir: Path) -> None:
    code, _, err = invoke("run", "scenarios/email_ab.tts", "--state-dir", ".state")
    assert code == 2 and "error[E511]: the scenario asks for gpt-4o-mini" in err
    # The provider's message says what to do; no help line repeats it.
    assert err.count("--provider embedded") == 1
    code, out, _ = invoke(
        "run", "scenarios/email_ab.tts", "--state-dir", ".state", "--format", "json"
    )
    assert code == 2
    outcome = json.loads(out)
    assert outcome["exit_code"] == 2 and outcome["status"] == "not_started"
    assert [d["code"] for d in outcome["diagnostics"]] == ["E511"]
    code, out, _ = invoke("explain", "E520")
    assert code == 0 and "step-failed" in out


def test_replay_with_nothing_recorded_says_so(workdir: Path) -> None:
    # Regression: blamed "changes since the recorded run", exited 3 and suggested
    # running the same command again.
    code, _, err = invoke(
        "run",
        "scenarios/focus_group.tts",
        "--replay",
        "--provider",
        "embedded",
        "--state-dir",
        ".s",
    )
    assert code == 2
    assert "error[E522]: --replay: the cache holds no recorded run of this scenario" in err
    assert "help: run once without --replay" in err
    assert "changed since" not in err and "same command again" not in err
    assert not (workdir / "outputs").exists()


def test_run_refuses_a_plan_whose_source_changed(workdir: Path) -> None:
    assert invoke("plan", "scenarios/fed_rate_hike.tts", "-o", "plan.json")[0] == 0
    source = workdir / "scenarios" / "fed_rate_hike.tts"
    source.write_text(source.read_text(encoding="utf-8").replace("2 rounds", "1 round"))
    code, _, err = invoke("run", "plan.json")
    assert code == 2 and "earlier version" in err


MINI = """scenario mini {
  seed 1
}

persona ana {
  name "Ana Silva"
  age 30
  occupation "Nurse"
}

world room {
  mode survey
  agents ana
}

timeline {
  ask room "Do you like coffee? Answer in one sentence."
}

extract from room {
  likes_coffee bool "Whether the person likes coffee"
}

output {
  formats [csv, json, md]
}
"""


@pytest.mark.model
def test_run_on_the_embedded_model_then_replay_with_zero_calls(workdir: Path) -> None:
    (workdir / "mini.tts").write_text(MINI, encoding="utf-8")
    code, out, _ = invoke("run", "mini.tts", "--quiet")
    assert code == 0, out
    assert "embedded/SmolLM2-135M-Instruct" in out
    latest = workdir / "outputs" / "mini" / "latest"
    manifest = json.loads((latest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["model_calls"] == 2
    for name in ("plan.json", "transcript.jsonl", "transcript.md", "results.csv", "results.json"):
        assert (latest / name).is_file(), name

    code, out, _ = invoke("run", "mini.tts", "--quiet", "--replay")
    assert code == 0
    manifest = json.loads(
        (workdir / "outputs" / "mini" / "latest" / "manifest.json").read_text(encoding="utf-8")
    )
    assert manifest["model_calls"] == 0
