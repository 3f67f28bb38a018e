"""Property tests: the formatter's contract on generated trees, and robustness.

(a) Trees first: random `ast.Module`s covering every declaration, step, field
    type, analysis and value form are printed, parsed back and compared; the
    printed text is then re-laid-out at random (comments, blank lines,
    indentation, `;`) and must format back to the same tree and comments.
(b) Robustness: generated text and token- and character-level mutations of
    the corpus (`tests/fuzzing.py`, which `benchmarks/bench_fuzz.py` runs
    100,000 times) never make parsing, formatting, checking or planning
    raise; whatever still parses formats under the contract.

`TTS_HYPOTHESIS_PROFILE=thorough` runs many more examples than CI's default,
which is derandomized so that a CI run is reproducible.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from unittest.mock import ANY

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import fuzzing
from tests.conftest import ROOT
from tests.fuzzing import (
    CorpusFile,
    Outcome,
    generated_texts,
    load_corpus,
    mutate_chars,
    mutate_tokens,
    run_pipeline,
    tokenize,
)
from tiny_dsl.source import SourceFile
from tiny_dsl.syntax import ast, parse
from tiny_dsl.syntax.formatter import format_module, format_source

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("TTS_HYPOTHESIS_PROFILE", "ci")
_SCALE = 20 if PROFILE == "thorough" else 1

T = TypeVar("T")


def examples(count: int) -> Callable[[T], T]:
    """Settings for one test: `count` examples in CI, more when thorough."""
    return settings(settings.get_profile(PROFILE), max_examples=count * _SCALE)


PATH = "generated.tts"

# --------------------------------------------------------------- identifiers

_GRAMMAR = (ROOT / "grammar" / "tts.lark").read_text(encoding="utf-8")


def _keywords() -> frozenset[str]:
    """Every word a keyword terminal matches: `"word"` literals and `/word\\b/` patterns."""
    words = set(re.findall(r'"([a-z]+)"', _GRAMMAR))
    for pattern in re.findall(r"/(.*?)\\b/", _GRAMMAR):
        for word in re.findall(r"[a-z]+", pattern):
            words.update({word, word.removesuffix("s")})  # `days?`: day and days
    return frozenset(words)


KEYWORDS = _keywords()

names = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ_"),
    st.text("abcdefghijklmnopqrstuvwxyz_0123456789", max_size=10),
).map(lambda name: name + "_" if name in KEYWORDS else name)
idents = names.map(ast.Ident)
refs = st.lists(names, min_size=1, max_size=3).map(lambda parts: ast.Ref(tuple(parts)))

# ------------------------------------------------------------------- numbers


def _number_value(raw: str) -> int | float:
    return float(raw) if "." in raw else int(raw)


_number_raws = st.from_regex(r"-?[0-9]{1,4}(\.[0-9]{1,3})?", fullmatch=True)
numbers = st.one_of(
    _number_raws.map(lambda raw: ast.Number(_number_value(raw), raw)),
    # Built in code: no `raw`, so the printer spells the value.
    st.integers(-(10**12), 10**12).map(ast.Number),
    st.floats(allow_nan=False, allow_infinity=False).map(ast.Number),
)
percents = st.one_of(
    _number_raws.map(lambda raw: ast.Percent(float(raw), raw + "%")),
    st.floats(-1e6, 1e6).map(ast.Percent),
)
ranges = st.builds(ast.Range, numbers, numbers)
money = st.builds(ast.Money, numbers, st.sampled_from(["usd", "eur", "gbp", "brl", "inr", "jpy"]))
_UNITS = ["minute", "minutes", "hour", "hours", "day", "days", "week", "weeks"]
durations = st.builds(ast.Duration, numbers, st.sampled_from(_UNITS))

# ------------------------------------------------------------------- strings
#
# A string is drawn as pieces, each a character and one way to spell it, so
# that the value and the `raw` lexeme are built together.

_plain = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\')


def _escaped(char: str) -> str:
    return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"


_escapes = st.one_of(
    st.sampled_from([('"', '\\"'), ("\\", "\\\\"), ("\n", "\\n"), ("\t", "\\t")]),
    st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)).map(
        lambda c: (c, _escaped(c))
    ),
)
_short_piece = st.one_of(_plain.map(lambda c: (c, c)), _escapes)
_long_piece = st.one_of(
    _short_piece, st.sampled_from([("\n", "\n"), ('"', '"'), ("\t", "\t"), ("  ", "  ")])
)


def _string(pieces: list[tuple[str, str]], quote: str) -> ast.Str:
    value = "".join(char for char, _ in pieces)
    body = "".join(spelling for _, spelling in pieces)
    return ast.Str(value, quote + body + quote)


def _valid_long(node: ast.Str) -> bool:
    body = node.raw[3:-3]
    return '"""' not in body and not body.endswith('"')


