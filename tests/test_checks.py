"""The check stage: inline-asserted cases, the corpus, robustness and the checked model.

A case in `tests/cases/check/*.tts` states the diagnostics it expects at the end
of the offending line: `# error: [E201] "did you mean"` (the code, and optionally
a substring of the message, labels, help or notes; `\"` for a quote). Every
diagnostic must be asserted and every assertion matched, in the case file and in
the files it imports (`tests/cases/check/modules/`).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import ROOT, SCENARIOS
from tests.fuzzing import mutate_chars
from tiny_dsl.checks import CheckResult, Overrides, check_file, check_source, codes, loader
from tiny_dsl.checks import model as m
from tiny_dsl.diagnostics import CODES, Diagnostic, DiagnosticError, render_text
from tiny_dsl.resources import stdlib_dir
from tiny_dsl.source import SourceFile
from tiny_dsl.syntax import ast

CASES_DIR = ROOT / "tests" / "cases" / "check"
CASES = sorted(CASES_DIR.glob("*.tts"))
STDLIB = sorted(stdlib_dir().rglob("*.tts"))
ASSERTION = re.compile(r'(error|warning): \[(\w+)\](?: "((?:[^"\\]|\\.)*)")?')
CHECK_CODES = sorted(
    value for name, value in vars(codes).items() if name.isupper() and isinstance(value, str)
)
# Codes whose cases need files a `.tts` case cannot hold (JSON, non-UTF-8), and the
# test below that covers each.
CODES_TESTED_HERE = {
    codes.UNREADABLE_FILE: "test_unreadable_file",
    codes.INVALID_JSON: "test_invalid_json_names_line_and_column",
    codes.INVALID_TINYTROUPE_SPEC: "test_json_that_is_not_a_tinytroupe_spec",
    # `--set NAME=VALUE` is a command-line value: no source line to mark in a case.
    codes.UNKNOWN_PARAM: "test_set_naming_no_param",
}
# Codes whose diagnostics are in JSON files (people and demography files), and the
# test of tests/test_people_files.py that covers each.
_LOADED_ERRORS = "test_segments_vary_empty_sources_and_oversized_samples_are_errors"
_DATABASE = "test_persona_database_with_twenty_mistakes_reports_all_twenty_where_they_are"
CODES_TESTED_IN_PEOPLE_FILES = {
    codes.NOT_FOR_LOADED_POPULATION: _LOADED_ERRORS,
    codes.BAD_MEMBER_ID: _DATABASE,
    codes.DUPLICATE_MEMBER: _DATABASE,
    codes.NO_MEMBERS: _LOADED_ERRORS,
    codes.DEMOGRAPHICS_TEXT: "test_tinytroupe_demography_files",
    codes.ADULTS_ONLY: "test_tinytroupe_demography_files",
    codes.DISTRIBUTION_RENAMED: "test_two_keys_with_one_name_the_second_gets_its_path",
}
MUTANTS_PER_EXAMPLE = 300


@dataclass(frozen=True)
class Expected:
    file: str
    line: int
    severity: str
    code: str
    text: str | None

    def matches(self, diagnostic: Diagnostic) -> bool:
        primary = diagnostic.primary
        if primary is None or (primary.span.file, primary.span.line) != (self.file, self.line):
            return False
        if (diagnostic.severity.value, diagnostic.code) != (self.severity, self.code):
            return False
        return self.text is None or self.text in _all_text(diagnostic)

    def __str__(self) -> str:
        quoted = f' "{self.text}"' if self.text is not None else ""
        return f"{self.file}:{self.line}: {self.severity}: [{self.code}]{quoted}"


def _all_text(diagnostic: Diagnostic) -> str:
    labels = [diagnostic.primary, *diagnostic.secondary]
    return "\n".join(
        [
            diagnostic.message,
            *(label.message for label in labels if label),
            *diagnostic.help,
            *diagnostic.notes,
        ]
    )


def expectations(source: SourceFile) -> list[Expected]:
    """The assertions written in a file's comments."""
    found = []
    for number, line in enumerate(source.text.splitlines(), start=1):
        comment = line.find("#")
        if comment == -1:
            continue
        for match in ASSERTION.finditer(line, comment):
            severity, code, text = match.groups()
            if text is not None:
                text = re.sub(r"\\(.)", r"\1", text)
            found.append(Expected(source.path, number, severity, code, text))
    return found


