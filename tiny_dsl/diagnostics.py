"""One diagnostic model for every stage, and its renderers.

A `Diagnostic` has a stable code, a severity, a terse message, a primary labelled
span, optional secondary spans, and `help`/`note` lines. Renderers are pure
functions of the model: compiler-style text for people, JSON for tools.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tiny_dsl.source import SourceFile, Span


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"  # information the author should see, never a problem


@dataclass(frozen=True)
class Label:
    span: Span
    message: str = ""


@dataclass(frozen=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    primary: Label | None
    secondary: tuple[Label, ...] = ()
    help: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple[str, int, str]:
        if self.primary is None:
            return ("", -1, self.code)
        return (self.primary.span.file, self.primary.span.start, self.code)

    def to_json(self) -> dict[str, Any]:
        def label(item: Label) -> dict[str, Any]:
            span = item.span
            return {
                "file": span.file,
                "line": span.line,
                "column": span.column,
                "end_line": span.end_line,
                "end_column": span.end_column,
                "message": item.message,
            }

        return {
            "code": self.code,
            "slug": CODES[self.code].slug if self.code in CODES else "",
            "severity": self.severity.value,
            "message": self.message,
            "primary": label(self.primary) if self.primary else None,
            "secondary": [label(item) for item in self.secondary],
            "help": list(self.help),
            "notes": list(self.notes),
        }


class DiagnosticError(Exception):
    """Raised by a stage that cannot continue; carries what it found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = list(diagnostics)


@dataclass(frozen=True)
class CodeInfo:
    slug: str
    explanation: str


def error(
    code: str,
    message: str,
    span: Span | None,
    label: str = "",
    *,
    help: Iterable[str] = (),
    notes: Iterable[str] = (),
    secondary: Iterable[Label] = (),
) -> Diagnostic:
    return _make(Severity.ERROR, code, message, span, label, help, notes, secondary)


def warning(
    code: str,
    message: str,
    span: Span | None,
    label: str = "",
    *,
    help: Iterable[str] = (),
    notes: Iterable[str] = (),
    secondary: Iterable[Label] = (),
) -> Diagnostic:
    return _make(Severity.WARNING, code, message, span, label, help, notes, secondary)


def note(
    code: str,
    message: str,
    span: Span | None,
    label: str = "",
    *,
    help: Iterable[str] = (),
    notes: Iterable[str] = (),
    secondary: Iterable[Label] = (),
) -> Diagnostic:
    return _make(Severity.NOTE, code, message, span, label, help, notes, secondary)


def _make(
    severity: Severity,
    code: str,
    message: str,
    span: Span | None,
    label: str,
    help: Iterable[str],
    notes: Iterable[str],
    secondary: Iterable[Label],
) -> Diagnostic:
    if code not in CODES:
        raise KeyError(f"diagnostic code {code} is not registered in tiny_dsl.diagnostics.CODES")
    return Diagnostic(
        code=code,
        severity=severity,
        message=message,
        primary=Label(span, label) if span is not None else None,
        secondary=tuple(secondary),
        help=tuple(h for h in help if h),
        notes=tuple(notes),
    )


# Fuzzy matching costs tens of microseconds per candidate. Past this many
# candidates, only those of about the same length and first letter are
# compared, and none when even those are too many: a suggestion is not worth
# seconds of checking.
MAX_SUGGESTION_POOL = 500


