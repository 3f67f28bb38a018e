"""What a run extracts from each world or group, and the analyses over it.

A field name stands for one field with one type wherever it is extracted
(blocks of several worlds may declare it; the blocks of one source fill one
row per agent, so there it is declared once), so an analysis names a field
without saying which world it comes from. Each analysis is checked
against the field's type: the analysis stage can then pick its statistical
test from the type alone. Each statement that checks clean is lowered to its
`model` analysis, with the statement's text as written for reports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context, check_unknown_name
from tiny_dsl.checks.values import (
    as_float,
    check_reversed_range,
    check_wrong_type,
    describe,
)
from tiny_dsl.checks.worlds import resolve_group
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import SourceFile, Span
from tiny_dsl.syntax import ast

# What `summarize ... by` groups by, besides an intervention's name (its arms):
# the columns every result row has, and `variant` (the arms of the only intervention).
SUMMARY_GROUPS = ("segment", "population", "world", "variant")
NUMERIC: tuple[m.FieldKind, ...] = ("int", "float")
UNGROUPABLE: tuple[m.FieldKind, ...] = ("text", "list")
MEASURED: tuple[m.FieldKind, ...] = ("int", "float", "bool")
SIMPLE_KINDS: dict[type, m.FieldKind] = {
    ast.BoolType: "bool",
    ast.TextType: "text",
    ast.ListType: "list",
}
GROUPABLE = "an int, float, bool or enum field"
# A member written without quotes in `share(field == member)` is a name.
_BARE_MEMBER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_LISTED_MEMBERS = 10
KIND_NAMES: dict[str, str] = {
    "int": "an `int` field",
    "float": "a `float` field",
    "bool": "a `bool` field",
    "text": "a `text` field",
    "enum": "an `enum` field",
    "list": "a `list of text` field",
    "rank": "a `rank` field",
}


@dataclass(frozen=True)
class FieldInfo:
    """A declared field: its world, and its spec when the declaration is valid.

    `world` is the world of its first declaration (None: a group source);
    `worlds` every world it is extracted from (a field may be declared in blocks
    of several worlds, with one type).
    """

    world: str | None
    ident: ast.Ident
    spec: m.FieldSpec | None
    worlds: tuple[str | None, ...] = ()


# --------------------------------------------------------------------- extract


def check_extracts(
    ctx: Context, blocks: list[ast.Extract], timeline: tuple[m.Step, ...] = ()
) -> tuple[list[m.Extraction], dict[str, FieldInfo]]:
    """Every `extract` block: its source, its checkpoint, its fields.

    Rows are one per agent and world (one per agent for a group source), and
    the blocks of one source fill the same rows, so a field name is declared
    once per source (once per agent among group sources: `extract from banker`
    and `extract from monk` may both declare it, `from consumers` and
    `from consumers.young` may not); across sources it may repeat with one
    type, and the analyses pool it. `overall` fields are a world's summary, not row fields:
    they are unique within their world and not analysed.
    """
    checkpoints = [step.name for step in timeline if isinstance(step, m.CheckpointStep)]
    extractions: list[m.Extraction] = []
    fields: dict[str, FieldInfo] = {}
    declared: dict[tuple[bool, str | None, str], ast.Field] = {}
    by_group: dict[str, list[tuple[tuple[m.GroupRef, ...], ast.Field]]] = {}
    overall_specs: dict[tuple[str | None, str], m.FieldSpec] = {}
    for block in blocks:
        errors = ctx.error_count
        world, group = check_extract_source(ctx, block)
        if block.at is not None:
            check_extract_checkpoint(ctx, block.at, checkpoints)
        specs: list[m.FieldSpec] = []
        for item in block.fields:
            name = item.name.name
            key = (block.overall, world, name)
            first = declared.get(key)
            if group:  # group sources share world None: only overlapping groups collide
                first = next(
                    (field for refs, field in by_group.get(name, ()) if _overlap(refs, group)),
                    None,
                )
            spec = check_field(ctx, item)
            if first is not None:
                first_spec = (
                    overall_specs.get((world, name)) if block.overall else fields[name].spec
                )
                if (
                    spec is not None
                    and first_spec is not None
                    and _type_of(spec) != _type_of(first_spec)
                ):
                    check_field_type_conflict(ctx, item, first)
                else:
                    check_duplicate_field(ctx, item.name, first.name)
                continue
            declared.setdefault(key, item)
            if group:
                by_group.setdefault(name, []).append((group, item))
            if spec is None:
                continue
            specs.append(spec)
            if block.overall:
                overall_specs[(world, name)] = spec
                continue
            known = fields.get(name)
            if known is None:
                fields[name] = FieldInfo(world, item.name, spec, (world,))
            elif known.spec is not None and _type_of(spec) != _type_of(known.spec):
                check_field_type_conflict(ctx, item, declared[(False, known.world, name)])
            else:
                fields[name] = replace(known, worlds=(*known.worlds, world))
        if ctx.error_count == errors:
            extractions.append(
                m.Extraction(
                    world,
                    tuple(specs),
                    block.span,
                    group=group,
                    at=block.at.name if block.at is not None else None,
                    overall=block.overall,
                )
            )
    return extractions, fields


def check_extract_source(
    ctx: Context, block: ast.Extract
) -> tuple[str | None, tuple[m.GroupRef, ...]]:
    """A world (the agents' events in it), or a group (its members' whole memories);
    `extract overall` reads a world's whole transcript, so it needs a world."""
    source = block.source or (ast.Ref((block.world.name,), block.world.span),)
    single = len(source) == 1 and len(source[0].parts) == 1
    if block.overall:
        if not single:
            check_wrong_type(ctx, "extract overall from", source[0], "a world", "panel")
            return None, ()
        ctx.resolve(block.world.name, block.world.span, ("world",), "`extract overall from`")
        return block.world.name, ()
    if single:
        found = ctx.resolve(
            block.world.name,
            block.world.span,
            ("world", "persona", "population"),
            "`extract from`",
        )
        if found is None or found.kind == "world":
            return block.world.name, ()
    return None, tuple(resolve_group(ctx, source, "extract from", "`extract from`"))