def _show(diagnostic: Diagnostic) -> str:
    where = diagnostic.primary.span.origin() if diagnostic.primary else "<no location>"
    return f"{where}: {diagnostic.severity.value}[{diagnostic.code}]: {diagnostic.message}"


def assert_matches(result: CheckResult) -> None:
    """Every diagnostic asserted in the files of the case, and every assertion met."""
    expected = [
        item
        for path, source in result.sources.items()
        if path.endswith(".tts") and Path(path).resolve().is_relative_to(CASES_DIR)
        for item in expectations(source)
    ]
    unexpected = []
    for diagnostic in result.diagnostics:
        match = next((item for item in expected if item.matches(diagnostic)), None)
        if match is None:
            unexpected.append(_show(diagnostic))
        else:
            expected.remove(match)
    problems = [f"unexpected: {text}" for text in unexpected]
    problems += [f"missing:    {item}" for item in expected]
    assert not problems, "\n" + "\n".join(problems)


# ------------------------------------------------------------------------ cases


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case(path: Path) -> None:
    assert_matches(check_file(path))


def test_every_check_code_has_a_case() -> None:
    asserted = {
        item.code
        for path in CASES_DIR.rglob("*.tts")
        for item in expectations(SourceFile(str(path), path.read_text(encoding="utf-8")))
    }
    for code, test in CODES_TESTED_HERE.items():
        assert callable(globals().get(test)), f"{code}: no test named {test}"
    from tests import test_people_files

    for code, test in CODES_TESTED_IN_PEOPLE_FILES.items():
        assert callable(getattr(test_people_files, test, None)), f"{code}: no test named {test}"
    missing = set(CHECK_CODES) - asserted - set(CODES_TESTED_HERE)
    missing -= set(CODES_TESTED_IN_PEOPLE_FILES)
    assert not missing, f"codes without a case: {sorted(missing)}"


def test_every_check_code_is_registered_with_an_explanation() -> None:
    for code in CHECK_CODES:
        assert code in CODES and len(CODES[code].explanation) > 80, code


# ----------------------------------------------------------------------- corpus


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_examples_check_clean(path: Path) -> None:
    result = check_file(path)
    assert [_show(d) for d in result.diagnostics] == []
    assert result.program is not None


@pytest.mark.parametrize("path", STDLIB, ids=lambda p: p.relative_to(stdlib_dir()).as_posix())
def test_stdlib_checks_clean(path: Path) -> None:
    result = check_file(path)
    assert [_show(d) for d in result.diagnostics] == []
    assert result.program is None  # a library, not a runnable scenario


# ------------------------------------------------------------ files and imports


def _write(directory: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _codes(result: CheckResult) -> list[str]:
    return [d.code for d in result.diagnostics]


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "main.tts": 'persona tom from "tom.agent.json"\n',
            "tom.agent.json": '{"type": "TinyPerson",\n "persona": {"name": "Tom",}}\n',
        },
    )
    result = check_file(tmp_path / "main.tts")
    assert _codes(result) == [codes.INVALID_JSON]
    problem = result.diagnostics[0]
    assert "line 2, column 28" in problem.message
    assert problem.primary is not None and problem.primary.span.line == 1
    assert problem.secondary[0].span.file.endswith("tom.agent.json")
    assert problem.secondary[0].span.line == 2
    assert problem.secondary[0].span.file in result.sources


@pytest.mark.parametrize(
    ("declaration", "content", "expected"),
    [
        ("persona tom from", '{"type": "Fragment", "persona": {}}', "declare it with `fragment"),
        ("fragment f from", '{"type": "TinyPerson", "persona": {"name": "T"}}', "`persona NAME"),
        ("persona tom from", '{"type": "TinyPerson", "persona": {"age": 3}}', '"name"` string'),
        ("persona tom from", '{"type": "TinyPerson"}', 'no `"persona"` object'),
        ("fragment f from", "[1, 2]", "does not hold a JSON object"),
        ("persona tom from", '{"persona": {"name": "T"}}', 'no `"type"`'),
    ],
)
def test_json_that_is_not_a_tinytroupe_spec(
    tmp_path: Path, declaration: str, content: str, expected: str
) -> None:
    _write(tmp_path, {"main.tts": f'{declaration} "x.json"\n', "x.json": content})
    result = check_file(tmp_path / "main.tts")
    assert _codes(result) == [codes.INVALID_TINYTROUPE_SPEC]
    assert expected in _all_text(result.diagnostics[0])