def did_you_mean(name: str, candidates: Iterable[str], *, margin: float | None = None) -> str:
    """A `did you mean` help line, or "" when nothing is close enough.

    With `margin`, only the matches within `margin` of the closest one's
    similarity (0 to 1) are offered: candidates that share a long prefix, such
    as the paths of one directory, are all alike, and the one file a letter
    off should not be listed among them.
    """
    pool = sorted(set(candidates))
    if len(pool) > MAX_SUGGESTION_POOL:
        first = name[:1].lower()
        pool = [c for c in pool if abs(len(c) - len(name)) <= 2 and c[:1].lower() == first]
        if len(pool) > MAX_SUGGESTION_POOL:
            return ""
    matches = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in pool}
        matches = [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, 3, 0.6)]
    if not matches:
        return ""
    if margin is not None:
        scores = [difflib.SequenceMatcher(None, name.lower(), m.lower()).ratio() for m in matches]
        matches = [
            m for m, score in zip(matches, scores, strict=True) if score >= max(scores) - margin
        ]
    return "did you mean " + " or ".join(f"`{m}`" for m in matches) + "?"


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """In source order, each once: files checked together report the problems of a
    module they both import twice, and both renderers show them once."""
    unique: dict[tuple[Any, ...], Diagnostic] = {}
    for diagnostic in diagnostics:
        unique.setdefault((diagnostic.sort_key(), diagnostic.message), diagnostic)
    return sorted(unique.values(), key=lambda d: (d.sort_key(), d.message))


def render_text(
    diagnostics: Iterable[Diagnostic], sources: Mapping[str, SourceFile], color: bool = False
) -> str:
    """Compiler-style text: `file:line:col: error[CODE]: message`, source, caret, help."""
    blocks = [_render_one(d, sources, color) for d in sort_diagnostics(diagnostics)]
    return "\n".join(blocks)


def _paint(text: str, style: str, color: bool) -> str:
    codes = {"error": "1;31", "warning": "1;33", "note": "1;36", "blue": "1;34", "bold": "1"}
    return f"\x1b[{codes[style]}m{text}\x1b[0m" if color else text


def _render_one(diagnostic: Diagnostic, sources: Mapping[str, SourceFile], color: bool) -> str:
    severity = diagnostic.severity.value
    head = _paint(f"{severity}[{diagnostic.code}]", severity, color)
    lines: list[str] = []
    primary = diagnostic.primary
    if primary is None:
        lines.append(f"{head}: {_paint(diagnostic.message, 'bold', color)}")
    else:
        lines.append(
            f"{primary.span.origin()}: {head}: {_paint(diagnostic.message, 'bold', color)}"
        )
        labels = [(primary, True), *((label, False) for label in diagnostic.secondary)]
        # A file too large to read has no source to show: the location line says it all.
        labels = [pair for pair in labels if pair[0].span.file in sources]
        # Source order reads best: an opening brace above the place it is missed.
        labels.sort(key=lambda pair: (pair[0].span.file != primary.span.file, pair[0].span.line))
        width = max((len(str(label.span.line)) for label, _ in labels), default=0)
        gutter = " " * width
        if labels:
            lines.append(_paint(f"{gutter} |", "blue", color))
        for label, is_primary in labels:
            source = sources.get(label.span.file)
            if source is None:
                continue
            if not is_primary and label.span.file != primary.span.file:
                lines.append(_paint(f"{gutter} = ", "blue", color) + f"in {label.span.origin()}:")
            text = source.line_text(label.span.line)
            start = label.span.column - 1
            if label.span.end_line == label.span.line:
                length = max(1, label.span.end_column - label.span.column)
            else:
                length = max(1, len(text) - start)
            text, start, length = _window(text, start, length)
            number = str(label.span.line).rjust(width)
            lines.append(_paint(f"{number} | ", "blue", color) + text)
            mark = ("^" if is_primary else "-") * length
            style = severity if is_primary else "blue"
            marker = _paint(
                " " * start + mark + (f" {label.message}" if label.message else ""), style, color
            )
            lines.append(_paint(f"{gutter} | ", "blue", color) + marker)
        if labels:
            lines.append(_paint(f"{gutter} |", "blue", color))
    for help_line in diagnostic.help:
        lines.append(_paint("  = help: ", "blue", color) + help_line)
    for note in diagnostic.notes:
        lines.append(_paint("  = note: ", "blue", color) + note)
    return "\n".join(lines) + "\n"


# A source line longer than this is shown as a window around the span, so that
# a minified or generated file does not flood the terminal.
MAX_SHOWN_LINE = 160


