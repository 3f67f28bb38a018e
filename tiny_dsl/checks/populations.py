"""Demographics (the distributions members are sampled from) and populations.

A demographics block holds distributions: numeric ones with inclusive integer
brackets (`age { 18..24 12% }`) and categorical ones with labels
(`gender { female 50.5% }`). Shares must not exceed 100% (0.5 points of
tolerance for rounding). A categorical distribution that adds up to less than
99.5% leaves the rest to an implicit outcome `other`; a numeric one cannot,
since there would be no number to sample for the rest.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.adults import adult_segments
from tiny_dsl.checks.context import Context, Declared
from tiny_dsl.checks.personas import PERSONA_FIELDS, read_agent_model, resolve_fragments
from tiny_dsl.checks.specs import LocatedSpec, Origin, merge_fragment
from tiny_dsl.checks.values import (
    Props,
    as_float,
    check_out_of_range,
    check_reversed_range,
    check_unknown_property,
    check_wrong_type,
    entry_key,
    read_word,
    show_number,
)
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

DEMOGRAPHICS_FIELDS = ("title", "description", "source")
POPULATION_FIELDS = ("from", "size", "context")
# Population properties of language v2's generated people (`vary` is read apart:
# it is the one property a population may repeat).
POPULATION_PEOPLE_FIELDS = ("particularities", "model", "temperature")
VARY = "vary"
VARY_DEFAULT_VALUES = 10
VARY_VALUES = (2, 100)
# Columns every result row has: a `vary` dimension may not take their names.
RESULT_COLUMN_NAMES = ("agent", "name", "world", "population", "segment", "variant", "replicate")
SEGMENT_FIELDS = ("size", "particularities", "fragments")
RESERVED_ATTRIBUTES = SEGMENT_FIELDS
GENERAL = "general"  # the implicit segment of members in no declared segment
OTHER = "other"  # the implicit outcome of a categorical distribution under 100%
MAX_POPULATION = 100_000
TOLERANCE = 0.5  # percentage points
# An unknown label's help lists the valid ones, up to this many: a distribution
# of thousands of labels would otherwise repeat them all in every diagnostic.
MAX_LISTED_LABELS = 20


def check_demographics(ctx: Context, declared: Declared) -> None:
    """Read the descriptive fields and every distribution of a demographics block."""
    node = declared.node
    if not isinstance(node, ast.Demographics):
        return
    errors = ctx.error_count
    owner = f"demographics `{declared.name}`"
    props = Props(ctx, node.body, owner, node.name.span, DEMOGRAPHICS_FIELDS)
    title = props.string("title")
    description = props.string("description")
    source = props.string("source")
    distributions: list[m.Distribution] = []
    for entry in props.unknown:
        if isinstance(entry, ast.SubBlock) and isinstance(entry.key, ast.Ident):
            distribution = check_distribution(ctx, entry)
            if distribution is not None:
                distributions.append(distribution)
        else:
            check_unknown_property(
                ctx,
                entry,
                owner,
                DEMOGRAPHICS_FIELDS,
                hint="a distribution is a block: `gender { female 50%; male 50% }`",
            )
    if ctx.error_count == errors:
        ctx.demographics[declared.name] = m.Demographics(
            declared.name,
            title if title is not None else declared.name,
            description or "",
            source or "",
            tuple(distributions),
            node.span,
        )


def check_distribution(ctx: Context, entry: ast.SubBlock) -> m.Distribution | None:
    """One distribution: outcomes with percentage shares, numeric or categorical."""
    attribute = entry_key(entry)
    if attribute in RESERVED_ATTRIBUTES:
        check_reserved_name(
            ctx,
            attribute,
            entry.key.span,
            "a distribution",
            f"segments use `{attribute}` for their own setting",
        )
        return None
    props = Props(ctx, entry.body, f"`{attribute}`", entry.key.span, ())
    outcomes: list[tuple[ast.Key, ast.Percent]] = []
    for item in props.unknown:
        if not isinstance(item, ast.Property):
            check_wrong_type(ctx, entry_key(item), item.body, "a percentage", "12%")
        elif not isinstance(item.value, ast.Percent):
            check_wrong_type(ctx, entry_key(item), item.value, "a percentage", "12%")
        elif item.value.value < 0 or not math.isfinite(item.value.value):
            check_out_of_range(
                ctx, entry_key(item), item.value.span, item.value.raw, 0, 100, unit="%"
            )
        else:
            outcomes.append((item.key, item.value))
    if not props.unknown:
        check_wrong_type(ctx, attribute, entry.body, "outcomes with shares", "{ female 50% }")
        return None
    if len(outcomes) != len(props.unknown):
        return None
    numeric = isinstance(outcomes[0][0], ast.Range | ast.Number)
    for key, _ in outcomes:
        if isinstance(key, ast.Range | ast.Number) != numeric:
            expected = f"only {'ranges' if numeric else 'labels'} (its first outcome is one)"
            check_wrong_type(ctx, attribute, key, expected, "{ 18..24 12%; 25..34 18% }")
            return None
    shares = _numeric_shares(ctx, attribute, outcomes) if numeric else _label_shares(outcomes)
    if shares is None:
        return None
    total = math.fsum(share.value for _, share in outcomes)
    if total > 100 + TOLERANCE:
        check_shares_exceed_total(ctx, attribute, entry.key.span, total)
        return None
    if total < 100 - TOLERANCE:
        if numeric:
            check_incomplete_numeric_distribution(ctx, attribute, entry.key.span, total)
            return None
        shares = _with_other(shares, (100 - total) / 100)
    return m.Distribution(attribute, tuple(shares), entry.span)


def _label_shares(outcomes: list[tuple[ast.Key, ast.Percent]]) -> list[m.Share]:
    return [m.Share(ast.key_text(key), share.fraction) for key, share in outcomes]


def _numeric_shares(
    ctx: Context, attribute: str, outcomes: list[tuple[ast.Key, ast.Percent]]
) -> list[m.Share] | None:
    """Brackets with whole-number ends, in order and not overlapping."""
    brackets: list[tuple[int, int, ast.Key, ast.Percent]] = []
    valid = True
    for key, share in outcomes:
        low, high = (key.low, key.high) if isinstance(key, ast.Range) else (key, key)
        assert isinstance(low, ast.Number) and isinstance(high, ast.Number)
        if not isinstance(low.value, int) or not isinstance(high.value, int):
            check_wrong_type(ctx, attribute, key, "brackets of whole numbers", "18..24")
            valid = False
        elif (
            (
                isinstance(key, ast.Range)
                and not check_reversed_range(ctx, attribute, key, strict=False)
            )
            or as_float(ctx, attribute, low) is None
            or as_float(ctx, attribute, high) is None
        ):
            valid = False
        else:
            brackets.append((low.value, high.value, key, share))
    if not valid:
        return None
    ordered = sorted(brackets, key=lambda b: (b[0], b[1]))
    for previous, current in itertools.pairwise(ordered):
        if current[0] <= previous[1]:
            check_overlapping_ranges(ctx, attribute, current[2], previous[2])
            valid = False
    if not valid:
        return None
    return [
        m.Share(ast.key_text(key), share.fraction, float(low), float(high))
        for low, high, key, share in brackets
    ]


def _with_other(shares: list[m.Share], remainder: float) -> list[m.Share]:
    """Give the remainder to `other`: the explicit outcome if there is one, else a new one."""
    if any(share.label == OTHER for share in shares):
        return [m.Share(s.label, s.share + remainder) if s.label == OTHER else s for s in shares]
    return [*shares, m.Share(OTHER, remainder)]


def check_reserved_name(ctx: Context, name: str, span: Span, what: str, why: str) -> None:
    """A name the language keeps for itself."""
    ctx.report(
        diag.error(
            codes.RESERVED_NAME,
            f"`{name}` is reserved and cannot name {what}",
            span,
            "reserved name",
            help=[f"{why}; choose another name"],
        )
    )


def check_shares_exceed_total(ctx: Context, attribute: str, span: Span, total: float) -> None:
    """A distribution whose shares add up to more than 100%."""
    ctx.report(
        diag.error(
            codes.SHARES_EXCEED_TOTAL,
            f"the shares of `{attribute}` add up to {total:g}%, more than 100%",
            span,
            f"{total:g}% in total",
            help=["fix the percentages so that they add up to 100%"],
        )
    )


def check_incomplete_numeric_distribution(
    ctx: Context, attribute: str, span: Span, total: float
) -> None:
    """Numeric brackets that leave part of the population without a value."""
    ctx.report(
        diag.error(
            codes.INCOMPLETE_NUMERIC_DISTRIBUTION,
            f"the brackets of `{attribute}` add up to {total:g}%, not 100%",
            span,
            f"{total:g}% in total",
            help=[
                f"add brackets for the missing {100 - total:g}%; only categorical distributions "
                f"may leave a remainder (it becomes `{OTHER}`)"
            ],
        )
    )


def check_overlapping_ranges(ctx: Context, attribute: str, key: ast.Key, other: ast.Key) -> None:
    """Two numeric brackets that share values (both ends are included)."""
    ctx.report(
        diag.error(
            codes.OVERLAPPING_RANGES,
            f"brackets `{ast.key_text(other)}` and `{ast.key_text(key)}` of `{attribute}` overlap",
            key.span,
            "overlaps another bracket",
            secondary=[Label(other.span, "this bracket")],
            help=["brackets include both ends: `18..24` then `25..34`"],
        )
    )


# ------------------------------------------------------------------ population


def check_population(ctx: Context, declared: Declared) -> None:
    """A population: its demographics, size, and segments with their constraints."""
    node = declared.node
    if not isinstance(node, ast.Population):
        return
    errors = ctx.error_count
    name = declared.name
    owner = f"population `{name}`"
    varies = [e for e in node.body.entries if isinstance(e, ast.Property) and entry_key(e) == VARY]
    body = dataclasses.replace(
        node.body, entries=tuple(e for e in node.body.entries if e not in varies)
    )
    props = Props(
        ctx,
        body,
        owner,
        node.name.span,
        (*POPULATION_FIELDS, *POPULATION_PEOPLE_FIELDS),
        named=("segment",),
    )
    props.report_unknown()
    # Without `from` the members are generated from the context and particularities alone.
    generated_only = "from" not in props.entries
    base = props.value("from")
    demographics: m.Demographics | None = None
    base_name = None
    if base is not None:
        base_name = read_word(ctx, "from", base, "usa")
        if base_name is not None and ctx.resolve(
            base_name, base.span, ("demographics",), f"`from` of {owner}"
        ):
            demographics = ctx.demographics.get(base_name)
    size = props.integer("size", 1, MAX_POPULATION, required="100")
    size_node = props.value("size")
    size_span = size_node.span if size_node is not None else node.name.span
    context = props.string("context")
    particularities = props.string("particularities")
    llm = read_agent_model(ctx, props)
    vary = check_vary(ctx, varies, demographics, name)
    segments: list[m.Segment] = []
    seen: dict[str, ast.NamedBlock] = {}
    total = 0
    for block in props.named["segment"]:
        segment_name = block.name.name
        if segment_name in seen:
            check_duplicate_segment(ctx, block, seen[segment_name], name)
            continue
        seen[segment_name] = block
        if segment_name == GENERAL:
            check_reserved_name(
                ctx,
                GENERAL,
                block.name.span,
                "a segment",
                "`general` is the implicit segment of the members in no declared segment",
            )
            continue
        segment_size, segment = check_segment(ctx, block, demographics, generated_only)
        if segment_size is None:
            continue
        if size is not None and total <= size < total + segment_size:
            check_segments_exceed_size(ctx, block, name, size, total + segment_size, size_span)
        total += segment_size
        if segment is not None:
            segments.append(segment)
    if size is not None and total < size:
        segments.append(m.Segment(GENERAL, size - total, (), "", (), node.span))
    segments = adult_segments(ctx, name, node.name.span, demographics, segments)
    if ctx.error_count == errors and (base_name is not None or generated_only) and size is not None:
        ctx.populations[name] = m.Population(
            name,
            base_name or "",
            size,
            tuple(segments),
            context or "",
            node.span,
            vary=vary,
            particularities=particularities or "",
            llm=llm,
        )


def check_segment(
    ctx: Context,
    block: ast.NamedBlock,
    demographics: m.Demographics | None,
    generated_only: bool = False,
) -> tuple[int | None, m.Segment | None]:
    """A segment's size, and the segment itself when all of it is valid.

    The size is returned on its own so that the population's total is checked
    even when another part of the segment has errors. Constraints are checked
    against the demographics; without one (missing, unknown or invalid, which
    is reported where it is named) they are skipped.
    """
    name = block.name.name
    owner = f"segment `{name}`"
    errors = ctx.error_count
    props = Props(ctx, block.body, owner, block.name.span, SEGMENT_FIELDS)
    size = props.integer("size", 1, MAX_POPULATION, required="10")
    particularities = props.string("particularities")
    fragments, _complete = resolve_fragments(ctx, props.value("fragments"))
    merged = LocatedSpec(Origin(block.name.span, None))
    for ref, fragment in fragments:
        for problem in merge_fragment(merged, fragment, ref.parts[0], owner, ref.span):
            ctx.report(problem)
    constraints: list[m.Constraint] = []
    attributes = {d.attribute: d for d in demographics.distributions} if demographics else {}
    for entry in props.unknown:
        distribution = attributes.get(entry_key(entry))
        if distribution is None or not isinstance(entry, ast.Property):
            if generated_only and isinstance(entry, ast.Property):
                check_constraint_without_demographics(ctx, entry, name)
            elif demographics is not None or generated_only:
                check_unknown_property(ctx, entry, owner, (*SEGMENT_FIELDS, *attributes))
            continue
        constraint = check_constraint(ctx, entry, distribution)
        if constraint is not None:
            constraints.append(constraint)
    if ctx.error_count != errors or size is None:
        return size, None
    return size, m.Segment(
        name,
        size,
        tuple(constraints),
        particularities or "",
        tuple(ref.parts[0] for ref, _ in fragments),
        block.span,
    )


def check_constraint(
    ctx: Context, entry: ast.Property, distribution: m.Distribution
) -> m.Constraint | None:
    """`age 25..35` within the brackets, or `gender female` / `region [a, b]` among the labels."""
    attribute = distribution.attribute
    value = entry.value
    if distribution.is_numeric:
        if isinstance(value, ast.Number):
            low, high = value, value
        elif isinstance(value, ast.Range):
            if not check_reversed_range(ctx, attribute, value, strict=False):
                return None
            low, high = value.low, value.high
        else:
            check_wrong_type(ctx, attribute, value, "a range", "25..35")
            return None
        check_constraint_outside_support(ctx, attribute, value, low, high, distribution)
        low_value, high_value = as_float(ctx, attribute, low), as_float(ctx, attribute, high)
        if low_value is None or high_value is None:
            return None
        return m.Constraint(attribute, low_value, high_value)
    items = value.items if isinstance(value, ast.ListValue | ast.Seq) else (value,)
    labels: list[str] = []
    known = [share.label for share in distribution.shares]
    for item in items:
        label = read_word(ctx, attribute, item, known[0] if known else "label")
        if label is None:
            continue
        if label not in known:
            check_unknown_label(ctx, label, item.span, f"an outcome of `{attribute}`", known)
            continue
        labels.append(label)
    if len(labels) != len(items):
        return None
    return m.Constraint(attribute, labels=tuple(dict.fromkeys(labels)))


def check_constraint_outside_support(
    ctx: Context,
    attribute: str,
    value: ast.Value,
    low: ast.Number,
    high: ast.Number,
    distribution: m.Distribution,
) -> None:
    """A numeric constraint that no bracket of the distribution overlaps."""
    if any(
        s.low is not None and s.high is not None and s.low <= high.value and s.high >= low.value
        for s in distribution.shares
    ):
        return
    brackets = ", ".join(share.label for share in distribution.shares)
    ctx.report(
        diag.error(
            codes.CONSTRAINT_OUTSIDE_SUPPORT,
            f"no bracket of `{attribute}` overlaps {show_number(low)}..{show_number(high)}",
            value.span,
            "no member could be sampled",
            help=[f"choose a range that overlaps the brackets: {brackets}"],
        )
    )


def check_unknown_label(ctx: Context, label: str, span: Span, what: str, known: list[str]) -> None:
    """A label that is not one of the declared set it must come from."""
    suggestion = ctx.suggest(label, known)
    listed = ", ".join(f"`{k}`" for k in known[:MAX_LISTED_LABELS])
    if len(known) > MAX_LISTED_LABELS:
        listed += f" ({len(known):,} in all)"
    ctx.report(
        diag.error(
            codes.UNKNOWN_LABEL,
            f"`{label}` is not {what}",
            span,
            "unknown label",
            help=[suggestion] if suggestion else [f"expected one of {listed}"],
        )
    )


def check_duplicate_segment(
    ctx: Context, block: ast.NamedBlock, first: ast.NamedBlock, population: str
) -> None:
    """Two segments of one population with the same name."""
    ctx.report(
        diag.error(
            codes.DUPLICATE_NAME,
            f"population `{population}` already has a segment `{block.name.name}`",
            block.name.span,
            "declared again here",
            secondary=[Label(first.name.span, "first declared here")],
            help=["rename one of the segments"],
        )
    )


def check_segments_exceed_size(
    ctx: Context,
    block: ast.NamedBlock,
    population: str,
    size: int,
    total: int,
    size_span: Span,
) -> None:
    """Segments asking for more members than the population has."""
    ctx.report(
        diag.error(
            codes.SEGMENTS_EXCEED_SIZE,
            f"segments of `{population}` need {total} members so far, "
            f"but the population's size is {size}",
            block.name.span,
            f"{total} members with this segment",
            secondary=[Label(size_span, f"the population's size is {size}")],
            help=["raise the population's `size`, or lower the segments' sizes"],
        )
    )


def check_constraint_without_demographics(ctx: Context, entry: ast.Property, segment: str) -> None:
    """A segment constraint in a population that has no demographics to sample from."""
    key = entry_key(entry)
    suggestion = ctx.suggest(key, SEGMENT_FIELDS)
    ctx.report(
        diag.error(
            codes.CONSTRAINT_WITHOUT_DEMOGRAPHICS,
            f"segment `{segment}` constrains `{key}`, but its population has no demographics",
            entry.key.span,
            "nothing to sample this from",
            help=[
                *([suggestion] if suggestion else []),
                "add `from DEMOGRAPHICS` to the population, or say it in words: "
                f'`particularities "{key} {to_words(entry.value)}"`',
            ],
        )
    )


def to_words(value: ast.Value) -> str:
    """A constraint's value as the text of a `particularities` suggestion."""
    if isinstance(value, ast.Range):
        return f"{show_number(value.low)} to {show_number(value.high)}"
    if isinstance(value, ast.Number):
        return show_number(value)
    if isinstance(value, ast.Str):
        return value.value
    if isinstance(value, ast.Ref):
        return value.dotted
    if isinstance(value, ast.ListValue | ast.Seq | ast.Phrase):
        return " or ".join(to_words(item) for item in value.items)
    return "..."


