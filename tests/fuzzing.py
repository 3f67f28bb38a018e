"""Fuzz inputs and the one pipeline they go through, shared by tests and benchmarks.

`tests/test_properties.py` runs a few hundred of these in CI, driven by
hypothesis; `benchmarks/bench_fuzz.py` runs 100,000 from a seed. Both take the
corpus, the mutations and the verdict from here, so that CI exercises exactly
the strategies the long run does.

- The corpus: the example scenarios, every stdlib file, and the fuzz seeds
  (`tests/cases/fuzz/`): valid scenarios of shapes the others lack (a
  demographics without distributions, one-member counts, a population that
  thinks), which mutations of the others seldom reach.
- Token-level mutations: the text is cut into lexer-like tokens (strings,
  numbers, names, brackets, newlines...) which are deleted, duplicated,
  swapped, replaced or joined by tokens from a pool of keywords, punctuation
  and values at the edges of what the checks accept.
- Character-level mutations: single characters deleted, inserted, replaced,
  duplicated or swapped, including control and non-ASCII characters.
- Generated text: hypothesis text over the same token pool, and arbitrary text.

`run_pipeline` parses, checks and, when the check passes, compiles the plan,
computes its warnings and renders the text plan in every form `tts plan`
prints (plain, coloured, with cached steps marked). Diagnostics are the
expected outcome of bad input; any other exception is a crash.
"""

from __future__ import annotations

import random
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from tiny_dsl.checks import check_source
from tiny_dsl.diagnostics import DiagnosticError
from tiny_dsl.plan import compile_plan, plan_diagnostics, render_plan
from tiny_dsl.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
FUZZ_SEEDS = ROOT / "tests" / "cases" / "fuzz"


@dataclass(frozen=True)
class CorpusFile:
    path: Path  # where the text lives, so that its imports and `from` paths resolve
    text: str


def load_corpus() -> list[CorpusFile]:
    """The example scenarios, the stdlib and the fuzz seeds, in a stable order."""
    paths = [
        *sorted((ROOT / "scenarios").glob("*.tts")),
        *sorted((ROOT / "stdlib").rglob("*.tts")),
        *sorted(FUZZ_SEEDS.glob("*.tts")),
    ]
    return [CorpusFile(path, path.read_text(encoding="utf-8")) for path in paths]


# ------------------------------------------------------------------- tokens

# Close to the lexer's terminals, so that a token mutation moves whole words,
# strings and numbers; anything else is one character.
_TOKEN = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""'
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|#[^\n]*"
    r"|-?\d+(?:\.\d+)?%?"
    r"|[A-Za-z_]\w*"
    r"|\.\.|>=|<=|==|!="
    r"|\r?\n"
    r"|[ \t]+"
    r"|.",
    re.DOTALL,
)

# Keywords, punctuation and values at the edges of what the checks accept.
TOKEN_POOL = [
    *"{}[](),;.%-#\"\\",
    "..", "\n", "\r\n", " ", "\t", '"""', "==", "!=", ">=", "<", ">",
    "scenario", "import", "persona", "fragment", "demographics", "population", "world",
    "intervention", "timeline", "extract", "analyze", "output", "from", "segment", "variant",
    "broadcast", "deliver", "in", "ask", "run", "rounds", "round", "wait", "interview", "by",
    "think", "checkpoint", "int", "float", "bool", "text", "enum", "list", "of", "compare",
    "tell", "converse", "with", "turns", "turn", "goal",
    "summarize", "funnel", "expect", "between", "and", "mean", "median", "share", "count",
    "size", "age", "mode", "agents", "targets", "control", "assign", "stratified", "random",
    "survey", "focus_group", "interview", "moderator", "context", "start", "channel", "timing",
    "content", "formats", "dir", "seed", "budget", "max_calls", "max_concurrency", "model",
    "provider", "engine", "temperature", "title", "name", "fragments", "general", "other",
    "usd", "eur", "days", "hours", "minutes", "weeks", "day", "%",
    "0", "1", "-1", "0.0", "-0", "100", "101", "100%", "0%", "-5%", "1.5", "99999999999",
    "9" * 40, "0..0", "5..1", "-1..1", "1..100000", "3650", "36501", "1000000",
    '""', '"x"', '"2025-02-30 25:61"', '"../../etc"', '"/tmp/x"', '"stdlib/fragments.tts"',
    '"\\u00e9"', '"\\x"', "é", "\u200b", "\x00", "\x0c", "\ufeff", "\U0001d4b3",
]  # fmt: skip


def tokenize(text: str) -> list[str]:
    """`text` cut into lexer-like tokens; joining them gives `text` back."""
    return _TOKEN.findall(text)


