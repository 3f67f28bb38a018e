"""Text to syntax tree. The only module that sees Lark's trees and tokens.

Parsing never raises on bad input: it returns a `Module` with whatever it could
read and a list of diagnostics. After a syntax error it resumes at the next
line that starts a top-level declaration, so one pass reports the problems of
every declaration, not only the first.
"""

from __future__ import annotations

import ast as python_ast
import contextvars
import dataclasses
import itertools
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.utils import TextSlice

from tiny_dsl import diagnostics as diag
from tiny_dsl.diagnostics import Diagnostic, Label
from tiny_dsl.resources import grammar_path
from tiny_dsl.source import MAX_SOURCE_BYTES, SourceFile, Span
from tiny_dsl.syntax import ast

# A top-level declaration starts at column 1 with one of these words; error
# recovery resumes parsing there.
DECLARATION_KEYWORDS = (
    "scenario",
    "import",
    "param",
    "persona",
    "agent",
    "fragment",
    "demographics",
    "population",
    "world",
    "intervention",
    "timeline",
    "extract",
    "analyze",
    "output",
)
# The words that begin a statement in each kind of block, as the docs list them.
# A statement that begins with another word is named against the whole list.
TIMELINE_STEPS = (
    "broadcast",
    "deliver",
    "ask",
    "run",
    "wait",
    "interview",
    "think",
    "checkpoint",
    "tell",
    "converse",
    "goal",
    "context",
)
ANALYSES = ("compare", "summarize", "funnel", "expect", "validate")
STATEMENT_KINDS = (
    ("a timeline step", TIMELINE_STEPS),
    ("an analysis", ANALYSES),
    ("a declaration", DECLARATION_KEYWORDS),
)
# What `wait` counts in (the grammar's TIME_UNIT), and the units authors write
# instead, with how many of the nearest accepted unit make one of them.
WAIT_UNITS = ("minutes", "hours", "days", "weeks")
# The longest single `wait` (ten years): here because the syntax error for `wait 20
# years` must not suggest a conversion the checks would then refuse.
MAX_WAIT_DAYS = 3650
_FOREIGN_UNITS = {
    "second": ("minutes", 1 / 60),
    "month": ("days", 30),
    "year": ("days", 365),
}
# Error recovery resumes at a line that starts, at column 1, with a declaration
# keyword or with what looks like a misspelt one (`wrld x {`).
_RECOVERY_POINT = re.compile(
    r"^(?:(?:{keywords})\b|[A-Za-z_]\w*[ \t]+[A-Za-z_]\w*[ \t]*\{{)".format(
        keywords="|".join(DECLARATION_KEYWORDS)
    ),
    re.MULTILINE,
)
_MAX_ERRORS_PER_DECLARATION = 20
# Error recovery stops after this many syntax errors in one file: each one
# costs a re-parse, and the first ones are what the author fixes first.
MAX_SYNTAX_ERRORS = 100
# Brackets, braces and parentheses open at once. Real scenarios nest four or
# five levels deep; the limit keeps every recursive stage (checks, formatter,
# JSON) far from Python's recursion limit.
MAX_NESTING_DEPTH = 32

_OPENERS = {"LBRACE": "RBRACE", "LBRACKET": "RBRACKET", "LPAR": "RPAR"}
_CLOSERS = {"RBRACE", "RBRACKET", "RPAR"}
_BRACKETS = {*_OPENERS, *_CLOSERS}

# How terminals are named to authors. Keywords are shown as written.
_DISPLAY = {
    "NAME": "a name",
    "STRING": "a string",
    "LONG_STRING": "a string",
    "SIGNED_NUMBER": "a number",
    "PERCENT": "a percentage",
    "CURRENCY": "a currency (usd, eur, ...)",
    "TIME_UNIT": "a time unit (minutes, hours, days, weeks)",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "LBRACKET": "`[`",
    "RBRACKET": "`]`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "COMMA": "`,`",
    "DOT": "`.`",
    "RANGE_DOTS": "`..`",
    "SEMICOLON": "`;`",
    "EQUALITY": "a comparison (>, <, >=, <=, ==, !=)",
    "ORDER": "a comparison (>, <, >=, <=, ==, !=)",
    "_NL": "end of line",
    "$END": "end of file",
    "ROUNDS": "`rounds`",
}

# Step keywords that are property names elsewhere (a world's `context`): such a name
# becomes the keyword (the grammar's declared terminal) only where a timeline step begins.
_TIMELINE_ONLY_KEYWORDS = {"goal": "GOAL", "context": "CONTEXT"}

_comments: contextvars.ContextVar[list[Token]] = contextvars.ContextVar("tts_comments")
# The file being parsed, for the spans the tree builder attaches while parsing.
_current_source: contextvars.ContextVar[SourceFile] = contextvars.ContextVar("tts_source")


