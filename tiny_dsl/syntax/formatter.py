"""Syntax tree to canonical text: the layout `tts fmt` writes.

The formatter prints the syntax tree, not the tokens: whatever the author's
spacing, the same tree gives the same text (but for one column an `extract`
block may keep, below), which is what makes it idempotent.
What the tree does not hold, comments and blank lines, is taken from the
source the tree was parsed from (`Module.comments` and the node spans). The
contract, checked by the tests on every example and on generated trees, is
`parse(format(x)) == parse(x)` and `format(format(x)) == format(x)`.

Layout rules (the normative examples in `scenarios/` are fixed points):

- Two spaces of indentation per block level; one statement per line.
  Statements joined with `;` (`{ female 50.5%; male 49.5% }`) are split one per
  line. `{` ends the line that opens the block; `}` stands on its own line. A
  block with no entries and no comments is printed `{}`.
- One space between the words of a statement. Lists are `[a, b, "c"]` on one
  line (a trailing comma is dropped, a list written over several lines is
  joined); comma lists are `a, b, c`; ranges `1..10`; references `a.b`;
  aggregates `share(field == value)`.
- Strings, numbers and percentages are printed exactly as written (`raw`):
  escapes, triple-quoted strings and their inner lines are never touched.
  Trees built by hand may leave `raw` empty; the value is then spelled
  canonically (`"..."` with escapes, numbers in positional notation).
- `extract` blocks are aligned in columns: field names are padded to the
  longest name plus one space, or to the column at which the author started
  every field's type, when that is further right (a wider column chosen by
  hand is kept); types are padded to the longest type among the fields that
  have a description, plus one space, unless that type is wider than 32
  characters (a long `enum [...]`), when each description follows its type
  after one space; a field without a description gets no trailing padding.
  Nothing else is aligned: distribution entries such as `18..24 11.8%` keep
  one space, so that adding an entry never re-indents its neighbours.
- A `touch NAME { ... }` block of an intervention's variant that holds only
  properties and no comment is printed on one line, its properties joined
  with `; ` (`touch first { channel email; content "..." }`); the names of
  the one-line touches of one variant are padded to the longest, so the
  touches of a campaign read as a table.
- Comments are kept, each on the line it belongs to. A comment alone on its
  line is printed above the next statement, at that statement's indentation;
  one before a `}` stays inside the block, indented as its entries; one after
  the last declaration stays at the end of the file. A comment that follows
  code on its line stays at the end of that line, two spaces after the code
  (the examples show none; two spaces is Python's convention and keeps `#`
  easy to see). A comment inside a statement that the formatter joins onto
  one line (a list over several lines) moves above that statement, since
  nothing may follow it on its line any more. Comment text is kept as written
  (trailing spaces aside): it may be commented-out code.
- Blank lines: one blank line is kept wherever the author had one or more
  between two statements, comments or declarations; runs collapse to one.
  There is never a blank line right after `{`, right before `}`, or at the
  start of the file. Two top-level declarations are separated by at least one
  blank line when either of them is a block; one-line declarations (`import`,
  `persona x from "..."`) may stay on consecutive lines.
- The file ends with exactly one newline (an empty file stays empty).

`format_module(module)` without a source prints a tree built in code (for
instance by the property tests): no comments, and only the blank lines the
rules above require.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import assert_never

from tiny_dsl.diagnostics import Diagnostic
from tiny_dsl.source import SourceFile, Span
from tiny_dsl.syntax import ast
from tiny_dsl.syntax.parser import parse

_INDENT = "  "
_TRAILING_GAP = "  "


def format_source(source: SourceFile) -> tuple[str | None, list[Diagnostic]]:
    """The canonical text of a file, or None and the syntax errors that prevent it.

    A file that does not parse is never formatted: printing the part of the
    tree that error recovery salvaged would silently drop the broken lines.
    """
    module, diagnostics = parse(source)
    if not module.complete or any(d.is_error for d in diagnostics):
        return None, diagnostics
    return format_module(module, source), diagnostics


def format_module(module: ast.Module, source: SourceFile | None = None) -> str:
    """The canonical text of `module`.

    `source` is the text `module` was parsed from; its comments and blank
    lines are placed by the node spans. Without it, the tree alone is printed.
    """
    comments = module.comments if source is not None else ()
    printer = _Printer(_CommentIndex(comments))
    for index, declaration in enumerate(module.declarations):
        printer.declaration(declaration, index)
    layout = _Layout(printer.lines, module.declarations, source)
    return layout.render(comments)


# ------------------------------------------------------------------ values


def _value(value: ast.Value) -> str:
    match value:
        case ast.Str():
            return value.raw or _spell_string(value.value)
        case ast.Number():
            return _number(value)
        case ast.Percent():
            return value.raw or _spell_number(value.value, float_marker=False) + "%"
        case ast.Range():
            return f"{_number(value.low)}..{_number(value.high)}"
        case ast.Money():
            return f"{_number(value.amount)} {value.currency}"
        case ast.Duration():
            return f"{_number(value.amount)} {value.unit}"
        case ast.ListValue():
            return "[" + ", ".join(_value(item) for item in value.items) + "]"
        case ast.Ref():
            return value.dotted
        case ast.Phrase():
            return " ".join(_value(item) for item in value.items)
        case ast.Seq():
            return ", ".join(_value(item) for item in value.items)
        case _:
            assert_never(value)


def _number(number: ast.Number) -> str:
    return number.raw or _spell_number(number.value, float_marker=True)


def _key(key: ast.Key) -> str:
    if isinstance(key, ast.Ident):
        return key.name
    return _value(key)


def _spell_number(value: int | float, *, float_marker: bool) -> str:
    """A number in the grammar's notation (`-?digits[.digits]`), for trees built in code.

    With `float_marker`, an integral float keeps `.0` so that it reads back as
    a float; a percentage is always a float, so `20%` needs none.
    """
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"{value} cannot be written in a .tts file")
    text = format(Decimal(repr(value)), "f").removesuffix(".0")
    return text + ".0" if float_marker and "." not in text else text


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _spell_string(text: str) -> str:
    """A one-line string literal for `text`, for trees built in code."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