def check_vary(
    ctx: Context,
    entries: list[ast.Property],
    demographics: m.Demographics | None,
    population: str,
) -> tuple[m.VaryDimension, ...]:
    """`vary NAME "what varies" [N values]`, each a name no other attribute or column has."""
    taken: dict[str, str] = {
        **dict.fromkeys(RESULT_COLUMN_NAMES, "a result column"),
        **dict.fromkeys(PERSONA_FIELDS, "a persona field"),
        **dict.fromkeys(RESERVED_ATTRIBUTES, "a segment property"),
    }
    if demographics is not None:
        taken.update(
            (d.attribute, f"an attribute of demographics `{demographics.name}`")
            for d in demographics.distributions
        )
    dimensions: list[m.VaryDimension] = []
    seen: dict[str, ast.Ref] = {}
    for entry in entries:
        read = _read_vary(ctx, entry)
        if read is None:
            continue
        ref, description, values = read
        name = ref.parts[0]
        if name in seen:
            ctx.report(
                diag.error(
                    codes.DUPLICATE_NAME,
                    f"population `{population}` already varies `{name}`",
                    ref.span,
                    "declared again here",
                    secondary=[Label(seen[name].span, "first declared here")],
                    help=["give each `vary` its own name, or remove one of them"],
                )
            )
            continue
        seen[name] = ref
        if name in taken or name.startswith(("variant_", "persona_")):
            what = taken.get(name, "a result column prefix")
            ctx.report(
                diag.error(
                    codes.VARY_NAME_TAKEN,
                    f"`{name}` is {what}, so it cannot name a `vary` dimension",
                    ref.span,
                    "name already taken",
                    help=[f"choose another name, for example `{name}_style`"],
                )
            )
            continue
        dimensions.append(m.VaryDimension(name, description, values, entry.span))
    return tuple(dimensions)