def check_extract_checkpoint(ctx: Context, at: ast.Ident, checkpoints: list[str]) -> None:
    """`at CHECKPOINT` names a `checkpoint` step of the timeline."""
    if at.name in checkpoints or ctx.incomplete:
        return
    check_unknown_name(
        ctx,
        at.name,
        at.span,
        "checkpoint",
        "`extract ... at`",
        checkpoints,
        declare_hint=(
            f"add `checkpoint {at.name}` to the timeline at the point the extraction reads up to"
        ),
    )


def _overlap(first: tuple[m.GroupRef, ...], second: tuple[m.GroupRef, ...]) -> bool:
    """Whether two group sources share an agent: the same persona, or a population
    and itself or one of its segments (segments of one population are disjoint)."""
    for a in first:
        for b in second:
            if a.kind == "persona" or b.kind == "persona":
                if a.kind == b.kind and a.name == b.name:
                    return True
            elif a.name == b.name and (a.segment is None or b.segment is None or a == b):
                return True
    return False


def _type_of(spec: m.FieldSpec) -> tuple[object, ...]:
    """What two declarations of one field must agree on: everything but the description."""
    return (spec.kind, spec.low, spec.high, spec.members)


def check_field(ctx: Context, item: ast.Field) -> m.FieldSpec | None:
    """One field and its type: ordered numeric bounds, distinct enum members."""
    name = item.name.name
    description = item.description.value if item.description is not None else ""
    kind = item.type
    if isinstance(kind, ast.IntType | ast.FloatType):
        label: m.FieldKind = "int" if isinstance(kind, ast.IntType) else "float"
        if kind.range is None:
            return m.FieldSpec(name, label, description, span=item.span)
        bounds = kind.range
        if label == "int" and not (
            isinstance(bounds.low.value, int) and isinstance(bounds.high.value, int)
        ):
            check_wrong_type(ctx, name, bounds, "a range of whole numbers", "int 1..10")
            return None
        if not check_reversed_range(ctx, name, bounds, strict=True):
            return None
        low, high = as_float(ctx, name, bounds.low), as_float(ctx, name, bounds.high)
        if low is None or high is None:
            return None
        return m.FieldSpec(name, label, description, low, high, span=item.span)
    if isinstance(kind, ast.EnumType):
        members = check_enum_members(ctx, name, kind)
        if members is None:
            return None
        return m.FieldSpec(name, "enum", description, members=members, span=item.span)
    if isinstance(kind, ast.RankType):
        ranked = check_enum_members(ctx, name, kind, "rank [price, quality]")
        if ranked is None:
            return None
        return m.FieldSpec(name, "rank", description, members=ranked, span=item.span)
    return m.FieldSpec(name, SIMPLE_KINDS[type(kind)], description, span=item.span)