@pytest.mark.parametrize(
    ("declaration", "kind"), [("persona tom from", "agent"), ("fragment f from", "fragment")]
)
def test_invalid_tinytroupe_spec_names_the_kind_expected(
    tmp_path: Path, declaration: str, kind: str
) -> None:
    _write(tmp_path, {"main.tts": f'{declaration} "x.json"\n', "x.json": "{}"})
    problem = check_file(tmp_path / "main.tts").diagnostics[0]
    assert f"`{tmp_path / 'x.json'}` is not a TinyTroupe {kind} specification:" in problem.message
    assert problem.primary is not None and problem.primary.message == (
        "not an agent file" if kind == "agent" else "not a fragment file"
    )


@pytest.mark.parametrize(
    "fragment",
    [
        'fragment traits from "traits.json"',  # a file that is not a fragment file
        "fragment traits { age [1] }",  # a fragment with an error of its own
        "",  # no such fragment
    ],
)
def test_a_fragment_that_cannot_be_merged_adds_no_follow_on_warning(
    tmp_path: Path, fragment: str
) -> None:
    _write(
        tmp_path,
        {
            "main.tts": f"{fragment}\n"
            'scenario s { title "s" }\n'
            'persona lisa { name "Lisa"; fragments [traits] }\n'
            "world w { mode survey; agents lisa }\n"
            'timeline {\n  ask w "Hi?"\n}\n',
            "traits.json": '{"type": "TinyPerson", "persona": {"name": "T", "age": 3}}',
        },
    )
    result = check_file(tmp_path / "main.tts")
    assert [d.severity.value for d in result.diagnostics] == ["error"], [
        _show(d) for d in result.diagnostics
    ]
    assert codes.INCOMPLETE_PERSONA not in _codes(result)


def test_unreadable_file(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "main.tts": 'import "latin1.tts"\npersona tom from "folder"\n',
            "latin1.tts": "persona caf\xe9 { }".encode("latin-1"),
            "folder/x.json": "{}",
        },
    )
    result = check_file(tmp_path / "main.tts")
    assert _codes(result) == [codes.UNREADABLE_FILE, codes.FILE_NOT_FOUND]
    assert "not UTF-8" in result.diagnostics[0].message
    missing = check_file(tmp_path / "nowhere.tts")
    assert _codes(missing) == [codes.FILE_NOT_FOUND] and missing.program is None


def test_set_naming_no_param(tmp_path: Path) -> None:
    _write(tmp_path, {"main.tts": 'param topic "tea"\nparam tone "calm"\n'})
    result = check_file(tmp_path / "main.tts", overrides=Overrides(params={"tpic": "coffee"}))
    assert _codes(result) == [codes.UNKNOWN_PARAM]
    assert result.diagnostics[0].primary is None
    assert result.diagnostics[0].help == (
        "did you mean `topic`?",
        "the scenario's params: `topic`, `tone`",
    )


def test_a_directory_given_as_the_scenario_names_the_scenarios_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, {"study/a.tts": "fragment f { }\n", "study/b.tts": "", "study/c.json": "{}"})
    monkeypatch.chdir(tmp_path)
    result = check_file(Path("study"))
    assert _codes(result) == [codes.UNREADABLE_FILE] and result.program is None
    problem = result.diagnostics[0]
    assert problem.message == "`study` is a directory, not a scenario file"
    assert problem.help == ("name a scenario file in it, such as `study/a.tts`, `study/b.tts`",)
    assert "UTF-8" not in _all_text(problem)
    _write(tmp_path, {"empty/notes.txt": ""})
    assert check_file(Path("empty")).diagnostics[0].help == (
        "it holds no `.tts` file; name a scenario file",
    )