short_strings = st.one_of(
    st.lists(_short_piece, max_size=12).map(lambda pieces: _string(pieces, '"')),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8).map(ast.Str),
)
long_strings = st.lists(_long_piece, max_size=12).map(lambda p: _string(p, '"""'))
strings = st.one_of(short_strings, long_strings.filter(_valid_long))

# -------------------------------------------------------------------- values

scalars = st.one_of(strings, numbers, ranges, percents, money, durations, refs)
values: st.SearchStrategy[ast.Value] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4).map(lambda items: ast.ListValue(tuple(items))),
    max_leaves=6,
)
lists = st.lists(values, max_size=4).map(lambda items: ast.ListValue(tuple(items)))
phrases = st.lists(values, min_size=2, max_size=3).map(lambda items: ast.Phrase(tuple(items)))
seqs = st.lists(st.one_of(values, phrases), min_size=2, max_size=3).map(
    lambda items: ast.Seq(tuple(items))
)
property_values = st.one_of(values, phrases, seqs)
keys: st.SearchStrategy[ast.Key] = st.one_of(idents, short_strings, ranges, numbers)

# -------------------------------------------------------------------- blocks


def _block(entries: st.SearchStrategy[ast.Entry]) -> st.SearchStrategy[ast.Block]:
    return st.lists(entries, max_size=4).map(lambda items: ast.Block(tuple(items)))


properties = st.builds(ast.Property, keys, property_values)
entries: st.SearchStrategy[ast.Entry] = st.recursive(
    properties,
    lambda inner: st.one_of(
        st.builds(ast.SubBlock, keys, _block(inner)),
        st.builds(ast.NamedBlock, keys, idents, _block(inner)),
    ),
    max_leaves=8,
)
blocks = _block(entries)

# ------------------------------------------------------------------ timeline

steps: st.SearchStrategy[ast.Step] = st.one_of(
    st.builds(ast.BroadcastStep, idents, strings),
    st.builds(ast.DeliverStep, idents, idents),
    st.builds(ast.AskStep, idents, strings),
    st.builds(ast.RunStep, idents, numbers, st.sampled_from(["round", "rounds"])),
    st.builds(ast.WaitStep, durations),
    st.builds(
        ast.InterviewStep,
        st.lists(refs, min_size=1, max_size=3).map(tuple),
        idents,
        st.lists(strings, min_size=1, max_size=3).map(tuple),
    ),
    st.builds(ast.ThinkStep, st.lists(refs, min_size=1, max_size=3).map(tuple), strings),
    st.builds(ast.CheckpointStep, idents),
    st.builds(ast.TellStep, st.lists(refs, min_size=1, max_size=3).map(tuple), strings),
    st.builds(
        ast.ConverseStep,
        st.lists(refs, min_size=1, max_size=3).map(tuple),
        idents,
        numbers,
        strings,
        st.sampled_from(["turn", "turns"]),
    ),
    st.builds(ast.GoalStep, st.lists(refs, min_size=1, max_size=3).map(tuple), strings),
    st.builds(ast.ContextStep, idents, strings),
)

# ------------------------------------------------------------------- extract

field_types: st.SearchStrategy[ast.FieldType] = st.one_of(
    st.builds(ast.IntType, st.none() | ranges),
    st.builds(ast.FloatType, st.none() | ranges),
    st.builds(ast.BoolType),
    st.builds(ast.TextType),
    st.builds(ast.EnumType, lists),
    st.builds(ast.ListType),
)
fields = st.builds(ast.Field, idents, field_types, st.none() | strings)

# ------------------------------------------------------------------- analyze