# ------------------------------------------------------------ statements


def _step(step: ast.Step) -> str:
    match step:
        case ast.BroadcastStep():
            return f"broadcast {step.world.name} {_value(step.text)}"
        case ast.DeliverStep():
            touch = f".{step.touch.name}" if step.touch is not None else ""
            return f"deliver {step.intervention.name}{touch} in {step.world.name}"
        case ast.AskStep():
            return f"ask {step.world.name} {_value(step.text)}"
        case ast.RunStep():
            every = f" every {_value(step.every)}" if step.every is not None else ""
            return f"run {step.world.name} {_number(step.rounds)} {step.unit}{every}"
        case ast.WaitStep():
            return f"wait {_value(step.duration)}"
        case ast.InterviewStep():
            group = ", ".join(ref.dotted for ref in step.group)
            questions = ", ".join(_value(q) for q in step.questions)
            return f"interview {group} by {step.interviewer.name} {questions}"
        case ast.ThinkStep():
            return f"think {_group(step.group)} {_value(step.text)}"
        case ast.CheckpointStep():
            return f"checkpoint {step.name.name}"
        case ast.TellStep():
            return f"tell {_group(step.group)} {_value(step.text)}"
        case ast.ConverseStep():
            return (
                f"converse {_group(step.group)} with {step.partner.name} "
                f"{_number(step.turns)} {step.unit} {_value(step.goal)}"
            )
        case ast.GoalStep():
            return f"goal {_group(step.group)} {_value(step.text)}"
        case ast.ContextStep():
            return f"context {step.world.name} {_value(step.text)}"
        case _:
            assert_never(step)


def _group(group: tuple[ast.Ref, ...]) -> str:
    return ", ".join(ref.dotted for ref in group)


