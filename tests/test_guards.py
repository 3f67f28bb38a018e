"""Guards before anything is spent: outputs stay in the project, plans stay within limits.

- An output `dir`, or `tts run --output-dir`, outside the working directory and
  the scenario's directory is E205 unless `--allow-outside`.
- `tts plan` warns (W403) and `tts run` refuses to start (E501, E502; exit 2)
  when the plan's estimated calls exceed `max_calls` (10,000 by default) or
  its estimated cost exceeds the budget, unless `--allow-over-budget`.

Runs here never reach a model: they name `gpt-4o-mini` with no API key, so a run
that gets past the guards stops at the missing credentials (also exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import SCENARIOS
from tiny_dsl.checks import check_file
from tiny_dsl.cli import main
from tiny_dsl.diagnostics import CODES
from tiny_dsl.plan import DEFAULT_MAX_CALLS, compile_plan, plan_diagnostics, run_refusals

NO_KEY = "OPENAI_API_KEY"


def scenario(settings: str = "", output: str = "", timeline: str = 'ask desk "Hi?"') -> str:
    return f"""scenario guarded {{
  title "Guarded"
  model "gpt-4o-mini"
{settings}}}

persona ann {{
  name "Ann"
  age 30
  occupation "Clerk"
}}

demographics town {{
  age {{ 18..99 100% }}
}}

population crowd {{
  from town
  size 120
}}

world desk {{
  mode focus_group
  agents ann, crowd
}}