def test_a_missing_scenario_file_suggests_the_near_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, {"study/panel.tts": "fragment f { }\n"})
    monkeypatch.chdir(tmp_path)
    for written in ("study/panel.ts", "study/panle.tts", "stuy/panel.tts"):
        result = check_file(Path(written))
        assert _codes(result) == [codes.FILE_NOT_FOUND]
        assert result.diagnostics[0].message == f"cannot find `{written}`"
        assert result.diagnostics[0].help == ("did you mean `study/panel.tts`?",)


def test_a_failed_import_is_one_error_that_lists_the_names_it_may_declare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(
        tmp_path,
        {
            "main.tts": 'import "stdlib/fragmnets.tts"\n'
            'persona a { name "A"; fragments [health_conscious, time_constrained] }\n'
            'persona b { name "B"; fragments [health_conscious, price_sensitive] }\n'
        },
    )
    result = check_file(Path("main.tts"))
    assert _codes(result) == [codes.FILE_NOT_FOUND]
    problem = result.diagnostics[0]
    assert problem.help == ("did you mean `stdlib/fragments.tts`?",)
    assert problem.notes[-1] == (
        "`health_conscious`, `time_constrained` and `price_sensitive` are used but declared "
        "nowhere (first used at main.tts:2:34); they may be declared in `stdlib/fragmnets.tts`"
    )
    assert result.program is None


def test_import_cycle_shows_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(
        tmp_path,
        {
            "main.tts": 'import "a.tts"\n',
            "a.tts": 'import "b.tts"\n',
            "b.tts": 'import "a.tts"\n',
        },
    )
    result = check_file(Path("main.tts"))
    assert _codes(result) == [codes.IMPORT_CYCLE]
    problem = result.diagnostics[0]
    assert "`a.tts` -> `b.tts` -> `a.tts`" in problem.message
    assert problem.primary is not None and problem.primary.span.file == "b.tts"
    assert [label.span.file for label in problem.secondary] == ["a.tts"]


def test_each_file_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(
        tmp_path,
        {
            "main.tts": 'import "a.tts"\nimport "b.tts"\nimport "./a.tts"\n',
            "a.tts": 'import "shared.tts"\n',
            "b.tts": 'import "shared.tts"\n',
            "shared.tts": 'fragment calm { beliefs ["Calm."] }\n',
        },
    )
    parsed: list[str] = []
    real_parse = loader.parse

    def counting(source: SourceFile) -> tuple[ast.Module, list[Diagnostic]]:
        parsed.append(Path(source.path).name)
        return real_parse(source)

    loader._parse_cached.cache_clear()
    monkeypatch.setattr(loader, "parse", counting)
    result = check_file(tmp_path / "main.tts")
    assert result.diagnostics == []
    assert sorted(parsed) == ["a.tts", "b.tts", "main.tts", "shared.tts"]


def test_outside_root_is_refused_unless_allowed(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "project/main.tts": 'import "../shared.tts"\npersona tom from "../tom.agent.json"\n',
            "shared.tts": 'fragment calm { beliefs ["Calm."] }\n',
            "tom.agent.json": json.dumps({"type": "TinyPerson", "persona": {"name": "Tom"}}),
        },
    )
    refused = check_file(tmp_path / "project" / "main.tts")
    assert _codes(refused) == [codes.PATH_OUTSIDE_ROOT, codes.PATH_OUTSIDE_ROOT]
    assert all("--allow-outside" in d.help[0] for d in refused.diagnostics)
    allowed = check_file(tmp_path / "project" / "main.tts", allow_outside_root=True)
    assert allowed.diagnostics == []