def _field_type(field_type: ast.FieldType) -> str:
    match field_type:
        case ast.IntType() | ast.FloatType():
            word = "int" if isinstance(field_type, ast.IntType) else "float"
            return word if field_type.range is None else f"{word} {_value(field_type.range)}"
        case ast.BoolType():
            return "bool"
        case ast.TextType():
            return "text"
        case ast.EnumType():
            return f"enum {_value(field_type.members)}"
        case ast.ListType():
            return "list of text"
        case ast.RankType():
            return f"rank {_value(field_type.members)}"
        case _:
            assert_never(field_type)


def _extract_header(block: ast.Extract) -> str:
    """`extract [overall] from SOURCE [at CHECKPOINT]`."""
    source = ", ".join(ref.dotted for ref in block.source) if block.source else block.world.name
    header = "extract overall from " if block.overall else "extract from "
    header += source
    return header if block.at is None else f"{header} at {block.at.name}"


# A described type wider than this is not padded to: one long `enum [...]` would push
# every description of the block far to the right.
_ALIGNED_TYPE_MAX = 32


def _fields(fields: Sequence[ast.Field]) -> list[str]:
    """The lines of an `extract` block, in columns (see the module docstring)."""
    name_width = max(max((len(f.name.name) for f in fields), default=0) + 1, _kept_width(fields))
    types = [_field_type(f.type) for f in fields]
    described = [t for t, f in zip(types, fields, strict=True) if f.description is not None]
    widest = max((len(t) for t in described), default=0)
    type_width = widest + 1 if widest <= _ALIGNED_TYPE_MAX else 0
    lines = []
    for item, type_text in zip(fields, types, strict=True):
        line = item.name.name.ljust(name_width)
        if item.description is None:
            line += type_text
        else:
            line += type_text.ljust(type_width or len(type_text) + 1) + _value(item.description)
        lines.append(line)
    return lines


def _kept_width(fields: Sequence[ast.Field]) -> int:
    """The name column the author wrote, when every field's type starts at the same
    column after names that start at the same column (0: none, or a tree built in code)."""
    widths = {f.type.span.column - f.name.span.column for f in fields}
    starts = {f.name.span.column for f in fields}
    if len(widths) != 1 or len(starts) != 1 or 0 in starts:
        return 0
    return widths.pop()


def _aggregate(aggregate: ast.Aggregate, filter_: ast.Filter | None = None) -> str:
    inner = aggregate.field.name
    if aggregate.comparator is not None and aggregate.value is not None:
        inner += f" {aggregate.comparator} {_value(aggregate.value)}"
    text = f"{aggregate.function.name}({inner})"
    if filter_ is not None:
        text += f" for {_value(filter_.subject)}"
        if filter_.comparator is not None and filter_.value is not None:
            text += f" {filter_.comparator} {_value(filter_.value)}"
    return text


def _analysis(statement: ast.Analysis) -> str:
    match statement:
        case ast.CompareStmt():
            return f"compare {statement.field.name} by {statement.by.name}"
        case ast.SummarizeStmt():
            return f"summarize {statement.field.name} by {statement.by.name}"
        case ast.FunnelStmt():
            return "funnel " + ", ".join(name.name for name in statement.fields)
        case ast.ExpectBetween():
            low, high = _value(statement.low), _value(statement.high)
            aggregate = _aggregate(statement.aggregate, statement.filter)
            return f"expect {aggregate} between {low} and {high}"
        case ast.ExpectCompare():
            bound = _value(statement.bound)
            aggregate = _aggregate(statement.aggregate, statement.filter)
            return f"expect {aggregate} {statement.comparator} {bound}"
        case ast.ExpectVersus():
            left = _aggregate(statement.aggregate, statement.filter)
            right = _aggregate(statement.other, statement.other_filter)
            return f"expect {left} {statement.comparator} {right}"
        case ast.ValidateStmt():
            text = f"validate {statement.field.name}"
            if statement.by is not None:
                text += f" by {statement.by.name}"
            text += f" against {_value(statement.path)}"
            if statement.column is not None:
                text += f" column {_value(statement.column)}"
            return text
        case _:
            assert_never(statement)