class _NewlineFilter:
    """Drops newlines inside brackets and after a comma, and tracks open brackets.

    Statements end at a newline; lists and comma lists may continue on the
    next line. The bracket stack is kept for "block left open" messages.
    """

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.state = _LexState()

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        state = _LexState()
        self.state = state
        for token in stream:
            kind = token.type
            if kind == "_NL":
                if state.depth_without_braces() > 0 or state.last_kind == "COMMA":
                    continue
                state.at_statement_start = True
            elif kind in _OPENERS:
                state.open.append((token, state.last_word))
                if len(state.open) > MAX_NESTING_DEPTH:
                    raise _ValueProblem(_too_deep(_current_source.get(), state))
            elif kind in _CLOSERS and state.open:
                state.open.pop()
            if (
                kind == "NAME"
                and state.at_statement_start
                and token.value in _TIMELINE_ONLY_KEYWORDS
                and state.in_timeline()
            ):
                kind = _TIMELINE_ONLY_KEYWORDS[token.value]
                token = Token.new_borrow_pos(kind, token.value, token)
            if kind != "_NL":
                if state.at_statement_start:
                    state.statement = token
                state.at_statement_start = kind in ("SEMICOLON", "LBRACE")
                state.last_kind = kind
                state.last = token
                if kind == "NAME" or (kind.isupper() and kind.isalpha()):
                    state.last_word = token
            yield token
            if kind == "LBRACE":
                # An entry written on the `{` line is lexed as if it began a line
                # of its own, so that the same words are keywords at the start of
                # every statement (after a newline they are, as LALR merges the
                # lookaheads of every `_sep`), and `tts fmt`, which moves such an
                # entry to its own line, never changes what it means.
                yield Token.new_borrow_pos("_NL", "", token)


@dataclass
class _LexState:
    open: list[tuple[Token, Token | None]] = field(default_factory=list)
    last_kind: str = ""
    last: Token | None = None
    last_word: Token | None = None
    statement: Token | None = None  # the first token of the current statement
    at_statement_start: bool = True

    def depth_without_braces(self) -> int:
        return sum(1 for token, _ in self.open if token.type != "LBRACE")

    def in_timeline(self) -> bool:
        """Directly inside the braces of `timeline { ... }`."""
        if not self.open:
            return False
        opener, word = self.open[-1]
        return opener.type == "LBRACE" and word is not None and word.type == "TIMELINE"


def _collect_comment(token: Token) -> Token:
    _comments.get().append(token)
    return token


@lru_cache(maxsize=1)
def _lark() -> tuple[Lark, _NewlineFilter]:
    postlex = _NewlineFilter()
    parser = Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        transformer=_ToAst(),
        maybe_placeholders=True,
        postlex=postlex,
        lexer_callbacks={"COMMENT": _collect_comment},
        start="start",
        # The LALR tables, built from the grammar in about 0.2 s, are kept in a file in
        # the temporary directory, named by the grammar's and Lark's hash; loading them
        # takes 0.03 s. Lark rebuilds them when the file is unreadable.
        cache=True,
    )
    return parser, postlex


# ------------------------------------------------------------------ public API


def parse(source: SourceFile) -> tuple[ast.Module, list[Diagnostic]]:
    """Parse one file into a `Module` and the syntax diagnostics found."""
    size = source_bytes(source.text)
    if size > MAX_SOURCE_BYTES:
        return ast.Module(source.path, (), (), complete=False), [file_too_large(source.path, size)]
    comments: list[Token] = []
    token = _comments.set(comments)
    try:
        declarations, diagnostics = _parse_text(source, source.text)
        if diagnostics:
            declarations, diagnostics = _parse_by_declaration(source)
    finally:
        _comments.reset(token)
    seen: set[int] = set()
    module_comments = []
    for comment in sorted(comments, key=lambda t: t.start_pos or 0):
        start = comment.start_pos or 0
        if start in seen:
            continue
        seen.add(start)
        module_comments.append(
            ast.Comment(str(comment).rstrip(), source.span(start, comment.end_pos or start))
        )
    module = ast.Module(
        source.path, tuple(declarations), tuple(module_comments), complete=not diagnostics
    )
    return module, diagnostics


def source_bytes(text: str) -> int:
    """The UTF-8 size of `text`, or its length when that alone is over the limit (a
    lower bound, spared the encoding of a huge text)."""
    if len(text) > MAX_SOURCE_BYTES or len(text) * 4 <= MAX_SOURCE_BYTES:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def file_too_large(display: str, size: int, span: Span | None = None) -> Diagnostic:
    """E108 for a file over `MAX_SOURCE_BYTES`, located at `span` (the import or
    `from` path that names it) or else at the file's start: it is not read."""
    return diag.error(
        "E108",
        f"file too large: `{display}` has {size:,} bytes, the limit is {MAX_SOURCE_BYTES:,}",
        span or Span(display, 0, 0, 1, 1, 1, 1),
        "too large to read" if span else "not read",
        help=[
            "split the scenario into files that import each other, "
            "or generate large populations with `population` instead of listing personas"
        ],
    )


def _parse_text(
    source: SourceFile, text: str, begin: int = 0, end: int | None = None
) -> tuple[list[ast.Declaration], list[Diagnostic]]:
    """Parse `text[begin:end]`, with offsets, lines and columns those of the whole `text`."""
    parser, postlex = _lark()
    token = _current_source.set(source)
    try:
        # The tree builder is `_ToAst`, so the parse result is `start`'s list.
        declarations: list[ast.Declaration] = parser.parse(  # type: ignore[assignment]
            TextSlice(text, begin, len(text) if end is None else end)
        )
    except UnexpectedInput as exc:
        return [], [_syntax_diagnostic(source, exc, postlex.state)]
    except _ValueProblem as exc:  # a value the grammar admits but Python cannot hold
        return [], [exc.diagnostic]
    finally:
        _current_source.reset(token)
    return declarations, []