def mutate_tokens(text: str, rng: random.Random, count: int) -> str:
    """`count` token-level edits: delete, duplicate, swap, replace, insert, move a line."""
    tokens = tokenize(text) or [""]
    for _ in range(count):
        at = rng.randrange(len(tokens))
        operation = rng.choice(("delete", "duplicate", "swap", "replace", "insert", "line"))
        if operation == "delete" and len(tokens) > 1:
            del tokens[at]
        elif operation == "duplicate":
            tokens.insert(at, tokens[at])
        elif operation == "swap" and at + 1 < len(tokens):
            tokens[at], tokens[at + 1] = tokens[at + 1], tokens[at]
        elif operation == "replace":
            tokens[at] = _pick_token(tokens, rng)
        elif operation == "insert":
            tokens.insert(at, _pick_token(tokens, rng))
        else:
            tokens = _move_line(tokens, at, rng)
    return "".join(tokens)


def _pick_token(tokens: list[str], rng: random.Random) -> str:
    """A pool token, or one from the same text (names it declares, strings it has)."""
    return rng.choice(TOKEN_POOL) if rng.random() < 0.6 else rng.choice(tokens)


def _move_line(tokens: list[str], at: int, rng: random.Random) -> list[str]:
    """The line holding token `at` duplicated, dropped or moved elsewhere."""
    lines: list[list[str]] = [[]]
    owner = 0
    for index, token in enumerate(tokens):
        lines[-1].append(token)
        if index == at:
            owner = len(lines) - 1
        if token.endswith("\n"):
            lines.append([])
    line = lines[owner]
    action = rng.choice(("duplicate", "drop", "move"))
    if action == "duplicate":
        lines.insert(owner, list(line))
    elif action == "drop" and len(lines) > 1:
        del lines[owner]
    else:
        del lines[owner]
        lines.insert(rng.randrange(len(lines) + 1), line)
    return [token for tokens_of_line in lines for token in tokens_of_line]


# --------------------------------------------------------------- characters

_ODD_CHARACTERS = '{}[]()"\\#.,;%-_ \t\n\r\x00\x0b\x1b\x7f\u00a0\u2028\u202e\ufeffé€漢😀'


def mutate_chars(text: str, rng: random.Random, count: int) -> str:
    """`count` character-level edits: delete, insert, replace, duplicate, swap."""
    chars = list(text)
    for _ in range(count):
        at = rng.randrange(len(chars) + 1)
        operation = rng.choice(("delete", "insert", "replace", "duplicate", "swap"))
        if at == len(chars) or operation == "insert":
            chars.insert(at, _pick_char(rng))
        elif operation == "delete":
            del chars[at]
        elif operation == "replace":
            chars[at] = _pick_char(rng)
        elif operation == "duplicate":
            chars.insert(at, chars[at])
        elif at + 1 < len(chars):
            chars[at], chars[at + 1] = chars[at + 1], chars[at]
    return "".join(chars)


def _pick_char(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(_ODD_CHARACTERS)
    if roll < 0.9:
        return chr(rng.randrange(32, 127))
    return chr(rng.randrange(0x80, 0x3000))


# ------------------------------------------------------------ generated text

# Hypothesis strategies for text that is not derived from the corpus: runs of
# pool tokens (close enough to the language to get past the lexer), and
# arbitrary Unicode.
token_texts = st.lists(st.sampled_from(TOKEN_POOL), max_size=60).map("".join)
arbitrary_texts = st.text(max_size=200)
generated_texts = st.one_of(token_texts, arbitrary_texts)


# ------------------------------------------------------------------ verdict


@dataclass(frozen=True)
class Outcome:
    seconds: float
    checked: bool  # the check passed and a plan was compiled
    crash: str | None  # the traceback of an exception that is not a diagnostic


def run_pipeline(text: str, path: Path) -> Outcome:
    """Parse and check `text` as if saved at `path`; plan it when the check passes."""
    started = time.perf_counter()
    checked = False
    try:
        result = check_source(SourceFile(path.name, text), path=path)
        if result.program is not None:
            plan = compile_plan(result.program)
            plan_diagnostics(result.program, plan)
            render_plan(plan)
            # As `tts plan` shows a plan a saved checkpoint partly covers, in a terminal.
            render_plan(plan, color=True, covered={step.id for step in plan.steps[:1]})
            checked = True
    except DiagnosticError:
        pass  # a stage refused the input with diagnostics: the expected path
    except Exception:
        return Outcome(time.perf_counter() - started, checked, traceback.format_exc())
    return Outcome(time.perf_counter() - started, checked, None)