# ----------------------------------------------------------------- lines


class _Role(Enum):
    OPEN = "open"  # `header {`
    CLOSE = "close"  # `}`
    ITEM = "item"  # a whole statement, or a block printed `{}`
    COMMENT = "comment"


@dataclass
class _Line:
    """One output line of code, and the source offsets that locate it.

    `start`..`end` covers the tokens the line prints. An opening line is
    located by its header's first offset alone (`start == end`): a header
    never spans lines, as the grammar admits no newline before `{`.
    """

    depth: int
    text: str
    role: _Role
    start: int
    end: int
    declaration: int
    leading: list[_Leading] = field(default_factory=list)
    trailing: ast.Comment | None = None


@dataclass(frozen=True)
class _Leading:
    """A comment printed on its own line above a code line.

    `anchor` is the source line used for blank-line decisions: the comment's
    own line, or the statement's first line for a comment moved out of it.
    """

    comment: ast.Comment
    anchor: int


class _CommentIndex:
    """Answers "is there a comment between these offsets?" for block layout."""

    def __init__(self, comments: Sequence[ast.Comment]):
        self.starts = [c.span.start for c in comments]

    def any_between(self, start: int, end: int) -> bool:
        index = bisect.bisect_right(self.starts, start)
        return index < len(self.starts) and self.starts[index] < end