def _window(text: str, start: int, length: int) -> tuple[str, int, int]:
    """The part of a long line around `start`, with the span's start and length in it."""
    if len(text) <= MAX_SHOWN_LINE:
        return text, start, length
    length = min(length, MAX_SHOWN_LINE // 2)
    left = max(0, min(start - MAX_SHOWN_LINE // 4, len(text) - MAX_SHOWN_LINE))
    right = left + MAX_SHOWN_LINE
    shown = ("…" if left else "") + text[left:right] + ("…" if right < len(text) else "")
    return shown, start - left + (1 if left else 0), length


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in sort_diagnostics(diagnostics)], indent=2)


def summary_line(diagnostics: Sequence[Diagnostic]) -> str:
    """ "2 errors, 1 warning": each problem counted once, as the renderers show it."""
    diagnostics = sort_diagnostics(diagnostics)
    errors = sum(1 for d in diagnostics if d.is_error)
    notes = sum(1 for d in diagnostics if d.severity is Severity.NOTE)
    warnings = len(diagnostics) - errors - notes
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    if notes:
        parts.append(f"{notes} note{'s' if notes != 1 else ''}")
    return ", ".join(parts) if parts else "no problems"


# Every code, its slug and the paragraph `tts explain CODE` prints. Codes are
# stable: never renumber one; retire it instead. Bands: E1xx syntax, E2xx names
# and imports, E3xx values and types, E4xx plan, E5xx run, W-codes warnings.
CODES: dict[str, CodeInfo] = {}


def register(code: str, slug: str, explanation: str) -> None:
    if code in CODES:
        raise ValueError(f"diagnostic code {code} registered twice")
    CODES[code] = CodeInfo(slug, " ".join(explanation.split()))


register(
    "E101",
    "unexpected-character",
    """The file contains a character that cannot start any token of the
    language, such as `@` or a stray backtick. Remove it, or put the text
    inside a string ("...").""",
)
register(
    "E102",
    "unexpected-token",
    """The parser met a word or symbol where the grammar does not allow it,
    for instance a property outside any block, or two values where one is
    expected. The message names what was found and what could come there.""",
)
register(
    "E103",
    "unclosed-block",
    """A `{`, `[` or `(` is never closed before the end of the file. The
    diagnostic points at the opening bracket; add the matching closing one
    after the last entry of that block.""",
)
register(
    "E104",
    "unterminated-string",
    """A string starts with `"` but the line ends before the closing `"`.
    Close it on the same line, or use a triple-quoted string (`\"\"\"...\"\"\"`)
    for text that spans several lines.""",
)
register(
    "E105",
    "unknown-keyword",
    """A statement starts with a word that is not a declaration, timeline step
    or analysis keyword. Top-level declarations are scenario, import, persona,
    fragment, demographics, population, world, intervention, timeline,
    extract, analyze and output.""",
)
register(
    "E106",
    "number-too-large",
    """A number has more digits than any setting could use (Python refuses to
    convert integers of more than 4,300 digits). Seeds, sizes, ages and
    shares need only a few digits; remove the extra ones.""",
)
register(
    "E107",
    "nesting-too-deep",
    """Brackets, braces and parentheses are nested more than 32 levels deep,
    in a `.tts` file or in a JSON file a scenario reads (`persona NAME from
    "x.agent.json"`). Scenarios need a few levels at most; a deeper nesting is
    a generated or corrupted file, and is refused before it can exhaust the
    stack of any later stage. Flatten the value, or fix the generator.""",
)
register(
    "E108",
    "file-too-large",
    """A `.tts` file, or a JSON file a scenario reads, is larger than 2 MiB
    (2,097,152 bytes), ten times a 10,000-line scenario. It is refused
    before it is read, so that checking stays fast and memory stays bounded.
    Split the scenario into files that import each other, and describe large
    groups as a `population` (members are generated) rather than as
    thousands of personas.""",
)