def test_stdlib_prefix_falls_back_to_the_bundled_stdlib(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    _write(library, {"extra/calm.tts": 'fragment calm { beliefs ["Calm."] }\n'})
    _write(tmp_path, {"main.tts": 'import "stdlib/extra/calm.tts"\n'})
    assert check_file(tmp_path / "main.tts", stdlib=library).diagnostics == []
    local = tmp_path / "stdlib" / "extra"
    _write(local, {"calm.tts": "fragment local { }\n"})  # a local file wins over the stdlib
    result = check_file(tmp_path / "main.tts", stdlib=library)
    assert any(path.endswith("stdlib/extra/calm.tts") for path in result.sources)
    assert str(library) not in " ".join(result.sources)


def test_display_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"sub/main.tts": 'import "lib.tts"\n', "sub/lib.tts": "fragment f { }\n"})
    monkeypatch.chdir(tmp_path)
    assert sorted(check_file(Path("sub/main.tts")).sources) == ["sub/lib.tts", "sub/main.tts"]
    monkeypatch.chdir(ROOT)
    outside = check_file(tmp_path / "sub" / "main.tts")
    assert sorted(outside.sources) == [str(tmp_path / "sub" / n) for n in ("lib.tts", "main.tts")]


# ------------------------------------------------------------------ fragments


def test_merge_conflict_is_reported_at_both_sites() -> None:
    result = check_file(CASES_DIR / "merge_conflict.tts")
    conflict = next(d for d in result.diagnostics if "`age` is 30" in d.message)
    assert conflict.primary is not None and conflict.primary.span.line == 26  # the persona's age
    lines = sorted((label.span.line, label.message) for label in conflict.secondary)
    assert lines == [
        (8, "fragment `old` sets it to 70"),  # the fragment's age
        (29, "fragment `old` is merged here"),  # where the persona lists the fragment
    ]
    between_fragments = next(d for d in result.diagnostics if "persona `cid`" in d.message)
    assert sorted(label.span.line for label in between_fragments.secondary) == [8, 21]


def test_fragments_merge_the_tinytroupe_way() -> None:
    source = SourceFile(
        "merge.tts",
        """
scenario s { title "s" }
fragment a {
  interests ["chess", "tea"]
  behaviors ["Walks."]
  personality { traits ["kind"] }
}
persona p {
  name "P"
  age 40
  occupation "Clerk"
  interests ["tea", "go"]
  behaviors { evening ["Reads."] }
  personality { traits ["shy"]; big_five { openness "High." } }
  fragments [a]
}
world w { mode survey; agents p }
timeline { ask w "Hi?" }
""",
    )
    result = check_source(source, path=ROOT / "merge.tts")
    assert result.diagnostics == []
    assert result.program is not None
    persona = result.program.personas["p"]
    assert persona.fragments == ("a",)
    assert persona.spec == {
        "name": "P",
        "age": 40,
        "occupation": "Clerk",
        "preferences": {"interests": ["tea", "go", "chess"]},
        "behaviors": {"evening": ["Reads."], "general": ["Walks."]},
        "personality": {"traits": ["shy", "kind"], "big_five": {"openness": "High."}},
    }
    assert result.program.fragments["a"].spec["preferences"] == {"interests": ["chess", "tea"]}


# ------------------------------------------------------------- checked model