timeline {{
  {timeline}
}}
{output}"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory, the working directory, with no credentials in the environment."""
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    for name in (NO_KEY, "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return directory


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output + result.stderr


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def codes(path: Path, **options: bool) -> list[str]:
    return [d.code for d in check_file(path, **options).diagnostics if d.is_error]


# -------------------------------------------------------------- output paths


@pytest.mark.parametrize(
    ("directory", "inside"),
    [
        ("results/email", True),
        ("./a/../b", True),
        ("../../elsewhere", False),
        ("results/../../..", False),
        ("/tmp/tts-elsewhere", False),
    ],
)
def test_output_dir_must_stay_in_the_project(project: Path, directory: str, inside: bool) -> None:
    path = write(project / "s.tts", scenario(output=f'output {{\n  dir "{directory}"\n}}\n'))
    assert codes(path) == ([] if inside else ["E205"])
    assert codes(path, allow_outside_root=True) == []


def test_an_absolute_dir_inside_the_scenario_directory_is_fine(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        project / "sub" / "s.tts", scenario(output=f'output {{ dir "{project}/sub/out" }}')
    )
    monkeypatch.chdir(project.parent)  # the working directory is not the project now
    assert codes(path) == []


def test_a_symlink_cannot_lead_outputs_out(project: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (project / "link").symlink_to(tmp_path / "outside")
    path = write(project / "s.tts", scenario(output='output { dir "link/run" }'))
    assert codes(path) == ["E205"]


def test_check_reports_the_output_dir_with_its_location_and_help(project: Path) -> None:
    write(project / "s.tts", scenario(output='output {\n  dir "../../elsewhere"\n}\n'))
    code, text = invoke("check", "s.tts")
    assert code == 2
    assert (
        "s.tts:30:7: error[E205]: output `dir` `../../elsewhere` leads outside the project" in text
    )
    assert "--allow-outside" in text
    assert invoke("check", "--allow-outside", "s.tts")[0] == 0


def test_run_refuses_an_output_dir_flag_outside_the_project(project: Path) -> None:
    write(project / "s.tts", scenario())
    for outside in ("/tmp/tts-elsewhere", "../../x"):
        code, text = invoke("run", "s.tts", "--output-dir", outside, "--state-dir", ".s")
        assert code == 2 and f"error[E205]: --output-dir `{outside}`" in text
    code, text = invoke(
        "run", "s.tts", "--output-dir", "/tmp/tts-elsewhere", "--allow-outside", "--state-dir", ".s"
    )
    assert code == 2 and "E205" not in text and NO_KEY in text  # past the guard
    assert not Path("/tmp/tts-elsewhere").exists()


def test_run_refuses_a_saved_plan_that_writes_outside(project: Path) -> None:
    write(project / "s.tts", scenario(output='output { dir "../../elsewhere" }'))
    assert invoke("plan", "s.tts", "--allow-outside", "-o", "plan.json")[0] == 0
    code, text = invoke("run", "plan.json", "--state-dir", ".s")
    assert code == 2 and "error[E205]: the plan's output `dir` `../../elsewhere`" in text


# ------------------------------------------------------------ resource guard


def test_a_1000_round_typo_is_refused_by_the_check(project: Path) -> None:
    write(project / "s.tts", scenario(timeline="run desk 1000 rounds"))
    code, text = invoke("run", "s.tts", "--state-dir", ".s")
    assert code == 2
    assert "s.tts:27:12: error[E304]: `run` must be from 1 to 100, found 1000" in text
    assert NO_KEY not in text  # refused before the provider is even chosen


def test_a_runaway_plan_is_refused_before_it_spends(project: Path) -> None:
    # 121 agents for 100 rounds: legal, but over the default limit of 10,000 calls.
    write(project / "s.tts", scenario(timeline="run desk 100 rounds"))
    code, text = invoke("plan", "s.tts")
    assert code == 0
    assert "s.tts:27:3: warning[W403]" in text
    assert "over the default limit of 10,000: `tts run` refuses to start" in text
    code, text = invoke("run", "s.tts", "--state-dir", ".s")
    assert code == 2
    assert "s.tts:27:3: error[E501]: refusing to run: the plan makes an estimated 12,2" in text
    assert "more than the default limit of 10,000 calls" in text
    assert "27 |   run desk 100 rounds" in text and "^^^^" in text
    assert "makes 12,100 of the plan's" in text  # the statement that makes the calls
    assert "--allow-over-budget" in text and NO_KEY not in text
    code, text = invoke("run", "s.tts", "--state-dir", ".s", "--allow-over-budget")
    assert code == 2 and "E501" not in text and NO_KEY in text  # past the guard


def test_max_calls_and_budget_are_enforced_and_shown(project: Path) -> None:
    write(
        project / "s.tts",
        scenario(
            "  max_calls 300\n  budget 0.05 usd\n", timeline='ask desk "Hi?"\n  ask desk "And?"'
        ),
    )
    code, text = invoke("plan", "s.tts")
    assert code == 0 and "W403" in text and "W401" in text
    assert "over max_calls of 300" in text
    code, text = invoke("run", "s.tts", "--state-dir", ".s")
    assert code == 2 and "error[E501]" in text and "error[E502]" in text
    assert "more than `max_calls` 300" in text and "max_calls set here" in text
    assert "exceeds the budget of $0.05" in text and "budget set here" in text
    assert "s.tts:30:3: error[E501]" in text  # the second `ask` crosses 300 calls


def test_a_saved_plan_over_its_limits_is_refused(project: Path) -> None:
    write(project / "s.tts", scenario("  max_calls 100\n"))
    assert invoke("plan", "s.tts", "-o", "plan.json")[0] == 0
    code, text = invoke("run", "plan.json", "--state-dir", ".s")
    assert code == 2 and "error[E501]" in text and "the statement at s.tts:" in text


def test_the_limit_is_read_from_the_settings(project: Path) -> None:
    path = write(
        project / "s.tts", scenario("  max_calls 100000\n", timeline="run desk 100 rounds")
    )
    program = check_file(path).require_program()
    plan = compile_plan(program)
    assert plan.estimate.calls > DEFAULT_MAX_CALLS
    assert run_refusals(plan, program) == [] and plan_diagnostics(program, plan) == []
    assert "limit 100,000 (max_calls)" in invoke("plan", "s.tts")[1]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_examples_are_within_their_limits(path: Path) -> None:
    program = check_file(path).require_program()
    plan = compile_plan(program)
    assert plan_diagnostics(program, plan) == [] and run_refusals(plan, program) == []


@pytest.mark.parametrize("code", ["W403", "E501", "E502"])
def test_guard_codes_are_explained(code: str) -> None:
    status, text = invoke("explain", code)
    assert status == 0 and CODES[code].slug in text and "--allow-over-budget" in text


def test_saved_plans_keep_no_default_limit(project: Path) -> None:
    # The default is a guard on the estimate, not a setting: plans and hashes keep `null`.
    write(project / "s.tts", scenario())
    assert invoke("plan", "s.tts", "-o", "plan.json")[0] == 0
    saved = json.loads((project / "plan.json").read_text(encoding="utf-8"))
    assert saved["settings"]["max_calls"] is None