class _Printer:
    """Turns declarations into code lines, in source order."""

    def __init__(self, comments: _CommentIndex):
        self.comments = comments
        self.lines: list[_Line] = []
        self.declaration_index = 0

    def _emit(self, depth: int, text: str, role: _Role, start: int, end: int) -> None:
        self.lines.append(_Line(depth, text, role, start, end, self.declaration_index))

    def _braced(
        self,
        header: str,
        depth: int,
        span_start: int,
        span_end: int,
        body: Callable[[int], None],
        empty: bool,
    ) -> None:
        """A block: `header {`, its body one level deeper, `}`.

        `span_start`..`span_end` runs from the header's first token to `}`.
        """
        if empty and not self.comments.any_between(span_start, span_end):
            self._emit(depth, header + " {}", _Role.ITEM, span_start, span_end)
            return
        self._emit(depth, header + " {", _Role.OPEN, span_start, span_start)
        body(depth + 1)
        self._emit(depth, "}", _Role.CLOSE, span_end - 1, span_end)

    def _block(self, header: str, depth: int, start: int, block: ast.Block) -> None:
        one_line = [
            entry
            for entry in block.entries
            if isinstance(entry, ast.NamedBlock) and self._one_line_touch(entry)
        ]
        name_width = max((len(entry.name.name) for entry in one_line), default=0)

        def body(inner: int) -> None:
            for entry in block.entries:
                if isinstance(entry, ast.NamedBlock) and entry in one_line:
                    self._touch_line(entry, inner, name_width)
                else:
                    self._entry(entry, inner)

        self._braced(header, depth, start, block.span.end, body, not block.entries)

    def _one_line_touch(self, entry: ast.NamedBlock) -> bool:
        """A `touch` block of properties alone and no comment, printed on one line."""
        return (
            _key(entry.kind) == "touch"
            and bool(entry.body.entries)
            and all(isinstance(item, ast.Property) for item in entry.body.entries)
            and not self.comments.any_between(entry.span.start, entry.span.end)
        )

    def _touch_line(self, entry: ast.NamedBlock, depth: int, name_width: int) -> None:
        properties = "; ".join(
            f"{_key(item.key)} {_value(item.value)}"
            for item in entry.body.entries
            if isinstance(item, ast.Property)
        )
        text = f"{_key(entry.kind)} {entry.name.name.ljust(name_width)} {{ {properties} }}"
        self._emit(depth, text, _Role.ITEM, entry.span.start, entry.span.end)

    def _entry(self, entry: ast.Entry, depth: int) -> None:
        match entry:
            case ast.Property():
                text = f"{_key(entry.key)} {_value(entry.value)}"
                self._emit(depth, text, _Role.ITEM, entry.span.start, entry.span.end)
            case ast.SubBlock():
                self._block(_key(entry.key), depth, entry.span.start, entry.body)
            case ast.NamedBlock():
                header = f"{_key(entry.kind)} {entry.name.name}"
                self._block(header, depth, entry.span.start, entry.body)
            case _:
                assert_never(entry)

    def _statements(self, span: Span, header: str, lines: Sequence[tuple[str, int, int]]) -> None:
        """A timeline, extract or analyze block: one pre-printed line per statement."""

        def body(inner: int) -> None:
            for text, start, end in lines:
                self._emit(inner, text, _Role.ITEM, start, end)

        self._braced(header, 0, span.start, span.end, body, not lines)

    def declaration(self, declaration: ast.Declaration, index: int) -> None:
        self.declaration_index = index
        start, end = declaration.span.start, declaration.span.end
        match declaration:
            case ast.Import():
                self._emit(0, f"import {_value(declaration.path)}", _Role.ITEM, start, end)
            case ast.PersonaFile() if declaration.body is not None:
                header = f"persona {declaration.name.name} from {_value(declaration.path)}"
                self._block(header, 0, start, declaration.body)
            case ast.Param():
                text = f"param {declaration.name.name} {_value(declaration.value)}"
                self._emit(0, text, _Role.ITEM, start, end)
            case ast.PersonaFile() | ast.FragmentFile():
                word = "persona" if isinstance(declaration, ast.PersonaFile) else "fragment"
                text = f"{word} {declaration.name.name} from {_value(declaration.path)}"
                self._emit(0, text, _Role.ITEM, start, end)
            case ast.Demographics(path=ast.Str() as path):
                text = f"demographics {declaration.name.name} from {_value(path)}"
                self._emit(0, text, _Role.ITEM, start, end)
            case ast.Population(path=ast.Str() as path):
                header = f"population {declaration.name.name} from {_value(path)}"
                if not declaration.body.entries and not self.comments.any_between(start, end):
                    self._emit(0, header, _Role.ITEM, start, end)
                else:
                    self._block(header, 0, start, declaration.body)
            case ast.Output():
                self._block("output", 0, start, declaration.body)
            case ast.ExternalAgent():
                self._block(f"agent {declaration.name.name} external", 0, start, declaration.body)
            case ast.Timeline():
                steps = [(_step(s), s.span.start, s.span.end) for s in declaration.steps]
                self._statements(declaration.span, "timeline", steps)
            case ast.Extract():
                texts = _fields(declaration.fields)
                spans = [(f.span.start, f.span.end) for f in declaration.fields]
                lines = [(t, s, e) for t, (s, e) in zip(texts, spans, strict=True)]
                header = _extract_header(declaration)
                self._statements(declaration.span, header, lines)
            case ast.Analyze():
                statements = [
                    (_analysis(s), s.span.start, s.span.end) for s in declaration.statements
                ]
                self._statements(declaration.span, "analyze", statements)
            case _:
                header = f"{_BLOCK_KEYWORDS[type(declaration)]} {declaration.name.name}"
                self._block(header, 0, start, declaration.body)


_BLOCK_KEYWORDS: dict[type, str] = {
    ast.Scenario: "scenario",
    ast.PersonaInline: "persona",
    ast.FragmentInline: "fragment",
    ast.Demographics: "demographics",
    ast.Population: "population",
    ast.World: "world",
    ast.Intervention: "intervention",
}
_ONE_LINE_DECLARATIONS = (ast.Import, ast.Param, ast.PersonaFile, ast.FragmentFile)