def _read_vary(ctx: Context, entry: ast.Property) -> tuple[ast.Ref, str, int] | None:
    """The parts of `vary NAME "what varies" [N values]`, or None (reported)."""
    example = 'vary taste "their favourite flavour" 5 values'
    items = entry.value.items if isinstance(entry.value, ast.Phrase) else (entry.value,)
    ref = items[0]
    if not isinstance(ref, ast.Ref) or len(ref.parts) != 1:
        check_wrong_type(ctx, VARY, ref, "a dimension name", example[5:])
        return None
    if len(items) < 2 or not isinstance(items[1], ast.Str):
        shown = items[1] if len(items) >= 2 else entry.value
        check_wrong_type(ctx, VARY, shown, "a name and a description of what varies", example[5:])
        return None
    description = items[1].value
    if not description.strip():
        check_wrong_type(ctx, VARY, items[1], "a description of what varies", example[5:])
        return None
    values = VARY_DEFAULT_VALUES
    rest = items[2:]
    if rest:
        count = rest[0]
        unit = rest[1] if len(rest) > 1 else None
        if (
            not isinstance(count, ast.Number)
            or len(rest) != 2
            or not isinstance(unit, ast.Ref)
            or unit.dotted != "values"
        ):
            check_wrong_type(ctx, VARY, rest[0], "`N values` after the description", example[5:])
            return None
        low, high = VARY_VALUES
        if not isinstance(count.value, int) or not low <= count.value <= high:
            check_out_of_range(ctx, "vary", count.span, show_number(count), low, high)
            return None
        values = count.value
    return ref, description, values
