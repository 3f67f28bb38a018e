"""The parser: golden syntax trees, located syntax errors, and recovery."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.conftest import ROOT, SCENARIOS
from tests.golden import assert_golden
from tiny_dsl.source import SourceFile, Span
from tiny_dsl.syntax import ast, parse

PARSE_CASES = sorted((ROOT / "tests" / "cases" / "parse").glob("*.tts"))


def dump(node: object, indent: int = 0) -> str:
    """An indented dump of a syntax tree, spans as line:col-line:col."""
    pad = "  " * indent
    if isinstance(node, tuple):
        return "".join(dump(item, indent) for item in node)
    if not dataclasses.is_dataclass(node):
        return f"{pad}{node!r}\n"
    span = getattr(node, "span", None)
    where = (
        f" @{span.line}:{span.column}-{span.end_line}:{span.end_column}"
        if isinstance(span, Span)
        else ""
    )
    lines = [f"{pad}{type(node).__name__}{where}\n"]
    for item in dataclasses.fields(node):
        if item.name in ("span", "raw", "path"):
            continue
        value = getattr(node, item.name)
        if isinstance(value, str | int | float | bool) or value is None:
            lines.append(f"{pad}  {item.name}: {value!r}\n")
        else:
            lines.append(f"{pad}  {item.name}:\n{dump(value, indent + 2)}")
    return "".join(lines)


def parse_text(text: str, path: str = "case.tts") -> tuple[ast.Module, list]:
    return parse(SourceFile(path, text))


@pytest.mark.parametrize("path", SCENARIOS + PARSE_CASES, ids=lambda p: p.name)
def test_parse_golden(path: Path) -> None:
    source = SourceFile(path.name, path.read_text(encoding="utf-8"))
    module, problems = parse(source)
    assert problems == []
    golden = ROOT / "tests" / "cases" / "parse" / (path.stem + ".ast")
    assert_golden(dump(module), golden)


def test_every_span_lies_inside_its_parent() -> None:
    for path in SCENARIOS:
        source = SourceFile(path.name, path.read_text(encoding="utf-8"))
        module, _ = parse(source)

        def walk(node: object, parent: Span | None, text: str = source.text) -> None:
            if isinstance(node, tuple):
                for item in node:
                    walk(item, parent)
                return
            if not dataclasses.is_dataclass(node):
                return
            span = getattr(node, "span", None)
            if isinstance(span, Span):
                assert 0 <= span.start <= span.end <= len(text)
                if parent is not None:
                    assert parent.start <= span.start and span.end <= parent.end, node
                parent = span
            for item in dataclasses.fields(node):
                if item.name != "span":
                    walk(getattr(node, item.name), parent)

        walk(module.declarations, None)


def test_values_keep_their_meaning() -> None:
    module, problems = parse_text(
        'scenario s {\n  budget 5.00 usd\n  note """two\nlines"""\n  esc "a\\"b\\n"\n'
        "  share 12.5%\n  span -1..1\n  agents a, b.c\n  assign stratified by segment\n}\n"
        "timeline {\n  wait 3 days\n}\n"
    )
    assert problems == []
    scenario = module.declarations[0]
    assert isinstance(scenario, ast.Scenario)
    values = {
        ast.key_text(e.key): e.value for e in scenario.body.entries if isinstance(e, ast.Property)
    }
    assert values["budget"] == ast.Money(ast.Number(5.0), "usd")
    assert values["note"] == ast.Str("two\nlines")
    assert values["esc"] == ast.Str('a"b\n')
    assert values["share"] == ast.Percent(12.5)
    assert values["span"] == ast.Range(ast.Number(-1), ast.Number(1))
    assert values["agents"] == ast.Seq((ast.Ref(("a",)), ast.Ref(("b", "c"))))
    assert values["assign"] == ast.Phrase(
        (ast.Ref(("stratified",)), ast.Ref(("by",)), ast.Ref(("segment",)))
    )
    timeline = module.declarations[1]
    assert isinstance(timeline, ast.Timeline)
    wait = timeline.steps[0]
    assert isinstance(wait, ast.WaitStep) and wait.duration.seconds == 3 * 86400


def test_keywords_remain_usable_as_names() -> None:
    module, problems = parse_text(
        "population from {\n  from usa\n  size 3\n}\n"
        "extract from w {\n  text text\n  int int 1..2\n}\n"
    )
    assert problems == []
    extract = module.declarations[1]
    assert isinstance(extract, ast.Extract)
    assert [f.name.name for f in extract.fields] == ["text", "int"]


def test_lists_and_comma_lists_may_span_lines() -> None:
    _, problems = parse_text(
        "world w {\n  agents a,\n    b\n  mode survey\n}\n"
        'persona p {\n  likes [\n    "x",\n    "y",\n  ]\n}\n'
    )
    assert problems == []


# (source, code, line, column, words in the message or help)
SYNTAX_ERRORS = [
    ("scenario s {\n  seed = 42\n}\n", "E101", 2, 8, "seed 42"),
    ("scenario s {\n  title 'x'\n}\n", "E101", 2, 9, "double quotes"),
    ('scenario s {\n  title "open\n}\n', "E104", 2, 9, "unterminated"),
    ('scenario s {\n  title "a\\l b"\n}\n', "E104", 2, 9, "invalid escape sequence in string"),
    ('timeline {\n  brodcast w "hi"\n}\n', "E102", 2, 3, "did you mean `broadcast`"),
    ("timeline {\n  ask w\n}\n", "E102", 2, 8, "expected a string after `w`"),
    ("world w {\n  mode survey\n", "E103", 2, 14, "`w` block is never closed"),
    ("wrld w {\n}\n", "E102", 1, 1, "did you mean `world`"),
    ("}\n", "E102", 1, 1, "nothing is open"),
    ("extract from w {\n  x integer\n}\n", "E102", 2, 5, "`int`"),
    ('timeline {\n  ask w "q" "r"\n}\n', "E102", 2, 13, "own line"),
    ("scenario s {\n  seed " + "9" * 5000 + "\n}\n", "E106", 2, 8, "too large"),
]


@pytest.mark.parametrize(("text", "code", "line", "column", "words"), SYNTAX_ERRORS)
def test_syntax_error_is_located_and_explained(
    text: str, code: str, line: int, column: int, words: str
) -> None:
    _, problems = parse_text(text)
    assert problems, "expected a diagnostic"
    first = problems[0]
    assert first.code == code
    assert first.primary is not None
    assert (first.primary.span.line, first.primary.span.column) == (line, column)
    assert words in " ".join([first.message, *first.help]), (first.message, first.help)


def _timeline_problem(step: str) -> tuple[str, str]:
    """The message and the help lines of the one syntax error in a timeline of `step`."""
    _, problems = parse_text(f'timeline {{\n  ask w "q"\n  {step}\n}}\n')
    assert len(problems) == 1, problems
    return problems[0].message, "\n".join(problems[0].help)


@pytest.mark.parametrize(
    ("step", "keyword"),
    [
        ('brodcast panel "hi"', "broadcast"),
        ("delivr offer in panel", "deliver"),
        ('ak panel "q"', "ask"),
        ("rn panel 2 rounds", "run"),
        ("wiat 1 day", "wait"),
        ('intervew panel by lisa "q"', "interview"),
        ('thnik lisa "x"', "think"),
        ("chekpoint first", "checkpoint"),
        ('tel lisa "x"', "tell"),
        ('convrse lisa with mia 2 turns "x"', "converse"),
        ('gaol lisa "x"', "goal"),
        ('contxt panel "x"', "context"),
    ],
)
def test_a_misspelt_timeline_step_gets_did_you_mean(step: str, keyword: str) -> None:
    message, helps = _timeline_problem(step)
    assert "expected a timeline step or `}`" in message
    assert helps == f"did you mean `{keyword}`?"


def test_an_unknown_timeline_step_lists_every_step() -> None:
    message, helps = _timeline_problem('send panel "hi"')
    assert message == "unexpected `send`; expected a timeline step or `}`"
    assert helps == (
        "a timeline step begins with `broadcast`, `deliver`, `ask`, `run`, `wait`, "
        "`interview`, `think`, `checkpoint`, `tell`, `converse`, `goal` or `context`"
    )


@pytest.mark.parametrize(
    ("step", "advice"),
    [
        ("wait 5 years", "for 5 years, write `wait 1825 days`"),
        # Never a conversion the checks refuse: one `wait` is at most 3650 days.
        (
            "wait 20 years",
            "for 20 years (7300 days), write `wait 3650 days` 2 times "
            "(one `wait` is at most 3650 days)",
        ),
        (
            "wait 25 years",
            "for 25 years (9125 days), write `wait 3650 days` 2 times, then `wait 1825 days` "
            "(one `wait` is at most 3650 days)",
        ),
        ("wait 2 months", "for 2 months, write `wait 60 days`"),
        ("wait 90 seconds", "for 90 seconds, write `wait 1.5 minutes`"),
        ("wait 2 dys", "did you mean `days`?"),
        ("wait 1 wek", "did you mean `week`?"),
        ("wait 2 fortnights", "for example: `wait 2 days`"),
    ],
)
def test_a_wait_in_another_unit_names_the_units_wait_takes(step: str, advice: str) -> None:
    message, helps = _timeline_problem(step)
    unit = step.split()[-1]
    assert message == f"unexpected `{unit}`: `wait` takes `minutes`, `hours`, `days` or `weeks`"
    assert helps == advice


def test_a_misspelt_word_gets_did_you_mean_and_no_advice_to_break_the_line() -> None:
    message, helps = _timeline_problem("run panel 2 rouds")
    assert message == "unexpected `rouds`; expected `rounds`"
    assert helps == "did you mean `rounds`?"


def test_one_pass_reports_every_broken_statement_and_declaration() -> None:
    text = (
        "scenario s {\n  seed = 1\n}\n\n"
        'timeline {\n  brodcast w "hi"\n  ask w\n  wait 1 day\n}\n\n'
        "wrld x {\n}\n\n"
        "world ok {\n  mode survey\n}\n"
    )
    module, problems = parse_text(text)
    assert [(p.code, p.primary.span.line) for p in problems if p.primary] == [
        ("E101", 2),
        ("E102", 6),
        ("E102", 7),
        ("E102", 11),
    ]
    names = [type(d).__name__ for d in module.declarations]
    assert "World" in names and "Timeline" in names
    assert not module.complete


def test_comments_are_collected_once() -> None:
    module, _ = parse_text("# top\nscenario s { # trailing\n  seed 1 # more\n}\n")
    assert [c.text for c in module.comments] == ["# top", "# trailing", "# more"]