def _parse_by_declaration(
    source: SourceFile,
) -> tuple[list[ast.Declaration], list[Diagnostic]]:
    """Parse each top-level declaration on its own, to report every broken one.

    Each declaration is parsed as a slice of the file, so offsets, lines and
    columns stay those of the real file and no declaration re-reads the ones
    before it. Within a declaration, a line with an error is blanked and the
    declaration parsed again, so that every broken statement is reported; a
    broken line that opens or closes a block ends that, since what follows
    would only report the imbalance. After `MAX_SYNTAX_ERRORS` errors the
    rest of the file is not parsed.
    """
    text = source.text
    starts = [m.start() for m in _RECOVERY_POINT.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    starts.append(len(text))
    declarations: list[ast.Declaration] = []
    diagnostics: list[Diagnostic] = []
    for begin, end in itertools.pairwise(starts):
        for _attempt in range(_MAX_ERRORS_PER_DECLARATION):
            found, problems = _parse_text(source, text, begin, end)
            if not problems:
                declarations.extend(found)
                break
            diagnostics.extend(problems)
            if len(diagnostics) >= MAX_SYNTAX_ERRORS:
                return declarations, _stopped_after(diagnostics[:MAX_SYNTAX_ERRORS])
            problem = problems[0]
            if problem.code in ("E103", "E107") or problem.primary is None:
                break
            line = problem.primary.span.line
            line_start = text.rfind("\n", 0, problem.primary.span.start) + 1
            line_end = text.find("\n", line_start, end)
            line_end = end if line_end == -1 else line_end
            broken = text[line_start:line_end]
            if line < 1 or not broken.strip() or "{" in broken or "}" in broken:
                break
            text = text[:line_start] + _blank(broken) + text[line_end:]
    return declarations, diagnostics


def _blank(text: str) -> str:
    """`text` with every character but newlines turned into a space."""
    return "\n".join(" " * len(line) for line in text.split("\n"))


def _stopped_after(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    last = diagnostics[-1]
    note = f"stopped after {MAX_SYNTAX_ERRORS} syntax errors; fix these and check again"
    return [*diagnostics[:-1], dataclasses.replace(last, notes=(*last.notes, note))]


# ----------------------------------------------------------------- diagnostics


def _display(terminal: str) -> str:
    if terminal in _DISPLAY:
        return _DISPLAY[terminal]
    return f"`{terminal.lower()}`"


def _token_text(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    if token.type == "$END":
        return "end of file"
    text = str(token)
    if len(text) > 30:
        text = text[:27] + "..."
    return f"`{text}`"


def _end_span(source: SourceFile, token: Token) -> Span:
    end = token.end_pos if token.end_pos is not None else 0
    return source.span(end, end)


def _token_span(source: SourceFile, token: Token) -> Span:
    """The token's span, from the positions the lexer already counted."""
    start = token.start_pos or 0
    line = token.line or 1
    column = token.column or 1
    if token.type == "_NL" or token.end_pos is None:
        return Span(source.path, start, start, line, column, line, column)
    return Span(
        source.path,
        start,
        token.end_pos,
        line,
        column,
        token.end_line or line,
        token.end_column or column,
    )


def _syntax_diagnostic(source: SourceFile, exc: UnexpectedInput, state: _LexState) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        return _bad_character(source, exc)
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    expected = sorted(
        {name for name in exc.expected if not name.startswith("__")} - {"COMMENT", "WS_INLINE"}
    )
    if token.type == "$END" and state.open:
        return _unclosed(source, state)
    if token.type in ("RBRACE", "RBRACKET", "RPAR") and not state.open:
        return diag.error(
            "E102",
            f"unexpected {_token_text(token)}: nothing is open here",
            _token_span(source, token),
            "no block or list to close",
            help=["remove it, or open the block it was meant to close"],
        )
    previous = state.last if state.last is not token else None
    statement = state.statement if state.statement is not token else None
    specific = _statement_problem(source, token, expected, statement)
    if specific is not None:
        return specific
    shown = [t for t in expected if t not in ("_NL", "SEMICOLON")]
    kind, starts = next(
        (
            (kind, words)
            for kind, words in STATEMENT_KINDS
            if {word.upper() for word in words} <= set(shown)
        ),
        ("", ()),
    )
    if kind:
        # Name the statement, not its first words, so that no keyword is cut off the list.
        shown = [t for t in shown if t.lower() not in starts]
    names = ([kind] if kind else []) + [_display(t) for t in shown]
    statement_may_end = "_NL" in expected or "SEMICOLON" in expected
    helps: list[str] = []
    if token.type == "NAME":
        keywords = [
            t.lower()
            for t in expected
            if t.isalpha() and t.isupper() and t != "NAME" and t not in _BRACKETS
        ]
        suggestion = diag.did_you_mean(str(token), keywords)
        if suggestion:
            helps.append(suggestion)
        elif kind:
            helps.append(f"{kind} begins with " + _join([f"`{w}`" for w in starts], limit=None))
        elif keywords and "NAME" not in expected and not statement_may_end:
            code = "E105" if set(keywords) & set(DECLARATION_KEYWORDS) else "E102"
            return diag.error(
                code,
                f"unknown keyword {_token_text(token)}",
                _token_span(source, token),
                "not a keyword here",
                help=["expected one of: " + ", ".join(f"`{k}`" for k in keywords)],
            )
    if token.type == "_NL" and previous is not None and names:
        # Something is missing at the end of the line: point where it goes.
        return diag.error(
            "E102",
            f"expected {_join(names)} after {_token_text(previous)}",
            _end_span(source, previous),
            "the statement ends here",
            help=helps or [f"add {_join(names)} here"],
        )
    if statement_may_end and previous is not None and not helps:
        helps.append(
            "each statement goes on its own line (or ends with `;`); "
            f"put {_token_text(token)} on a new line or remove it"
        )
    expectation = f"; expected {_join(names)}" if names else ""
    return diag.error(
        "E102",
        f"unexpected {_token_text(token)}{expectation}",
        _token_span(source, token),
        "unexpected here",
        help=helps,
    )


def _statement_problem(
    source: SourceFile, token: Token, expected: list[str], statement: Token | None
) -> Diagnostic | None:
    """What the statement begun by `statement` takes, where the general message
    would misread the mistake (say, as two statements on one line)."""
    if statement is None:
        return None
    # What the author wrote between the keyword and the unexpected token.
    written = source.text[statement.end_pos : token.start_pos].strip()
    span = _token_span(source, token)
    if statement.type == "WAIT" and token.type == "NAME" and "TIME_UNIT" in expected:
        units = _join([f"`{u}`" for u in WAIT_UNITS], limit=None)
        return diag.error(
            "E102",
            f"unexpected {_token_text(token)}: `wait` takes {units}",
            span,
            "not a time unit",
            help=[_wait_unit_help(written, str(token))],
        )
    return None


def _wait_unit_help(amount: str, unit: str) -> str:
    """A `wait` in an accepted unit for `wait AMOUNT UNIT`: seconds, months and
    years converted, or a misspelt unit corrected."""
    singular = unit.lower().removesuffix("s")
    if singular in _FOREIGN_UNITS and re.fullmatch(r"\d+(\.\d+)?", amount):
        target, factor = _FOREIGN_UNITS[singular]
        converted = float(amount) * factor
        if target == "days" and converted > MAX_WAIT_DAYS:
            days = round(converted)
            full, rest = divmod(days, MAX_WAIT_DAYS)
            then = f", then `wait {rest} days`" if rest else ""
            return (
                f"for {amount} {unit} ({days} days), write `wait {MAX_WAIT_DAYS} days` "
                f"{full} times{then} (one `wait` is at most {MAX_WAIT_DAYS} days)"
            )
        shown = f"{converted:.0f}" if converted >= 10 else f"{converted:.3g}"
        return f"for {amount} {unit}, write `wait {shown} {target}`"
    forms = [u.removesuffix("s") for u in WAIT_UNITS] if amount == "1" else list(WAIT_UNITS)
    return diag.did_you_mean(unit, forms) or f"for example: `wait {amount or '3'} days`"


def _join(names: list[str], limit: int | None = 6) -> str:
    unique = list(dict.fromkeys(names))
    if limit is not None and len(unique) > limit:
        unique = [*unique[:limit], "..."]
    if len(unique) == 1:
        return unique[0]
    return ", ".join(unique[:-1]) + " or " + unique[-1]


def _bad_character(source: SourceFile, exc: UnexpectedCharacters) -> Diagnostic:
    offset = exc.pos_in_stream or 0
    char = source.text[offset] if offset < len(source.text) else ""
    if char == '"':
        line_end = source.text.find("\n", offset)
        line_end = len(source.text) if line_end == -1 else line_end
        if source.text.startswith('"""', offset):
            return diag.error(
                "E104",
                "unterminated triple-quoted string",
                source.span(offset, offset + 3),
                'this `"""` is never closed',
                help=['close the string with `"""`'],
            )
        return diag.error(
            "E104",
            "unterminated string",
            source.span(offset, line_end),
            "the string starts here and the line ends before it is closed",
            help=[
                'add the closing `"` before the end of the line, '
                'or use `"""..."""` for text over several lines'
            ],
        )
    shown = repr(char) if not char.isprintable() or char == " " else f"`{char}`"
    helps = []
    if char == "'":
        helps.append('strings use double quotes: "..."')
    elif char == "=":
        helps.append("properties take no `=`: write `seed 42`, not `seed = 42`")
    elif char == ":":
        helps.append("properties take no `:`: write `seed 42`, not `seed: 42`")
    else:
        helps.append('remove it, or put the text inside a string ("...")')
    return diag.error(
        "E101",
        f"unexpected character {shown}",
        source.span(offset, offset + 1),
        "cannot start any token",
        help=helps,
    )


def _too_deep(source: SourceFile, state: _LexState) -> Diagnostic:
    opener = state.open[-1][0]
    outermost = state.open[0][0]
    return diag.error(
        "E107",
        f"nested too deeply: more than {MAX_NESTING_DEPTH} brackets, braces or parentheses "
        "are open here",
        _token_span(source, opener),
        f"level {len(state.open)}",
        secondary=[Label(_token_span(source, outermost), "the outermost one opens here")],
        help=[
            f"a scenario needs a few levels at most; flatten the value "
            f"(the limit is {MAX_NESTING_DEPTH} levels)"
        ],
    )


def _unclosed(source: SourceFile, state: _LexState) -> Diagnostic:
    opener, owner = state.open[-1]
    closer = {"LBRACE": "}", "LBRACKET": "]", "LPAR": ")"}[opener.type]
    what = "block" if opener.type == "LBRACE" else "list" if opener.type == "LBRACKET" else "`(`"
    name = f" `{owner}`" if owner is not None else ""
    end = state.last if state.last is not None else opener
    return diag.error(
        "E103",
        f"the{name} {what} is never closed",
        _end_span(source, end),
        f"expected `{closer}` here",
        secondary=[Label(_token_span(source, opener), f"this `{opener}` is never closed")],
        help=[f"add `{closer}` after the last entry of the{name} {what}"],
    )


# --------------------------------------------------------------- tree to AST


class _ValueProblem(Exception):
    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _unescape(source: SourceFile, token: Token) -> str:
    raw = str(token)
    body = raw[3:-3] if raw.startswith('"""') else raw[1:-1]
    if "\\" not in body:
        return body
    try:
        with warnings.catch_warnings():
            # Python only warns about an unknown escape such as `\l` and keeps it;
            # here it is an error, so that a typo does not silently change the text.
            warnings.simplefilter("error")
            value = python_ast.literal_eval('"""' + body.replace('"""', '\\"\\"\\"') + '"""')
    except (SyntaxError, ValueError, DeprecationWarning, SyntaxWarning) as exc:
        start = token.start_pos or 0
        raise _ValueProblem(
            diag.error(
                "E104",
                "invalid escape sequence in string",
                source.span(start, token.end_pos or start),
                str(exc).split("(")[0].strip(),
                help=['escapes are \\" \\\\ \\n \\t \\xHH \\uHHHH; write a backslash as \\\\'],
            )
        ) from exc
    assert isinstance(value, str)
    return value


def _number_value(raw: str) -> int | float:
    return float(raw) if "." in raw else int(raw)


@v_args(inline=True)
class _ToAst(Transformer[Token, Any]):
    """One method per grammar rule; each returns the matching `ast` node.

    Lark calls it while parsing (LALR), so no intermediate parse tree is built.
    """

    @property
    def source(self) -> SourceFile:
        return _current_source.get()

    # helpers ---------------------------------------------------------------

    def _span_of(self, *items: Any) -> Span:
        present = [item for item in items if item is not None]
        source = self.source
        return _item_span(source, present[0]).to(_item_span(source, present[-1]))

    def _ident(self, token: Token) -> ast.Ident:
        return ast.Ident(str(token), _token_span(self.source, token))

    def _str(self, token: Token) -> ast.Str:
        return ast.Str(_unescape(self.source, token), str(token), _token_span(self.source, token))

    # module ------------------------------------------------------------------

    @v_args(inline=False)
    def start(self, items: list[Any]) -> list[ast.Declaration]:
        return [i for i in items if not isinstance(i, Token)]

    # declarations ------------------------------------------------------------

    def scenario(self, keyword: Token, name: Token, body: ast.Block) -> ast.Scenario:
        return ast.Scenario(self._ident(name), body, self._span_of(keyword, body))

    def import_decl(self, keyword: Token, path: Token) -> ast.Import:
        return ast.Import(self._str(path), self._span_of(keyword, path))

    def param_decl(self, keyword: Token, name: Token, value: Any) -> ast.Param:
        default = self._value(value)
        return ast.Param(self._ident(name), default, self._span_of(keyword, default))

    def persona_inline(self, keyword: Token, name: Token, body: ast.Block) -> ast.PersonaInline:
        return ast.PersonaInline(self._ident(name), body, self._span_of(keyword, body))

    def persona_file(
        self, keyword: Token, name: Token, _from: Token, path: Token
    ) -> ast.PersonaFile:
        return ast.PersonaFile(self._ident(name), self._str(path), self._span_of(keyword, path))

    def persona_file_body(
        self, keyword: Token, name: Token, _from: Token, path: Token, body: ast.Block
    ) -> ast.PersonaFile:
        span = self._span_of(keyword, body)
        return ast.PersonaFile(self._ident(name), self._str(path), span, body)

    def external_agent(
        self, keyword: Token, name: Token, _external: Token, body: ast.Block
    ) -> ast.ExternalAgent:
        return ast.ExternalAgent(self._ident(name), body, self._span_of(keyword, body))

    def fragment_inline(self, keyword: Token, name: Token, body: ast.Block) -> ast.FragmentInline:
        return ast.FragmentInline(self._ident(name), body, self._span_of(keyword, body))

    def fragment_file(
        self, keyword: Token, name: Token, _from: Token, path: Token
    ) -> ast.FragmentFile:
        return ast.FragmentFile(self._ident(name), self._str(path), self._span_of(keyword, path))

    def demographics(self, keyword: Token, name: Token, body: ast.Block) -> ast.Demographics:
        return ast.Demographics(self._ident(name), body, self._span_of(keyword, body))

    def population(self, keyword: Token, name: Token, body: ast.Block) -> ast.Population:
        return ast.Population(self._ident(name), body, self._span_of(keyword, body))

    def demographics_file(
        self, keyword: Token, name: Token, _from: Token, path: Token
    ) -> ast.Demographics:
        written = self._str(path)
        empty = ast.Block((), written.span)
        return ast.Demographics(self._ident(name), empty, self._span_of(keyword, path), written)

    def population_file(
        self, keyword: Token, name: Token, _from: Token, path: Token, body: ast.Block | None
    ) -> ast.Population:
        written = self._str(path)
        block = body if body is not None else ast.Block((), written.span)
        span = self._span_of(keyword, body if body is not None else path)
        return ast.Population(self._ident(name), block, span, written)

    def world(self, keyword: Token, name: Token, body: ast.Block) -> ast.World:
        return ast.World(self._ident(name), body, self._span_of(keyword, body))

    def intervention(self, keyword: Token, name: Token, body: ast.Block) -> ast.Intervention:
        return ast.Intervention(self._ident(name), body, self._span_of(keyword, body))

    def output(self, keyword: Token, body: ast.Block) -> ast.Output:
        return ast.Output(body, self._span_of(keyword, body))

    # blocks ------------------------------------------------------------------

    @v_args(inline=False)
    def body(self, items: list[Any]) -> ast.Block:
        entries = tuple(i for i in items if not isinstance(i, Token))
        return ast.Block(entries, self._span_of(items[0], items[-1]))

    def property(self, key: Any, value: ast.Value) -> ast.Property:
        key_node = self._key(key)
        return ast.Property(key_node, value, self._span_of(key_node, value))

    def sub_block(self, key: Any, body: ast.Block) -> ast.SubBlock:
        key_node = self._key(key)
        return ast.SubBlock(key_node, body, self._span_of(key_node, body))

    def named_block(self, key: Any, name: Token, body: ast.Block) -> ast.NamedBlock:
        key_node = self._key(key)
        return ast.NamedBlock(key_node, self._ident(name), body, self._span_of(key_node, body))

    def _key(self, key: Any) -> ast.Key:
        if isinstance(key, Token):
            return self._ident(key) if key.type == "NAME" else self._str(key)
        assert isinstance(key, ast.Range | ast.Number)
        return key

    @v_args(inline=False)
    def value_seq(self, items: list[Any]) -> ast.Value:
        phrases = [i for i in items if not isinstance(i, Token)]
        if len(phrases) == 1:
            return phrases[0]
        return ast.Seq(tuple(phrases), self._span_of(phrases[0], phrases[-1]))

    @v_args(inline=False)
    def phrase(self, items: list[Any]) -> ast.Value:
        values = [self._value(i) for i in items]
        if len(values) == 1:
            return values[0]
        return ast.Phrase(tuple(values), self._span_of(values[0], values[-1]))

    def _value(self, item: Any) -> ast.Value:
        if isinstance(item, Token):
            if item.type in ("STRING", "LONG_STRING"):
                return self._str(item)
            if item.type == "PERCENT":
                raw = str(item)
                return ast.Percent(float(raw[:-1]), raw, _token_span(self.source, item))
            raise AssertionError(f"unexpected value token {item.type}")
        return item

    def number(self, token: Token) -> ast.Number:
        span = _token_span(self.source, token)
        try:
            value = _number_value(str(token))
        except ValueError as exc:  # Python refuses to convert integers of 4,300+ digits
            raise _ValueProblem(
                diag.error(
                    "E106",
                    "number too large",
                    span,
                    f"{len(str(token))} digits",
                    help=["numbers in a scenario have at most a few digits; remove the extra ones"],
                )
            ) from exc
        return ast.Number(value, str(token), span)

    def range(self, low: Token, _dots: Token, high: Token) -> ast.Range:
        return ast.Range(self.number(low), self.number(high), self._span_of(low, high))

    def money(self, amount: Token, currency: Token) -> ast.Money:
        return ast.Money(self.number(amount), str(currency), self._span_of(amount, currency))

    def duration(self, amount: Token, unit: Token) -> ast.Duration:
        return ast.Duration(self.number(amount), str(unit), self._span_of(amount, unit))

    @v_args(inline=False)
    def list_value(self, items: list[Any]) -> ast.ListValue:
        values = tuple(
            self._value(i)
            for i in items
            if i is not None and not (isinstance(i, Token) and i.type in _PUNCTUATION)
        )
        return ast.ListValue(values, self._span_of(items[0], items[-1]))

    @v_args(inline=False)
    def ref(self, items: list[Token]) -> ast.Ref:
        parts = tuple(str(t) for t in items if t.type == "NAME")
        return ast.Ref(parts, self._span_of(items[0], items[-1]))

    # timeline ------------------------------------------------------------------

    @v_args(inline=False)
    def timeline(self, items: list[Any]) -> ast.Timeline:
        steps = tuple(i for i in items if not isinstance(i, Token))
        return ast.Timeline(steps, self._span_of(items[0], items[-1]))

    def broadcast_step(self, keyword: Token, world: Token, text: Token) -> ast.BroadcastStep:
        return ast.BroadcastStep(self._ident(world), self._str(text), self._span_of(keyword, text))

    def deliver_step(
        self, keyword: Token, intervention: Token, _in: Token, world: Token
    ) -> ast.DeliverStep:
        return ast.DeliverStep(
            self._ident(intervention), self._ident(world), self._span_of(keyword, world)
        )

    def deliver_touch_step(
        self,
        keyword: Token,
        intervention: Token,
        _dot: Token,
        touch: Token,
        _in: Token,
        world: Token,
    ) -> ast.DeliverStep:
        return ast.DeliverStep(
            self._ident(intervention),
            self._ident(world),
            self._span_of(keyword, world),
            touch=self._ident(touch),
        )

    def ask_step(self, keyword: Token, world: Token, text: Token) -> ast.AskStep:
        return ast.AskStep(self._ident(world), self._str(text), self._span_of(keyword, text))

    def run_step(self, keyword: Token, world: Token, rounds: Token, unit: Token) -> ast.RunStep:
        return ast.RunStep(
            self._ident(world), self.number(rounds), str(unit), self._span_of(keyword, unit)
        )

    def run_every_step(
        self,
        keyword: Token,
        world: Token,
        rounds: Token,
        unit: Token,
        _every: Token,
        every: ast.Duration,
    ) -> ast.RunStep:
        return ast.RunStep(
            self._ident(world),
            self.number(rounds),
            str(unit),
            self._span_of(keyword, every),
            every=every,
        )

    def wait_step(self, keyword: Token, duration: ast.Duration) -> ast.WaitStep:
        return ast.WaitStep(duration, self._span_of(keyword, duration))

    @v_args(inline=False)
    def interview_step(self, items: list[Any]) -> ast.InterviewStep:
        keyword, group, _by, interviewer, *rest = items
        questions = tuple(self._str(t) for t in rest if t.type != "COMMA")
        return ast.InterviewStep(
            group, self._ident(interviewer), questions, self._span_of(keyword, rest[-1])
        )

    @v_args(inline=False)
    def group(self, items: list[Any]) -> tuple[ast.Ref, ...]:
        return tuple(i for i in items if isinstance(i, ast.Ref))

    def think_step(self, keyword: Token, group: tuple[ast.Ref, ...], text: Token) -> ast.ThinkStep:
        return ast.ThinkStep(group, self._str(text), self._span_of(keyword, text))

    def tell_step(self, keyword: Token, group: tuple[ast.Ref, ...], text: Token) -> ast.TellStep:
        return ast.TellStep(group, self._str(text), self._span_of(keyword, text))

    def converse_step(
        self,
        keyword: Token,
        group: tuple[ast.Ref, ...],
        _with: Token,
        partner: Token,
        turns: Token,
        unit: Token,
        goal: Token,
    ) -> ast.ConverseStep:
        return ast.ConverseStep(
            group,
            self._ident(partner),
            self.number(turns),
            self._str(goal),
            str(unit),
            self._span_of(keyword, goal),
        )

    def goal_step(self, keyword: Token, group: tuple[ast.Ref, ...], text: Token) -> ast.GoalStep:
        return ast.GoalStep(group, self._str(text), self._span_of(keyword, text))

    def context_step(self, keyword: Token, world: Token, text: Token) -> ast.ContextStep:
        return ast.ContextStep(self._ident(world), self._str(text), self._span_of(keyword, text))

    def checkpoint_step(self, keyword: Token, name: Token) -> ast.CheckpointStep:
        return ast.CheckpointStep(self._ident(name), self._span_of(keyword, name))

    # extract -------------------------------------------------------------------

    @v_args(inline=False)
    def extract(self, items: list[Any]) -> ast.Extract:
        keyword, overall, _from, source, _at, at, *rest = items
        fields = tuple(i for i in rest if isinstance(i, ast.Field))
        first = source[0]
        world = ast.Ident(first.parts[0], first.span)
        # One plain name is all `world` says (the tree of a v1 block); a group is kept whole.
        single = len(source) == 1 and len(first.parts) == 1
        return ast.Extract(
            world,
            fields,
            self._span_of(keyword, rest[-1]),
            source=() if single else source,
            at=self._ident(at) if at is not None else None,
            overall=overall is not None,
        )

    def field(self, name: Token, field_type: ast.FieldType, text: Token | None) -> ast.Field:
        description = self._str(text) if text is not None else None
        return ast.Field(
            self._ident(name), field_type, description, self._span_of(name, text or field_type)
        )

    def int_type(self, keyword: Token, bounds: ast.Range | None) -> ast.IntType:
        return ast.IntType(bounds, self._span_of(keyword, bounds))

    def float_type(self, keyword: Token, bounds: ast.Range | None) -> ast.FloatType:
        return ast.FloatType(bounds, self._span_of(keyword, bounds))

    def bool_type(self, keyword: Token) -> ast.BoolType:
        return ast.BoolType(self._span_of(keyword))

    def text_type(self, keyword: Token) -> ast.TextType:
        return ast.TextType(self._span_of(keyword))

    def enum_type(self, keyword: Token, members: ast.ListValue) -> ast.EnumType:
        return ast.EnumType(members, self._span_of(keyword, members))

    def list_type(self, keyword: Token, _of: Token, _text: Token) -> ast.ListType:
        return ast.ListType(self._span_of(keyword, _text))

    def rank_type(self, keyword: Token, members: ast.ListValue) -> ast.RankType:
        return ast.RankType(members, self._span_of(keyword, members))

    # analyze -------------------------------------------------------------------

    @v_args(inline=False)
    def analyze(self, items: list[Any]) -> ast.Analyze:
        statements = tuple(i for i in items if not isinstance(i, Token))
        return ast.Analyze(statements, self._span_of(items[0], items[-1]))

    def compare_stmt(self, keyword: Token, name: Token, _by: Token, by: Token) -> ast.CompareStmt:
        return ast.CompareStmt(self._ident(name), self._ident(by), self._span_of(keyword, by))

    def summarize_stmt(
        self, keyword: Token, name: Token, _by: Token, by: Token
    ) -> ast.SummarizeStmt:
        return ast.SummarizeStmt(self._ident(name), self._ident(by), self._span_of(keyword, by))

    @v_args(inline=False)
    def funnel_stmt(self, items: list[Token]) -> ast.FunnelStmt:
        names = tuple(self._ident(t) for t in items[1:] if t.type == "NAME")
        return ast.FunnelStmt(names, self._span_of(items[0], items[-1]))

    def expect_between(
        self,
        keyword: Token,
        aggregate: ast.Aggregate,
        filter_: ast.Filter | None,
        _between: Token,
        low: Any,
        _and: Token,
        high: Any,
    ) -> ast.ExpectBetween:
        low_v, high_v = self._value(low), self._value(high)
        assert isinstance(low_v, ast.Number | ast.Percent)
        assert isinstance(high_v, ast.Number | ast.Percent)
        return ast.ExpectBetween(
            aggregate, low_v, high_v, self._span_of(keyword, high_v), filter=filter_
        )

    def expect_compare(
        self,
        keyword: Token,
        aggregate: ast.Aggregate,
        filter_: ast.Filter | None,
        comparator: Token,
        bound: Any,
    ) -> ast.ExpectCompare:
        value = self._value(bound)
        assert isinstance(value, ast.Number | ast.Percent)
        return ast.ExpectCompare(
            aggregate, str(comparator), value, self._span_of(keyword, value), filter=filter_
        )

    def expect_versus(
        self,
        keyword: Token,
        aggregate: ast.Aggregate,
        filter_: ast.Filter | None,
        comparator: Token,
        other: ast.Aggregate,
        other_filter: ast.Filter | None,
    ) -> ast.ExpectVersus:
        end = other_filter if other_filter is not None else other
        return ast.ExpectVersus(
            aggregate,
            str(comparator),
            other,
            self._span_of(keyword, end),
            filter=filter_,
            other_filter=other_filter,
        )

    def comparator(self, token: Token) -> Token:
        return token

    def agg_filter(
        self, keyword: Token, subject: Any, equality: Token | None, value: Any
    ) -> ast.Filter:
        ref = self._value(subject)
        assert isinstance(ref, ast.Ref)
        shown = self._value(value) if value is not None else None
        return ast.Filter(
            ref,
            str(equality) if equality is not None else None,
            shown,
            self._span_of(keyword, shown if shown is not None else ref),
        )

    def validate_stmt(
        self,
        keyword: Token,
        name: Token,
        _by: Token | None,
        by: Token | None,
        _against: Token,
        path: Token,
        _column: Token | None,
        column: Token | None,
    ) -> ast.ValidateStmt:
        path_value = self._value(path)
        assert isinstance(path_value, ast.Str)
        column_value = self._value(column) if column is not None else None
        assert column_value is None or isinstance(column_value, ast.Str)
        end = column_value if column_value is not None else path_value
        return ast.ValidateStmt(
            self._ident(name),
            self._ident(by) if by is not None else None,
            path_value,
            column_value,
            self._span_of(keyword, end),
        )

    def aggregate(
        self,
        function: Token,
        _lpar: Token,
        name: Token,
        comparator: Token | None,
        value: Any,
        rpar: Token,
    ) -> ast.Aggregate:
        return ast.Aggregate(
            self._ident(function),
            self._ident(name),
            str(comparator) if comparator is not None else None,
            self._value(value) if value is not None else None,
            self._span_of(function, rpar),
        )


_PUNCTUATION = {"LBRACKET", "RBRACKET", "COMMA", "LBRACE", "RBRACE"}


def _item_span(source: SourceFile, item: Any) -> Span:
    if isinstance(item, Token):
        return _token_span(source, item)
    span = getattr(item, "span", None)
    if isinstance(span, Span):
        return span
    raise AssertionError(f"no span for {item!r}")