def test_program_of_an_example_is_fully_resolved() -> None:
    result = check_file(ROOT / "scenarios" / "email_ab.tts")
    program = result.require_program()
    assert program.settings.name == "email_campaign_ab"
    assert program.settings.budget_usd == 5.0 and program.settings.max_concurrency == 8
    assert program.settings.engine == "builtin" and program.settings.provider is None
    consumers = program.populations["consumers"]
    assert [(s.name, s.size) for s in consumers.segments] == [
        ("young_professionals", 8),
        ("families", 8),
        ("general", 8),
    ]
    young = consumers.segments[0]
    assert young.constraints[0].attribute == "age"
    assert (young.constraints[0].low, young.constraints[0].high) == (25, 35)
    assert young.fragments == ("health_conscious", "time_constrained")
    inbox = program.worlds["inbox"]
    assert [a.text() for a in inbox.agents] == ["consumers"]
    assert inbox.agents[0].kind == "population"
    assert inbox.start.isoformat() == "2025-03-03T08:00:00"
    campaign = program.interventions["email_campaign"]
    assert campaign.control == pytest.approx(0.2)
    assert (campaign.assign, campaign.stratify_by) == ("stratified", "segment")
    assert [(v.name, v.timing) for v in campaign.variants] == [
        ("emotional", "morning"),
        ("rational", "afternoon"),
    ]
    fields = {f.name: f for f in program.extractions[0].fields}
    assert (fields["purchase_intent"].kind, fields["purchase_intent"].low) == ("int", 1)
    assert fields["sentiment"].members == ("positive", "neutral", "negative")
    assert program.output.formats == ("csv", "json", "html")
    deliver, wait, checkpoint, ask = program.timeline
    assert deliver == m.DeliverStep("email_campaign", "inbox", timedelta(0), deliver.span)
    assert wait == m.WaitStep(86400.0, "1 day", wait.span)
    assert checkpoint == m.CheckpointStep("after_campaign", checkpoint.span)
    assert isinstance(ask, m.AskStep) and ask.world == "inbox"
    assert ask.question.startswith("Would you buy VitaBoost")
    assert [str(step.span.origin()) for step in program.timeline] == [
        f"{program.root}:{line}:3" for line in (54, 55, 56, 57)
    ]
    assert [type(a) for a in program.analyses] == [
        m.CompareAnalysis,
        m.CompareAnalysis,
        m.SummarizeAnalysis,
        m.ExpectAnalysis,
    ]
    expect = program.analyses[-1]
    assert expect == m.ExpectAnalysis(
        m.Aggregate("mean", "purchase_intent"),
        "between",
        "expect mean(purchase_intent) between 1 and 10",
        expect.span,
        low=1.0,
        high=10.0,
    )
    budget = program.settings.budget_span
    assert budget is not None and (budget.line, budget.column) == (9, 3)
    assert program.settings.max_calls_span is None
    assert list(program.sources) == [
        program.root,
        "stdlib/fragments.tts",
        "stdlib/demographics/usa.tts",
    ]


LOWERED = """
scenario s { max_calls 500 }
persona ann { name "Ann" }
persona bo { name "Bo" }
demographics d { age { 18..40 50%; 41..90 50% } }
population folk {
  from d
  size 4
  segment young { size 2; age 18..40 }
}
world hall { mode focus_group; agents folk, ann; moderator bo }
intervention tip { channel email; targets folk; variant v { content "Hi." } }
timeline {
  broadcast hall "Welcome."
  wait 90 minutes
  deliver tip in hall
  run hall 3 rounds
  wait 1.5 days
  ask hall "Why?"
  interview folk.young, ann by bo "One?", "Two?"
  think folk "Hm."
  think ann "Ah."
  deliver tip in hall
  checkpoint end
}
extract from hall {
  mood enum [glad, sad]
  liked bool
  paid bool
  score float 0..1
}
analyze {
  compare mood by tip
  summarize   score   by   segment
  funnel liked, paid
  expect share(mood == "sad") < 25%
  expect share(liked) >= 0.5
  expect share(paid) between 10% and 0.9
}
"""