_COMPARATORS = [">=", "<=", ">", "<", "==", "!="]
aggregates = st.one_of(
    st.builds(ast.Aggregate, idents, idents, st.none(), st.none()),
    st.builds(ast.Aggregate, idents, idents, st.sampled_from(_COMPARATORS), values),
)
bounds: st.SearchStrategy[ast.Bound] = st.one_of(numbers, percents)
analyses: st.SearchStrategy[ast.Analysis] = st.one_of(
    st.builds(ast.CompareStmt, idents, idents),
    st.builds(ast.SummarizeStmt, idents, idents),
    st.builds(ast.FunnelStmt, st.lists(idents, min_size=1, max_size=4).map(tuple)),
    st.builds(ast.ExpectBetween, aggregates, bounds, bounds),
    st.builds(ast.ExpectCompare, aggregates, st.sampled_from(_COMPARATORS), bounds),
)

# -------------------------------------------------------------- declarations

paths = short_strings
declarations: st.SearchStrategy[ast.Declaration] = st.one_of(
    st.builds(ast.Scenario, idents, blocks),
    st.builds(ast.Import, paths),
    st.builds(ast.PersonaInline, idents, blocks),
    st.builds(ast.PersonaFile, idents, paths),
    st.builds(ast.FragmentInline, idents, blocks),
    st.builds(ast.FragmentFile, idents, paths),
    st.builds(ast.Demographics, idents, blocks),
    st.builds(ast.Population, idents, blocks),
    st.builds(ast.World, idents, blocks),
    st.builds(ast.Intervention, idents, blocks),
    st.builds(ast.Timeline, st.lists(steps, max_size=5).map(tuple)),
    st.builds(ast.Extract, idents, st.lists(fields, max_size=5).map(tuple)),
    st.builds(ast.Analyze, st.lists(analyses, max_size=5).map(tuple)),
    st.builds(ast.Output, blocks),
)
modules = st.lists(declarations, max_size=6).map(lambda ds: ast.Module(PATH, tuple(ds)))


# ------------------------------------------------------------------- helpers


def parse_ok(text: str) -> ast.Module:
    module, problems = parse(SourceFile(PATH, text))
    assert problems == [], (problems, text)
    return module


def fmt(text: str) -> str:
    formatted, problems = format_source(SourceFile(PATH, text))
    assert formatted is not None, (problems, text)
    return formatted


def comment_texts(module: ast.Module) -> list[str]:
    return [c.text for c in module.comments]


def assert_contract(text: str, module: ast.Module) -> None:
    """`text` parses to `module`; formatting it keeps tree and comments and is stable."""
    formatted = fmt(text)
    again = parse_ok(formatted)
    assert again == module
    assert comment_texts(again) == comment_texts(module)
    assert fmt(formatted) == formatted


def string_lines(module: ast.Module) -> list[tuple[int, int]]:
    """(first, last) source lines of every string written over several lines."""
    found: list[tuple[int, int]] = []

    def walk(node: object) -> None:
        if isinstance(node, tuple):
            for item in node:
                walk(item)
        elif isinstance(node, ast.Str):
            if node.span.end_line > node.span.line:
                found.append((node.span.line, node.span.end_line))
        elif dataclasses.is_dataclass(node):
            for item in dataclasses.fields(node):
                if item.name != "span":
                    walk(getattr(node, item.name))

    walk(module.declarations)
    return found


# ---------------------------------------------------------- (a) trees first


@examples(100)
@given(modules)
def test_generated_tree_prints_parses_back_and_is_stable(module: ast.Module) -> None:
    text = format_module(module)
    assert parse_ok(text) == module
    assert fmt(text) == text


_EDITS = st.fixed_dictionaries(
    {
        "indent": st.sampled_from(["", "", " ", "\t", "      "]),
        "blank": st.sampled_from([0, 0, 0, 1, 2]),
        "comment_above": st.booleans(),
        "comment_after": st.booleans(),
        "join_next": st.sampled_from([False, False, False, True]),
    }
)
_NO_EDIT = {"indent": "", "blank": 0, "comment_above": False, "comment_after": False,
            "join_next": False}  # fmt: skip


