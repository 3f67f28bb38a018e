"""The formatter: fixed points, Black-style cases, and its contract.

The contract is `parse(fmt(x)) == parse(x)` (same meaning), `fmt(fmt(x)) ==
fmt(x)` (idempotent) and every comment kept, in order. The normative
examples and the bundled stdlib must already be in the canonical layout.

Cases live in `tests/cases/fmt/NAME.tts`: the input above a line `# output`,
the expected text below it; a file without the marker must come out
unchanged. `TTS_UPDATE_GOLDENS=1 pytest` rewrites the expected parts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, SCENARIOS, UPDATE_GOLDENS
from tiny_dsl.source import SourceFile
from tiny_dsl.syntax import ast, parse
from tiny_dsl.syntax.formatter import format_module, format_source

STDLIB = sorted((ROOT / "stdlib").glob("**/*.tts"))
CASES = sorted((ROOT / "tests" / "cases" / "fmt").glob("*.tts"))
MARKER = "# output"


def fmt(text: str, path: str = "case.tts") -> str:
    formatted, problems = format_source(SourceFile(path, text))
    assert problems == [], problems
    assert formatted is not None
    return formatted


def meaning(text: str) -> ast.Module:
    module, problems = parse(SourceFile("case.tts", text))
    assert problems == []
    return module


def comments(text: str) -> list[str]:
    return [c.text for c in meaning(text).comments]


def assert_contract(original: str, formatted: str) -> None:
    """Same tree, same comments in the same order, and a fixed point."""
    assert meaning(formatted) == meaning(original)
    assert comments(formatted) == comments(original)
    assert fmt(formatted) == formatted


def split_case(text: str) -> tuple[str, str | None]:
    """(input, expected) of a case file; expected is None without a marker."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.rstrip("\r\n") == MARKER:
            return "".join(lines[:index]), "".join(lines[index + 1 :])
    return text, None


# ------------------------------------------------------------------ fixed points


@pytest.mark.parametrize("path", SCENARIOS + STDLIB, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_and_stdlib_are_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    formatted = fmt(text, path.name)
    assert formatted == text, f"{path} is not in the canonical layout (run `tts fmt {path}`)"
    assert_contract(text, formatted)


@pytest.mark.parametrize("path", SCENARIOS + STDLIB, ids=lambda p: str(p.relative_to(ROOT)))
def test_layout_is_restored(path: Path) -> None:
    """Indentation lost, blank lines doubled, CRLF, no final newline: all undone."""
    text = path.read_text(encoding="utf-8")
    if '"""' in text:
        pytest.skip("re-indenting would change the text of a triple-quoted string")
    messy = "\r\n".join(_squash(line) or "\n\t " for line in text.splitlines())
    assert fmt(messy.rstrip()) == text


def _squash(line: str) -> str:
    """The line without indentation and with single spaces before any string or comment."""
    head, quote, tail = line.strip().partition('"')
    if "#" not in head:
        head = re.sub(" +", " ", head)
    return head + quote + tail


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_tree_alone_prints_the_same_code(path: Path) -> None:
    """Without a source, the tree prints as the example does, less its comments."""
    text = path.read_text(encoding="utf-8")
    module = meaning(text)
    printed = format_module(module)
    assert meaning(printed) == module
    without_comments = re.sub(r"(?m)^#.*\n", "", text).lstrip("\n")
    assert printed == without_comments


# ------------------------------------------------------------------------ cases


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    source, expected = split_case(text)
    formatted = fmt(source, path.name)
    if UPDATE_GOLDENS and formatted != (source if expected is None else expected):
        path.write_text(f"{source}{MARKER}\n{formatted}", encoding="utf-8")
        return
    assert formatted == (source if expected is None else expected), (
        f"{path} differs; if the change is intended, run TTS_UPDATE_GOLDENS=1 pytest"
    )
    assert_contract(source, formatted)


def test_cases_exist() -> None:
    assert len(CASES) >= 10


# ---------------------------------------------------------------- edge behaviour


def test_missing_final_newline_is_added() -> None:
    assert fmt("output {\n  formats [csv]\n}") == "output {\n  formats [csv]\n}\n"
    assert fmt("# only a comment") == "# only a comment\n"


def test_empty_and_blank_files_stay_empty() -> None:
    assert fmt("") == ""
    assert fmt("\n\n  \n") == ""


def test_syntax_error_gives_diagnostics_and_no_output() -> None:
    text = "scenario s {\n  seed = 42\n}\n\nworld w {\n  mode survey\n"
    formatted, problems = format_source(SourceFile("broken.tts", text))
    assert formatted is None
    assert [p.code for p in problems] == ["E101", "E103"]
    assert all(p.is_error for p in problems)


def test_trees_built_in_code_are_spelled_from_their_values() -> None:
    """Nodes built by hand have no `raw`; the printer spells their values."""
    values = (
        ast.Str('say "hi"\n\tthen \\ leave\x00\u200b\U0001f600'),
        ast.Number(3),
        ast.Number(-0.5),
        ast.Number(1e16),
        ast.Number(1e-07),
        ast.Percent(20.0),
        ast.Percent(12.5),
        ast.Range(ast.Number(-1), ast.Number(1.5)),
        ast.Money(ast.Number(5.0), "usd"),
        ast.Duration(ast.Number(3), "days"),
    )
    entries = tuple(ast.Property(ast.Ident(f"v{i}"), value) for i, value in enumerate(values))
    module = ast.Module("case.tts", (ast.Scenario(ast.Ident("s"), ast.Block(entries)),))
    printed = format_module(module)
    assert meaning(printed) == module
    assert '  v0 "say \\"hi\\"\\n\\tthen \\\\ leave\\x00\\u200b😀"\n' in printed
    assert "  v3 10000000000000000.0\n" in printed
    assert "  v4 0.0000001\n" in printed
    assert "  v5 20%\n" in printed
    # Floats stay floats and integers stay integers when read back.
    scenario = meaning(printed).declarations[0]
    assert isinstance(scenario, ast.Scenario)
    numbers = [e.value for e in scenario.body.entries if isinstance(e, ast.Property)][1:5]
    assert [type(n.value) for n in numbers if isinstance(n, ast.Number)] == [
        int,
        float,
        float,
        float,
    ]


def test_a_value_the_language_cannot_write_is_refused() -> None:
    scenario = ast.Scenario(
        ast.Ident("s"), ast.Block((ast.Property(ast.Ident("x"), ast.Number(float("inf"))),))
    )
    with pytest.raises(ValueError, match="cannot be written"):
        format_module(ast.Module("case.tts", (scenario,)))


@pytest.mark.parametrize("text", ["world w { wait 3 }\n", "world w {\n  wait 3\n}\n"])
def test_an_entry_on_the_brace_line_reads_as_on_its_own_line(text: str) -> None:
    """Found by the mutation tests: `{ wait 3` used to read `wait` as a name.

    On its own line `wait` is a keyword, so formatting changed the meaning.
    Both layouts are now the same syntax error, and the file is left alone.
    """
    formatted, problems = format_source(SourceFile("case.tts", text))
    assert formatted is None
    assert [p.code for p in problems] == ["E102"]