def test_every_step_kind_and_analysis_is_lowered() -> None:
    """The checker hands later stages typed steps and analyses, not syntax: names
    resolved, numbers read, texts unquoted, the time waited before each delivery."""
    program = check_source(SourceFile("lowered.tts", LOWERED)).require_program()
    steps = program.timeline
    assert all(step.span.file == "lowered.tts" for step in steps)
    assert [(type(step), step.span.line) for step in steps] == [
        (m.BroadcastStep, 14),
        (m.WaitStep, 15),
        (m.DeliverStep, 16),
        (m.RunStep, 17),
        (m.WaitStep, 18),
        (m.AskStep, 19),
        (m.InterviewStep, 20),
        (m.ThinkStep, 21),
        (m.ThinkStep, 22),
        (m.DeliverStep, 23),
        (m.CheckpointStep, 24),
    ]
    broadcast, short, first, run, long, ask, interview, folk, ann, second, end = steps
    assert (broadcast.world, broadcast.text) == ("hall", "Welcome.")
    assert (short.seconds, short.written) == (5400.0, "90 minutes")
    assert (long.seconds, long.written) == (129600.0, "1.5 days")
    assert (first.intervention, first.world, first.elapsed) == ("tip", "hall", timedelta(hours=1.5))
    assert second.elapsed == timedelta(days=1.5, hours=1.5)
    assert (run.world, run.rounds) == ("hall", 3)
    assert (ask.world, ask.question) == ("hall", "Why?")
    assert interview.group == (
        m.GroupRef("segment", "folk", "young"),
        m.GroupRef("persona", "ann"),
    )
    assert (interview.interviewer, interview.questions) == ("bo", ("One?", "Two?"))
    assert (folk.group, folk.text) == ((m.GroupRef("population", "folk"),), "Hm.")
    assert (ann.group, ann.text) == ((m.GroupRef("persona", "ann"),), "Ah.")
    assert end.name == "end"

    compare, summarize, funnel, share_of, share, between = program.analyses
    arms = m.Grouping("tip", None, intervention="tip")
    assert compare == m.CompareAnalysis("mood", "tip", "compare mood by tip", compare.span, arms)
    # the text is the statement as written, whitespace collapsed
    assert summarize == m.SummarizeAnalysis(
        "score",
        "segment",
        "summarize score by segment",
        summarize.span,
        m.Grouping("segment", "segment"),
    )
    assert funnel == m.FunnelAnalysis(("liked", "paid"), "funnel liked, paid", funnel.span)
    assert (share_of.aggregate, share_of.comparator, share_of.bound) == (
        m.Aggregate("share", "mood", "==", "sad"),
        "<",
        0.25,
    )
    assert (share.aggregate, share.comparator, share.bound) == (
        m.Aggregate("share", "liked"),
        ">=",
        0.5,
    )
    assert (between.comparator, between.low, between.high, between.bound) == (
        "between",
        0.1,
        0.9,
        None,
    )
    calls = program.settings.max_calls_span
    assert calls is not None and (calls.line, calls.column) == (2, 14)
    assert program.settings.budget_span is None


def test_defaults_and_segments() -> None:
    source = SourceFile(
        "defaults.tts",
        """
scenario s { }
demographics d {
  gender { female 40%; male 40% }
  age { 18..29 50%; 30..99 50% }
}
population p {
  from d
  size 10
  segment women { size 4; gender female; age 20 }
  segment rest { size 6; gender [male, other] }
}
persona lead { name "Lead"; age 50; occupation "Researcher" }
world w { mode interview; agents p.women, p.rest }
timeline {
  ask w "Hi?"
  interview p.women by lead "Why?", "How?"
}
""",
    )
    result = check_source(source, path=ROOT / "defaults.tts")
    assert result.diagnostics == []
    program = result.require_program()
    settings = program.settings
    assert (settings.title, settings.seed, settings.temperature) == ("s", 0, 0.7)
    assert (settings.max_calls, settings.budget_usd, settings.model) == (None, None, None)
    assert program.output.formats == ("csv", "json") and program.output.dir is None
    assert program.worlds["w"].start.isoformat() == "2025-01-01T09:00:00"
    gender = program.demographics["d"].distributions[0]
    assert [(s.label, round(s.share, 3)) for s in gender.shares] == [
        ("female", 0.4),
        ("male", 0.4),
        ("other", 0.2),
    ]
    assert not gender.is_numeric and program.demographics["d"].distributions[1].is_numeric
    population = program.populations["p"]
    assert [s.name for s in population.segments] == ["women", "rest"]  # no remainder
    assert population.segments[0].constraints[1].low == 20
    assert population.segments[1].constraints[0].labels == ("male", "other")


def test_a_library_checks_clean_but_is_not_runnable() -> None:
    result = check_file(ROOT / "tests" / "cases" / "check" / "modules" / "shared_fragments.tts")
    assert result.ok and result.diagnostics == [] and result.program is None
    with pytest.raises(DiagnosticError) as raised:
        result.require_program()
    assert [d.code for d in raised.value.diagnostics] == [codes.NOT_RUNNABLE]


# ----------------------------------------------------------------- robustness


