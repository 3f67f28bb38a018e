"""Huge and deeply nested inputs fail cleanly: a diagnostic, never a traceback or a hang.

Limits (docs/language.md, "Limits"): files up to `MAX_SOURCE_BYTES` (E108,
refused before they are read in full) and nesting up to `MAX_NESTING_DEPTH`
brackets, braces and parentheses (E107, in `.tts` and in the JSON files a
scenario reads). Time and memory are asserted only against generous bounds,
since the machine running the tests may be busy; the figures are printed
(`pytest -s`).
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tiny_dsl.checks import CheckResult, check_file, check_source
from tiny_dsl.cli import main
from tiny_dsl.diagnostics import CODES, render_text
from tiny_dsl.source import MAX_SOURCE_BYTES, SourceFile, SourceTooLarge, read_source_text
from tiny_dsl.syntax import parse
from tiny_dsl.syntax.formatter import format_source
from tiny_dsl.syntax.parser import MAX_NESTING_DEPTH, MAX_SYNTAX_ERRORS

DEPTH = 10_000
# Generous: a refused input costs milliseconds and a few megabytes.
SECONDS = 20.0
MEGABYTES = 64

HEAD = """scenario deep { title "Deep" }
persona ann {
  name "Ann"
  age 30
  occupation "Clerk"
"""
TAIL = """}
world desk {
  mode survey
  agents ann
}
timeline {
  ask desk "Hello?"
}
"""


@pytest.fixture(scope="module", autouse=True)
def _grammar_built() -> None:
    """Build the parser once, so that no measurement includes it."""
    parse(SourceFile("warm.tts", "persona p { }\n"))


@contextmanager
def bounded(what: str, *, trace: bool = True) -> Iterator[None]:
    """Fail if the block takes more than SECONDS or MEGABYTES; print both. Tracing
    memory slows allocation-heavy code tenfold: `trace=False` times it alone."""
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else 0.0
        tracemalloc.stop()
    print(f"{what}: {seconds:.3f} s" + (f", peak {peak:.1f} MB traced" if trace else ""))
    assert seconds < SECONDS, f"{what} took {seconds:.1f} s"
    assert peak < MEGABYTES, f"{what} used {peak:.0f} MB"


def codes_of(result: CheckResult) -> list[str]:
    return [d.code for d in result.diagnostics]


def check_text(text: str) -> CheckResult:
    return check_source(SourceFile("deep.tts", text), path=ROOT / "deep.tts")


# ------------------------------------------------------------------ nesting

NESTINGS: dict[str, Callable[[int], str]] = {
    "lists": lambda n: HEAD + "  hobbies " + "[" * n + "]" * n + "\n" + TAIL,
    "blocks": lambda n: HEAD + "  hobbies " + "{ a " * n + "1" + " }" * n + "\n" + TAIL,
    "unclosed lists": lambda n: HEAD + "  hobbies " + "[" * n + "\n" + TAIL,
    "unclosed blocks": lambda n: HEAD + "  hobbies " + "{ a " * n + "\n" + TAIL,
}


@pytest.mark.parametrize("shape", sorted(NESTINGS))
def test_deep_nesting_is_refused_with_a_location_and_help(shape: str) -> None:
    text = NESTINGS[shape](DEPTH)
    with bounded(f"check of {DEPTH:,}-deep {shape}"):
        result = check_text(text)
    deep = [d for d in result.diagnostics if d.code == "E107"]
    assert len(deep) == 1 and result.program is None, codes_of(result)
    (problem,) = deep
    assert problem.primary is not None and problem.help
    assert f"more than {MAX_NESTING_DEPTH}" in problem.message
    rendered = render_text([problem], result.sources)
    assert "deep.tts:" in rendered and "^" in rendered
    assert max(len(line) for line in rendered.splitlines()) < 300  # long lines are windowed


@pytest.mark.parametrize("shape", sorted(NESTINGS))
def test_deep_nesting_is_refused_by_the_formatter(shape: str) -> None:
    formatted, problems = format_source(SourceFile("deep.tts", NESTINGS[shape](DEPTH)))
    assert formatted is None and "E107" in [d.code for d in problems]


def test_nesting_at_the_limit_is_accepted_everywhere() -> None:
    # The persona's `{` is level 1, so the value may open one level fewer.
    text = NESTINGS["lists"](MAX_NESTING_DEPTH - 1)
    result = check_text(text)
    assert "E107" not in codes_of(result) and result.program is not None
    formatted, problems = format_source(SourceFile("deep.tts", text))
    assert formatted is not None and problems == []
    assert "E107" in codes_of(check_text(NESTINGS["lists"](MAX_NESTING_DEPTH)))


def test_parentheses_cannot_nest_at_all() -> None:
    text = "analyze { expect mean" + "(" * DEPTH + "x" + ")" * DEPTH + " > 1 }\n"
    _, problems = parse(SourceFile("deep.tts", text))
    assert [d.code for d in problems] == ["E102"]
    assert problems[0].primary is not None and problems[0].primary.span.column == 23


@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH + 1, DEPTH, 200_000])
def test_deep_json_persona_is_refused(tmp_path: Path, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    spec = '{"type": "TinyPerson", "persona": {"name": "Tom", "x": ' + nested + "}}"
    (tmp_path / "tom.agent.json").write_text(spec, encoding="utf-8")
    (tmp_path / "main.tts").write_text('persona tom from "tom.agent.json"\n', encoding="utf-8")
    with bounded(f"check of a {depth:,}-deep JSON persona"):
        result = check_file(tmp_path / "main.tts")
    assert codes_of(result) == ["E107"]
    assert "tom.agent.json" in result.diagnostics[0].message


# ---------------------------------------------------------------- file size


def _write_text_of(path: Path, size: int) -> None:
    line = 'persona p { name "A persona" }  # filler\n'
    with path.open("w", encoding="utf-8") as stream:
        for _ in range(size // len(line) + 1):
            stream.write(line)


def test_a_50_mb_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.tts"
    _write_text_of(huge, 50 * 2**20)
    with bounded("check of a 50 MB file"):
        result = check_file(huge)
    assert codes_of(result) == ["E108"] and result.program is None
    (problem,) = result.diagnostics
    assert problem.primary is not None and problem.primary.span.origin().endswith(":1:1")
    assert f"{huge.stat().st_size:,} bytes" in problem.message and problem.help
    assert render_text([problem], result.sources).startswith(f"{problem.primary.span.file}:1:1")


def test_fmt_refuses_a_huge_file_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.tts"
    _write_text_of(huge, 50 * 2**20)
    before = huge.read_bytes()[:100]
    result = CliRunner().invoke(main, ["fmt", str(huge)])
    assert result.exit_code == 2 and "error[E108]" in result.stderr
    assert huge.read_bytes()[:100] == before


def test_a_huge_import_is_reported_at_the_import(tmp_path: Path) -> None:
    _write_text_of(tmp_path / "big.tts", MAX_SOURCE_BYTES + 1)
    (tmp_path / "main.tts").write_text('import "big.tts"\n', encoding="utf-8")
    result = check_file(tmp_path / "main.tts")
    assert codes_of(result) == ["E108"]
    primary = result.diagnostics[0].primary
    assert primary is not None and (primary.span.file.endswith("main.tts"), primary.span.line) == (
        True,
        1,
    )


def test_text_past_the_limit_is_refused_by_the_parser() -> None:
    text = "#" + "x" * MAX_SOURCE_BYTES
    module, problems = parse(SourceFile("big.tts", text))
    assert [d.code for d in problems] == ["E108"] and module.declarations == ()
    multibyte = "#" + "é" * (MAX_SOURCE_BYTES // 2)  # fewer characters than bytes
    assert [d.code for d in parse(SourceFile("big.tts", multibyte))[1]] == ["E108"]


def test_the_reader_stops_one_byte_past_the_limit(tmp_path: Path) -> None:
    at_limit = tmp_path / "at.tts"
    at_limit.write_bytes(b"#" + b"x" * (MAX_SOURCE_BYTES - 2) + b"\n")
    assert len(read_source_text(at_limit)) == MAX_SOURCE_BYTES
    over = tmp_path / "over.tts"
    over.write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    with pytest.raises(SourceTooLarge):
        read_source_text(over)
    windows = tmp_path / "crlf.tts"
    windows.write_bytes(b"persona p {\r\n}\r")
    assert read_source_text(windows) == "persona p {\n}\n"  # as text-mode reading gives


# ----------------------------------------------------------- error recovery


def _declarations(count: int, broken: bool) -> str:
    body = '  name "P"\n  age 30\n  occupation "Clerk"\n' + ("  hobbies @\n" if broken else "")
    return "".join(f"persona p{i} {{\n{body}}}\n" for i in range(count))


def test_recovery_is_linear_in_the_file_size() -> None:
    # Before recovery parsed slices of the file, each declaration re-read all the
    # ones above it: these 2,000 declarations took over 20 s; now under one.
    text = "persona @\n" + _declarations(2_000, broken=False)
    with bounded("parse of 2,000 declarations after a syntax error", trace=False):
        module, problems = parse(SourceFile("recover.tts", text))
    assert [d.code for d in problems] == ["E101"] and len(module.declarations) == 2_000
    assert problems[0].primary is not None and problems[0].primary.span.line == 1


def test_recovery_stops_after_too_many_errors() -> None:
    text = _declarations(MAX_SYNTAX_ERRORS + 50, broken=True)
    _, problems = parse(SourceFile("broken.tts", text))
    assert len(problems) == MAX_SYNTAX_ERRORS
    assert f"stopped after {MAX_SYNTAX_ERRORS} syntax errors" in problems[-1].notes[-1]
    lines = [d.primary.span.line for d in problems if d.primary is not None]
    assert lines == [5 + 6 * i for i in range(MAX_SYNTAX_ERRORS)]  # every `hobbies @` line


# ------------------------------------------------------------- saved plans


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[" * DEPTH + "]" * DEPTH, "cannot read the plan: maximum recursion depth"),
        ('{"schema_version": %d, "steps": 3}', "not a plan `tts plan` wrote"),
    ],
    ids=["deep", "wrong shape"],
)
def test_a_broken_saved_plan_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, says: str
) -> None:
    from tiny_dsl.plan import SCHEMA_VERSION

    monkeypatch.chdir(tmp_path)
    Path("plan.json").write_text(content.replace("%d", str(SCHEMA_VERSION)), encoding="utf-8")
    result = CliRunner().invoke(main, ["run", "plan.json", "--state-dir", ".s"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert says in result.stderr and "Traceback" not in result.output + result.stderr


# ------------------------------------------------------- many unknown names


def test_thousands_of_unknown_names_check_in_bounded_time() -> None:
    # Each "did you mean" compared the name with every declared one: 2,000 unknown
    # names among 2,000 personas took over a minute. Now the first ones get a
    # suggestion and the rest a plain help line.
    count = 2_000
    text = "".join(f'persona person{i} {{ name "P" }}\n' for i in range(count))
    text += "world w { mode survey; agents " + ", ".join(f"persn{i}" for i in range(count)) + " }\n"
    with bounded(f"check of {count:,} unknown names among {count:,} personas", trace=False):
        result = check_text(text)
    unknown = [d for d in result.diagnostics if d.code == "E201"]
    assert len(unknown) == count
    assert unknown[0].help[0].startswith("did you mean `person0`")
    assert unknown[-1].help == ("declare it, or import the file that declares it",)


def test_an_unknown_label_lists_a_few_of_many() -> None:
    labels = "; ".join(f"region{i} 1%" for i in range(100))
    text = f"""demographics d {{
  area {{ {labels} }}
}}
population p {{
  from d
  size 10
  segment s {{ size 5; area nowhere }}
}}
"""
    (problem,) = [d for d in check_text(text).diagnostics if d.code == "E315"]
    assert problem.help[0].endswith("(100 in all)")
    assert problem.help[0].count("`") == 2 * 20


# -------------------------------------------------------------------- codes


@pytest.mark.parametrize("code", ["E107", "E108"])
def test_limit_codes_are_explained(code: str) -> None:
    result = CliRunner().invoke(main, ["explain", code])
    assert result.exit_code == 0 and CODES[code].slug in result.output
    assert len(CODES[code].explanation) > 80


def test_limits_are_documented() -> None:
    docs = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    for text in ("E107", "E108", f"{MAX_NESTING_DEPTH} levels", f"{MAX_SOURCE_BYTES:,} bytes"):
        assert text in docs, text


def test_json_depth_counts_without_recursion() -> None:
    from tiny_dsl.checks.loader import json_depth

    value: object = 1
    for _ in range(DEPTH):
        value = [value]
    assert json_depth(value) == MAX_NESTING_DEPTH + 1  # counting stops past the limit
    assert json_depth({"a": [1, {"b": []}]}) == 4 and json_depth("text") == 0
    assert json.loads("null") is None and json_depth(None) == 0