def check_enum_members(
    ctx: Context,
    name: str,
    kind: ast.EnumType | ast.RankType,
    example: str = "enum [yes, no]",
) -> tuple[str, ...] | None:
    """At least two members, each a name or a string, none twice (an enum's, or
    the members a `rank` orders: ranking one thing is no ranking)."""
    word = "enum" if isinstance(kind, ast.EnumType) else "rank"
    members: dict[str, Span] = {}
    valid = True
    for item in kind.members.items:
        if isinstance(item, ast.Ref) and len(item.parts) == 1:
            member = item.parts[0]
        elif isinstance(item, ast.Str):
            member = item.value
        else:
            check_wrong_type(ctx, name, item, "a member name", example)
            valid = False
            continue
        if member in members:
            ctx.report(
                diag.error(
                    codes.DUPLICATE_NAME,
                    f"{word} member `{member}` of `{name}` is listed twice",
                    item.span,
                    "listed again here",
                    secondary=[Label(members[member], "first listed here")],
                    help=["list every member once"],
                )
            )
            valid = False
            continue
        members[member] = item.span
    if valid and len(members) < 2:
        check_wrong_type(ctx, name, kind.members, "at least two members", example)
        return None
    return tuple(members) if valid else None


def check_field_type_conflict(ctx: Context, item: ast.Field, first: ast.Field) -> None:
    """One field with two types: the analyses pool its values, which needs one type."""
    ctx.report(
        diag.error(
            codes.FIELD_TYPE_CONFLICT,
            f"field `{item.name.name}` is declared with two different types",
            item.type.span,
            "declared with this type here",
            secondary=[Label(first.type.span, "and with this type here")],
            help=[
                "give both declarations the same type (kind, range and members), "
                "or rename one of the fields"
            ],
        )
    )


def check_duplicate_field(ctx: Context, ident: ast.Ident, first: ast.Ident) -> None:
    """The blocks of one source fill one row per agent, so a field is declared once there."""
    ctx.report(
        diag.error(
            codes.DUPLICATE_NAME,
            f"field `{ident.name}` is already extracted",
            ident.span,
            "declared again here",
            secondary=[Label(first.span, "first declared here")],
            help=[
                "the `extract` blocks of one source fill the same rows, so each field "
                "is declared once per source; rename one"
            ],
        )
    )


# --------------------------------------------------------- shared with analyses


def _statement_text(span: Span, sources: Mapping[str, SourceFile]) -> str:
    """A statement as its author wrote it, whitespace collapsed (reformatting changes nothing)."""
    return " ".join(sources[span.file].text[span.start : span.end].split())


def _bound(value: ast.Number | ast.Percent) -> float:
    """A bound as a number: a percentage as its fraction."""
    return value.fraction if isinstance(value, ast.Percent) else float(value.value)


def _member(value: ast.Value | None) -> str | None:
    """The enum member in `share(field == member)`, written as a name or as a string
    (None: the aggregate compares nothing, or with a value its check reported)."""
    if isinstance(value, ast.Str):
        return value.value
    if isinstance(value, ast.Ref):
        return value.dotted
    return None