def _assert_explained(result: CheckResult) -> None:
    """Every diagnostic is a registered code whose labels point into a file that was
    read, and the whole report renders."""
    for diagnostic in result.diagnostics:
        assert diagnostic.code in CODES, _show(diagnostic)
        for label in [diagnostic.primary, *diagnostic.secondary]:
            if label is None:
                continue
            span = label.span
            assert span.file in result.sources, _show(diagnostic)
            assert 0 <= span.start <= span.end <= len(result.sources[span.file].text)
    rendered = render_text(result.diagnostics, result.sources)
    assert all(f"[{d.code}]" in rendered for d in result.diagnostics)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_mutated_examples_give_diagnostics_not_tracebacks(path: Path) -> None:
    rng = random.Random(f"tts-{path.name}")
    text = path.read_text(encoding="utf-8")
    rejected = 0
    for _ in range(MUTANTS_PER_EXAMPLE):
        mutant = mutate_chars(text, rng, rng.randint(1, 3))
        result = check_source(SourceFile(str(path), mutant), path=path)
        _assert_explained(result)
        rejected += not result.ok
    # most mutants are wrong: the check must say so rather than pass them
    assert rejected > MUTANTS_PER_EXAMPLE // 2


def test_arbitrary_text_gives_diagnostics_not_tracebacks() -> None:
    rng = random.Random(7)
    alphabet = 'scenario persona world {}[]()"#.,;:%0123456789 \n\tabcxyz_-=@'
    rejected = 0
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        result = check_source(SourceFile("noise.tts", text), path=ROOT / "noise.tts")
        _assert_explained(result)
        assert result.program is None  # noise is never a runnable scenario
        rejected += not result.ok
    assert rejected > 150


# ---------------------------------------------------------------- performance


def _large_scenario(personas: int) -> str:
    """A valid scenario of about 25 lines per persona, every kind of block included."""
    lines = ['scenario big { title "Big"; seed 1 }', 'import "stdlib/fragments.tts"']
    lines += ["demographics base {", "  age { 18..39 50%; 40..99 50% }", "  gender {"]
    lines += ["    female 50%", "    male 50%", "  }", "}"]
    for i in range(personas):
        lines += [
            f"persona p{i} {{",
            f'  name "Person {i}"',
            f"  age {20 + i % 60}",
            "  occupation {",
            '    title "Engineer"',
            '    organization "ACME"',
            "  }",
            "  personality {",
            '    traits ["curious", "kind"]',
            "  }",
            '  interests ["chess", "tea"]',
            '  beliefs ["Honesty matters."]',
            "  fragments [health_conscious, budget_conscious]",
            "}",
            f"population pop{i} {{",
            "  from base",
            "  size 20",
            "  segment young {",
            "    size 5",
            "    age 20..30",
            "    gender female",
            "  }",
            "}",
            f"world w{i} {{ mode focus_group; agents p{i}, pop{i}.young }}",
            f"intervention iv{i} {{ channel email; targets pop{i}.young; control 20%; "
            'variant a { content "Hi"; timing morning } }',
        ]
    lines.append("timeline {")
    for i in range(personas):
        lines += [f"  deliver iv{i} in w{i}", f'  ask w{i} "Buy?"', f"  run w{i} 2 rounds"]
    lines.append("}")
    for i in range(personas):
        lines += [f"extract from w{i} {{ score{i} int 1..10; liked{i} bool }}"]
    lines.append("analyze {")
    for i in range(personas):
        lines += [f"  compare score{i} by iv{i}", f"  expect share(liked{i}) > 10%"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def test_a_large_scenario_checks_cleanly() -> None:
    """10,000 lines check without a problem (its speed is in benchmarks/bench_check_plan.py)."""
    text = _large_scenario(330)
    assert text.count("\n") >= 10_000
    result = check_source(SourceFile("big.tts", text), path=ROOT / "big.tts")
    assert result.diagnostics == [] and result.program is not None


def test_a_deliver_into_an_unknown_world_is_not_also_never_delivered() -> None:
    text = """\
scenario s { seed 1 }
persona ann { name "Ann"; age 30; occupation "Nurse" }
world poll {
  mode survey
  agents ann
}
intervention promo {
  targets ann
  channel email
  variant a { content "x" }
}
timeline {
  deliver promo in wrld
  ask poll "?"
}
"""
    result = check_source(SourceFile("s.tts", text))
    assert _codes(result) == [codes.UNKNOWN_NAME]
    assert result.diagnostics[0].primary is not None
    assert result.diagnostics[0].primary.span.line == 13