def relayout(canonical: str, edits: list[dict]) -> str:
    """The canonical text with comments, blank lines, indentation and `;` added.

    Lines that continue a triple-quoted string are left alone: they are text.
    """
    inside: set[int] = set()
    for first, last in string_lines(parse_ok(canonical)):
        inside.update(range(first + 1, last + 1))
    out: list[str] = []
    join = False
    for number, line in enumerate(canonical.splitlines(), start=1):
        if number in inside:
            out[-1] += "\n" + line
            continue
        edit = edits[number % len(edits)] if edits else _NO_EDIT
        text = edit["indent"] + line.lstrip(" ")
        if join:
            # An entry may follow `{` on its line without a `;`.
            out[-1] += (" " if out[-1].endswith("{") else "; ") + text.lstrip()
        else:
            out.extend([""] * edit["blank"])
            if edit["comment_above"]:
                out.append(f"{edit['indent']}# above {number}")
            out.append(text)
        opens_string = number + 1 in inside
        join = edit["join_next"] and not edit["comment_after"] and not opens_string
        if edit["comment_after"] and not opens_string:
            out[-1] += f"  # after {number}"
    return "\n".join(out) + "\n"


@examples(70)
@given(modules, st.lists(_EDITS, max_size=60))
def test_any_layout_of_a_tree_formats_back_to_it(module: ast.Module, edits: list[dict]) -> None:
    messy = relayout(format_module(module), edits)
    messed = parse_ok(messy)
    assert messed == module
    assert_contract(messy, messed)


# ----------------------------------------------------------- (b) robustness


def _never_raises(text: str) -> None:
    source = SourceFile(PATH, text)
    module, problems = parse(source)
    formatted, format_problems = format_source(source)
    if formatted is None:
        assert format_problems, "no output must come with the reason"
        event("syntax error: not formatted")
        return
    event("parses: formatted")
    assert problems == [] and module.complete
    assert_contract(text, module)


# The mutations and generated text of `benchmarks/bench_fuzz.py`, a few hundred
# times: parsing and formatting keep their contract, and checking and planning
# give diagnostics, never a traceback.
CORPUS = load_corpus()
MUTATIONS = {"tokens": mutate_tokens, "chars": mutate_chars}


def _never_crashes(text: str, path: Path) -> None:
    _never_raises(text)
    outcome = run_pipeline(text, path)
    assert outcome.crash is None, outcome.crash


@examples(300)
@given(generated_texts)
def test_generated_text_never_raises(text: str) -> None:
    _never_crashes(text, ROOT / "scenarios" / PATH)


@examples(150)
@given(
    st.sampled_from(CORPUS),
    st.sampled_from(sorted(MUTATIONS)),
    st.integers(1, 8),
    st.randoms(use_true_random=False),
)
def test_mutated_corpus_never_raises(
    original: CorpusFile, mutation: str, count: int, rng: random.Random
) -> None:
    event(f"{mutation} mutation")
    _never_crashes(MUTATIONS[mutation](original.text, rng, count), original.path)


@examples(40)
@given(
    modules,
    st.sampled_from(sorted(MUTATIONS)),
    st.integers(1, 3),
    st.randoms(use_true_random=False),
)
def test_mutated_generated_files_never_raise(
    module: ast.Module, mutation: str, count: int, rng: random.Random
) -> None:
    _never_crashes(MUTATIONS[mutation](format_module(module), rng, count), ROOT / PATH)


@pytest.mark.parametrize("original", CORPUS, ids=lambda c: c.path.relative_to(ROOT).as_posix())
def test_the_corpus_itself_goes_through_the_pipeline(original: CorpusFile) -> None:
    """Unmutated, every corpus file checks without a crash; the scenarios and the
    fuzz seeds check clean, so their plans are compiled and rendered too."""
    outcome = run_pipeline(original.text, original.path)
    assert outcome.crash is None, outcome.crash
    assert outcome.checked == (original.path.parent.name in ("scenarios", "fuzz"))


def test_fuzz_mutations_are_reproducible_and_tokens_rejoin() -> None:
    original = CORPUS[0]
    assert "".join(tokenize(original.text)) == original.text
    for mutation in MUTATIONS.values():
        first = mutation(original.text, random.Random(3), 5)
        assert first == mutation(original.text, random.Random(3), 5) != original.text


def test_the_fuzz_verdict_tells_a_crash_from_a_diagnostic(monkeypatch: pytest.MonkeyPatch) -> None:
    path = CORPUS[0].path
    assert run_pipeline(CORPUS[0].text, path) == Outcome(ANY, True, None)
    assert run_pipeline("persona {", path).crash is None  # a syntax error is a diagnostic

    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(fuzzing, "check_source", broken)
    crash = run_pipeline(CORPUS[0].text, path).crash
    assert crash is not None and "KeyError: 'boom'" in crash