def _proportion(bound: ast.Number | ast.Percent) -> int | float:
    return bound.fraction if isinstance(bound, ast.Percent) else bound.value


def _show(bound: ast.Number | ast.Percent) -> str:
    return bound.raw or str(bound.value)


def check_field_type_mismatch(
    ctx: Context, ident: ast.Ident, spec: m.FieldSpec, use: str, needs: str
) -> None:
    """An analysis that does not fit the field's type."""
    ctx.report(
        diag.error(
            codes.FIELD_TYPE_MISMATCH,
            f"{use} needs {needs}, but `{ident.name}` is {KIND_NAMES[spec.kind]}",
            ident.span,
            KIND_NAMES[spec.kind],
            secondary=[Label(spec.span, "declared here")] if spec.span is not None else [],
            help=[f"use {use} with {needs}"],
        )
    )


def check_not_a_member(
    ctx: Context, aggregate: ast.Aggregate, spec: m.FieldSpec, value: ast.Value
) -> None:
    """`share(F == 1)` on an enum: the comparison needs one of F's members."""
    written = value.raw if isinstance(value, ast.Number | ast.Percent) else ""
    # A number written for a member spelt with digits (`enum ["1", "2"]`) needs quotes.
    member = written if written in spec.members else spec.members[0]
    shown = member if _BARE_MEMBER.fullmatch(member) else json.dumps(member, ensure_ascii=False)
    example = f"{aggregate.function.name}({spec.name} {aggregate.comparator} {shown})"
    listed = ", ".join(f"`{item}`" for item in spec.members[:MAX_LISTED_MEMBERS])
    if len(spec.members) > MAX_LISTED_MEMBERS:
        listed += f" ({len(spec.members):,} in all)"
    ctx.report(
        diag.error(
            codes.WRONG_TYPE,
            f"`{spec.name}` expects an enum member, found {describe(value)}",
            value.span,
            "expected an enum member",
            secondary=[Label(spec.span, "declared here")] if spec.span is not None else [],
            help=[f"compare with a member of `{spec.name}`: `{example}`"],
            notes=[f"the members of `{spec.name}` are {listed}"],
        )
    )


def check_intervention_not_in_world(
    ctx: Context, by: ast.Ident, info: FieldInfo, problem: str
) -> None:
    """Grouping a field by arms of an intervention its world never received."""
    ctx.report(
        diag.error(
            codes.INTERVENTION_NOT_IN_WORLD,
            f"{problem} in world `{info.world}`, where `{info.ident.name}` is extracted",
            by.span,
            "no arms in that world",
            secondary=[Label(info.ident.span, f"extracted from `{info.world}`")],
            help=[f"add a `deliver INTERVENTION in {info.world}` step, or analyse another field"],
        )
    )


def check_ambiguous_variant(
    ctx: Context, statement: ast.SummarizeStmt | ast.CompareStmt, interventions: list[str]
) -> None:
    """`by variant` names the arms of the only intervention; with none or several it cannot."""
    keyword = "compare" if isinstance(statement, ast.CompareStmt) else "summarize"
    problem = (
        "there is no intervention"
        if not interventions
        else "there are several interventions (" + ", ".join(f"`{i}`" for i in interventions) + ")"
    )
    ctx.report(
        diag.error(
            codes.INTERVENTION_NOT_IN_WORLD,
            f"`{keyword} ... by variant` needs exactly one intervention, but {problem}",
            statement.by.span,
            "which intervention?",
            help=[
                f"name the intervention: `{keyword} {statement.field.name} by "
                f"{interventions[0] if interventions else 'INTERVENTION'}`"
            ],
        )
    )


def check_percent_not_allowed(ctx: Context, function: str, bound: ast.Percent) -> None:
    """A percentage bound on an aggregate that is not a proportion."""
    ctx.report(
        diag.error(
            codes.PERCENT_NOT_ALLOWED,
            f"`{function}` is not a proportion and cannot be compared with a percentage",
            bound.span,
            "percentage",
            help=[f"write a plain number, e.g. `{bound.value:g}`; percentages are for `share`"],
        )
    )
