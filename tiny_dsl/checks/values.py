"""Reading a block's properties with the form and range each one expects.

The grammar accepts any property with any value in any block, so that a typo
can be named with a "did you mean" here rather than as a syntax error. These
readers turn `ast` values into Python values and report, for every value that
does not fit, what was expected and an example of how to write it. Each
returns None after reporting, so the caller simply skips what it could not read.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks.context import Context
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

Number = int | float
# Anything a reader may be handed: a value, a block written where a value was
# expected, or a distribution's key.
Node = ast.Value | ast.Block | ast.Ident


def describe(node: Node) -> str:
    """How a value is named to the author: "a string", "the name `x`"."""
    if isinstance(node, ast.Str):
        return "a string"
    if isinstance(node, ast.Number):
        return f"the number {node.raw or node.value}"
    if isinstance(node, ast.Range):
        return "a range"
    if isinstance(node, ast.Percent):
        return "a percentage"
    if isinstance(node, ast.Money):
        return "an amount of money"
    if isinstance(node, ast.Duration):
        return "a duration"
    if isinstance(node, ast.ListValue):
        return "a list"
    if isinstance(node, ast.Ref):
        return f"the name `{node.dotted}`"
    if isinstance(node, ast.Ident):
        return f"the name `{node.name}`"
    if isinstance(node, ast.Phrase):
        return "several values in a row"
    if isinstance(node, ast.Seq):
        return "a comma-separated list"
    return "a block"


def show_number(node: ast.Number) -> str:
    return node.raw or str(node.value)


def entry_key_span(entry: ast.Entry) -> Span:
    return entry.kind.span if isinstance(entry, ast.NamedBlock) else entry.key.span


def entry_key(entry: ast.Entry) -> str:
    return ast.key_text(entry.kind if isinstance(entry, ast.NamedBlock) else entry.key)


# ------------------------------------------------------------------ the checks


def check_wrong_type(ctx: Context, key: str, node: Node, expected: str, example: str) -> None:
    """A value of the wrong form: name the expected form and show an example."""
    helps = [f"for example: `{key} {example}`"]
    if isinstance(node, ast.Phrase):
        helps.append("each property goes on its own line, or ends with `;`")
    ctx.report(
        diag.error(
            codes.WRONG_TYPE,
            f"`{key}` expects {expected}, found {describe(node)}",
            node.span,
            f"expected {expected}",
            help=helps,
        )
    )


def check_out_of_range(
    ctx: Context,
    key: str,
    span: Span,
    shown: str,
    low: Number | None,
    high: Number | None,
    *,
    high_exclusive: bool = False,
    unit: str = "",
) -> None:
    """A number outside what its property allows."""
    if low is not None and high is not None:
        bound = f"from {low}{unit} to {'below ' if high_exclusive else ''}{high}{unit}"
    elif low is not None:
        bound = f"at least {low}{unit}" if low != 0 or unit else "zero or more"
    else:
        bound = f"{'below' if high_exclusive else 'at most'} {high}{unit}"
    ctx.report(
        diag.error(
            codes.OUT_OF_RANGE,
            f"`{key}` must be {bound}, found {shown}",
            span,
            "out of range",
            help=[f"`{key}` accepts values {bound}"],
        )
    )


def check_too_large(ctx: Context, key: str, node: ast.Number) -> None:
    """A number too large to compute with (beyond a double's range)."""
    ctx.report(
        diag.error(
            codes.OUT_OF_RANGE,
            f"`{key}` is too large: {show_number(node)[:20]}...",
            node.span,
            "too large",
            help=[f"write a realistic value for `{key}`"],
        )
    )


def as_float(ctx: Context, key: str, node: ast.Number) -> float | None:
    """The number as a finite float, or None after reporting one too large to be one."""
    try:
        value = float(node.value)
    except OverflowError:
        value = math.inf
    if math.isfinite(value):
        return value
    check_too_large(ctx, key, node)
    return None


def check_invalid_choice(
    ctx: Context, key: str, word: str, span: Span, choices: Sequence[str]
) -> None:
    """A word that is not one of the property's fixed choices."""
    suggestion = diag.did_you_mean(word, choices)
    listed = ", ".join(f"`{c}`" for c in choices)
    ctx.report(
        diag.error(
            codes.INVALID_CHOICE,
            f"`{word}` is not a valid `{key}`",
            span,
            f"expected one of {listed}",
            help=[suggestion] if suggestion else [f"`{key}` is one of {listed}"],
        )
    )


def check_missing_property(ctx: Context, key: str, owner: str, span: Span, example: str) -> None:
    """A required property that is not set."""
    ctx.report(
        diag.error(
            codes.MISSING_PROPERTY,
            f"{owner} has no `{key}`",
            span,
            f"`{key}` is required",
            help=[f"add `{key} {example}` to the block"],
        )
    )


def check_duplicate_property(ctx: Context, key: str, span: Span, first: Span) -> None:
    """The same property twice in one block."""
    ctx.report(
        diag.error(
            codes.DUPLICATE_PROPERTY,
            f"`{key}` is set twice",
            span,
            "set again here",
            secondary=[Label(first, "first set here")],
            help=["remove one of them"],
        )
    )


def check_unknown_property(
    ctx: Context,
    entry: ast.Entry,
    owner: str,
    known: Collection[str],
    *,
    warning: bool = False,
    hint: str = "",
) -> None:
    """A property its block does not accept; for personas only a warning."""
    key = entry_key(entry)
    suggestion = diag.did_you_mean(key, known)
    listed = ", ".join(f"`{k}`" for k in known)
    helps = [suggestion or f"{owner} accepts {listed}", hint]
    if warning:
        ctx.report(
            diag.warning(
                codes.UNKNOWN_PERSONA_FIELD,
                f"`{key}` is not a usual TinyTroupe persona field; it is kept as written",
                entry_key_span(entry),
                "unusual field",
                help=helps,
            )
        )
        return
    ctx.report(
        diag.error(
            codes.UNKNOWN_PROPERTY,
            f"`{key}` is not a property of {owner}",
            entry_key_span(entry),
            "unknown property",
            help=helps,
        )
    )


def check_reversed_range(ctx: Context, key: str, node: ast.Range, *, strict: bool) -> bool:
    """True when the range is in order; otherwise report it (`strict`: low must be below high)."""
    low, high = node.low.value, node.high.value
    if low < high or (low == high and not strict):
        return True
    ordered = "below" if strict else "at most"
    ctx.report(
        diag.error(
            codes.REVERSED_RANGE,
            f"the range of `{key}` is reversed or empty: {show_number(node.low)} is not "
            f"{ordered} {show_number(node.high)}",
            node.span,
            "low end first",
            help=[
                f"write the smaller number first: "
                f"`{show_number(node.high)}..{show_number(node.low)}`"
                if low > high
                else "make the range wider"
            ],
        )
    )
    return False


# ------------------------------------------------------------------- readers


def read_string(ctx: Context, key: str, node: Node) -> str | None:
    if isinstance(node, ast.Str):
        return node.value
    check_wrong_type(ctx, key, node, "a string", '"..."')
    return None


def read_int(
    ctx: Context,
    key: str,
    node: Node,
    low: int | None = None,
    high: int | None = None,
    example: str = "1",
) -> int | None:
    if not isinstance(node, ast.Number) or not isinstance(node.value, int):
        check_wrong_type(ctx, key, node, "a whole number", example)
        return None
    value = node.value
    if (low is not None and value < low) or (high is not None and value > high):
        check_out_of_range(ctx, key, node.span, show_number(node), low, high)
        return None
    return value


def read_number(
    ctx: Context,
    key: str,
    node: Node,
    low: Number | None = None,
    high: Number | None = None,
    example: str = "0.5",
) -> float | None:
    if not isinstance(node, ast.Number):
        check_wrong_type(ctx, key, node, "a number", example)
        return None
    value = as_float(ctx, key, node)
    if value is None:
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        check_out_of_range(ctx, key, node.span, show_number(node), low, high)
        return None
    return value


def read_word(ctx: Context, key: str, node: Node, example: str) -> str | None:
    """A single name (or a string, for words that are not valid names, like `openai-compatible`)."""
    if isinstance(node, ast.Ref) and len(node.parts) == 1:
        return node.parts[0]
    if isinstance(node, ast.Str):
        return node.value
    check_wrong_type(ctx, key, node, "a name", example)
    return None


def read_choice(ctx: Context, key: str, node: Node, choices: Sequence[str]) -> str | None:
    word = read_word(ctx, key, node, choices[0])
    if word is None:
        return None
    if word not in choices:
        check_invalid_choice(ctx, key, word, node.span, choices)
        return None
    return word


def read_items(ctx: Context, key: str, node: Node, example: str) -> tuple[ast.Value, ...] | None:
    """The items of `[a, b]` or of a comma list `a, b`."""
    if isinstance(node, ast.ListValue | ast.Seq):
        return node.items
    check_wrong_type(ctx, key, node, "a list", example)
    return None


def read_string_list(ctx: Context, key: str, node: Node) -> list[str] | None:
    items = read_items(ctx, key, node, '["...", "..."]')
    if items is None:
        return None
    strings = [read_string(ctx, key, item) for item in items]
    return [s for s in strings if s is not None] if all(s is not None for s in strings) else None


# -------------------------------------------------------------------- blocks


class Props:
    """The entries of one block, by key, with repeats reported.

    `known` are the properties the block accepts; entries with other keys, and
    named blocks (`segment x { }`) whose kind is not in `named`, are collected
    in `unknown` for the caller to judge (an error, a persona warning, a
    demographics distribution or a segment constraint).
    """

    def __init__(
        self,
        ctx: Context,
        block: ast.Block,
        owner: str,
        where: Span,
        known: Collection[str],
        named: Collection[str] = (),
    ):
        self.ctx = ctx
        self.owner = owner
        self.where = where
        self.known = known
        self.entries: dict[str, ast.Property | ast.SubBlock] = {}
        self.named: dict[str, list[ast.NamedBlock]] = {kind: [] for kind in named}
        self.unknown: list[ast.Entry] = []
        first: dict[str, Span] = {}
        for entry in block.entries:
            key = entry_key(entry)
            if isinstance(entry, ast.NamedBlock) and key in self.named:
                self.named[key].append(entry)
                continue
            if not isinstance(entry, ast.NamedBlock):
                if key in first:
                    check_duplicate_property(ctx, key, entry.key.span, first[key])
                    continue
                first[key] = entry.key.span
            if isinstance(entry, ast.NamedBlock) or not (
                isinstance(entry.key, ast.Ident) and key in known
            ):
                self.unknown.append(entry)
                continue
            self.entries[key] = entry

    def report_unknown(self, *, warning: bool = False) -> None:
        for entry in self.unknown:
            check_unknown_property(self.ctx, entry, self.owner, self.known, warning=warning)

    def value(self, key: str, *, required: str = "") -> ast.Value | ast.Block | None:
        """The value of `key` (a block if one was written); `required`: an example if missing."""
        entry = self.entries.get(key)
        if entry is None:
            if required:
                check_missing_property(self.ctx, key, self.owner, self.where, required)
            return None
        return entry.value if isinstance(entry, ast.Property) else entry.body

    def string(self, key: str, *, required: str = "") -> str | None:
        node = self.value(key, required=required)
        return None if node is None else read_string(self.ctx, key, node)

    def integer(
        self,
        key: str,
        low: int | None = None,
        high: int | None = None,
        *,
        required: str = "",
    ) -> int | None:
        node = self.value(key, required=required)
        return None if node is None else read_int(self.ctx, key, node, low, high, required or "1")

    def number(
        self, key: str, low: Number | None = None, high: Number | None = None
    ) -> float | None:
        node = self.value(key)
        return None if node is None else read_number(self.ctx, key, node, low, high)

    def choice(self, key: str, choices: Sequence[str], *, required: bool = False) -> str | None:
        node = self.value(key, required=choices[0] if required else "")
        return None if node is None else read_choice(self.ctx, key, node, choices)