def _one_line(declaration: ast.Declaration) -> bool:
    """A declaration printed on one line: an import, a file persona or fragment without
    a body, a demographics file, a population from files without properties."""
    if isinstance(declaration, ast.PersonaFile):
        return declaration.body is None
    if isinstance(declaration, ast.Demographics | ast.Population) and declaration.path:
        return not declaration.body.entries
    return isinstance(declaration, _ONE_LINE_DECLARATIONS)


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Out:
    """One printed line with what the blank-line rules need to know about it.

    `first`/`last` are the source lines it came from (0 without a source).
    """

    depth: int
    text: str
    role: _Role
    first: int
    last: int
    declaration: int


class _Layout:
    """Places comments and blank lines around the code lines, then joins them."""

    def __init__(
        self,
        lines: list[_Line],
        declarations: Sequence[ast.Declaration],
        source: SourceFile | None,
    ):
        self.lines = lines
        self.source = source
        self.blocks = [not _one_line(d) for d in declarations]
        # blank_before[k]: how many of the source lines 1..k are blank.
        self.blank_before: list[int] = []
        if source is not None:
            count = 0
            for number in range(1, source.line_count + 1):
                self.blank_before.append(count)
                count += not source.line_text(number).strip()
            self.blank_before.append(count)

    def _line_of(self, offset: int) -> int:
        return self.source.position(offset)[0] if self.source is not None else 0

    def _attach(self, comments: Sequence[ast.Comment]) -> list[ast.Comment]:
        """Gives each comment to a code line; returns those after the last line.

        A comment inside a line's source range moves above it; one that
        follows a line's last token on the same source line trails it; any
        other comment stands above the next code line (inside the block, when
        that line is a `}`).
        """
        starts = [line.start for line in self.lines]
        at_end: list[ast.Comment] = []
        for comment in comments:
            offset = comment.span.start
            index = bisect.bisect_right(starts, offset) - 1
            if index >= 0:
                before = self.lines[index]
                if before.start < offset < before.end:
                    before.leading.append(_Leading(comment, self._line_of(before.start)))
                    continue
                if before.trailing is None and self._line_of(before.end) == comment.span.line:
                    before.trailing = comment
                    continue
            if index + 1 < len(self.lines):
                self.lines[index + 1].leading.append(_Leading(comment, comment.span.line))
            else:
                at_end.append(comment)
        return at_end

    def _outputs(self, comments: Sequence[ast.Comment]) -> list[_Out]:
        at_end = self._attach(comments)
        outputs: list[_Out] = []
        for line in self.lines:
            depth = line.depth + (line.role is _Role.CLOSE)
            for lead in line.leading:
                outputs.append(
                    _Out(
                        depth,
                        lead.comment.text,
                        _Role.COMMENT,
                        lead.anchor,
                        lead.anchor,
                        line.declaration,
                    )
                )
            text = line.text
            if line.trailing is not None:
                text += _TRAILING_GAP + line.trailing.text
            first, last = self._line_of(line.start), self._line_of(line.end)
            outputs.append(_Out(line.depth, text, line.role, first, last, line.declaration))
        after_all = len(self.blocks)
        for comment in at_end:
            line_number = comment.span.line
            outputs.append(
                _Out(0, comment.text, _Role.COMMENT, line_number, line_number, after_all)
            )
        return outputs

    def _separates_blocks(self, above: _Out, below: _Out) -> bool:
        """Whether `above` ends a declaration, `below` starts the next, and one is a block."""
        first, second = above.declaration, below.declaration
        if first == second or second >= len(self.blocks):
            return False
        return self.blocks[first] or self.blocks[second]

    def _blank_between(self, above: _Out, below: _Out) -> bool:
        if above.role is _Role.OPEN or below.role is _Role.CLOSE:
            return False
        if self._separates_blocks(above, below):
            return True
        if self.source is None or below.first - above.last < 2:
            return False
        return self.blank_before[below.first - 1] > self.blank_before[above.last]

    def render(self, comments: Sequence[ast.Comment]) -> str:
        printed: list[str] = []
        previous: _Out | None = None
        for out in self._outputs(comments):
            if previous is not None and self._blank_between(previous, out):
                printed.append("")
            printed.append(_INDENT * out.depth + out.text)
            previous = out
        return "\n".join(printed) + "\n" if printed else ""
