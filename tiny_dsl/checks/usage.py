"""Warnings about what is legal but probably not what the author meant.

Only declarations of the scenario file itself are reported as unused: an
imported file is a library, and most of a library goes unused by any one
scenario. These warnings are all skipped when a file has syntax errors: the
use (or the missing field) may be in the part that could not be read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks.context import Context, Declared, Kind
from tiny_dsl.checks.results import MEASURED, FieldInfo
from tiny_dsl.diagnostics import Label


def check_incomplete_persona(ctx: Context) -> None:
    """Agents without `age` or `occupation`: TinyTroupe introduces people by both.

    A persona whose fragment could not be merged is skipped: the fragment may
    give both, and its error is already reported.
    """
    for kind, name in sorted(ctx.world_members):
        persona = ctx.personas.get(name) if kind == "persona" else None
        declared = ctx.lookup("persona", name)
        if persona is None or declared is None or name in ctx.missing_fragments:
            continue
        if persona.generate is not None:  # the model writes what the block leaves out
            continue
        missing = [key for key in ("age", "occupation") if key not in persona.spec]
        if not missing:
            continue
        fields = " and ".join(f"`{key}`" for key in missing)
        ctx.report(
            diag.warning(
                codes.INCOMPLETE_PERSONA,
                f"persona `{name}` takes part in a world but has no {fields}",
                declared.node.name.span,
                f"no {fields}",
                help=[f"add {fields}: the model introduces the person by them"],
            )
        )


def check_duplicate_persona_name(ctx: Context) -> None:
    """Personas of the run sharing a display name: the run adds a number to one of them."""
    taking_part = [
        declared
        for declared in ctx.declared["persona"].values()
        if ("persona", declared.name) in ctx.used and declared.name in ctx.personas
    ]
    # Imported personas first, so that the warning lands in the scenario file,
    # where the author can change a name, whenever one of the two is there.
    taking_part.sort(key=lambda d: (d.in_root, d.node.span.file, d.node.span.start))
    first_with: dict[str, Declared] = {}
    for declared in taking_part:
        name = str(ctx.personas[declared.name].spec.get("name", ""))
        if not name and ctx.personas[declared.name].generate is not None:
            continue  # the model names it; the run keeps generated names unique
        first = first_with.setdefault(name.casefold(), declared)
        if first is declared:
            continue
        shown = json.dumps(name, ensure_ascii=False)
        first_shown = json.dumps(ctx.personas[first.name].spec.get("name"), ensure_ascii=False)
        ctx.report(
            diag.warning(
                codes.DUPLICATE_PERSONA_NAME,
                f"persona `{declared.name}` has the same name as persona `{first.name}`: {shown}",
                declared.node.name.span,
                f"also called {shown}",
                secondary=[Label(first.node.name.span, f"called {first_shown} here")],
                help=[
                    "give each persona its own `name`: agents address each other by name, "
                    f'and the run adds a number to one of them ("{name} 2")'
                ],
            )
        )


def check_unused_population(ctx: Context) -> None:
    """A population no world has as agents is never generated."""
    for declared in _root_declarations(ctx, "population"):
        if ("population", declared.name) not in ctx.world_members:
            _unused(
                ctx,
                declared,
                codes.UNUSED_POPULATION,
                "is not an agent of any world",
                "add it to a world's `agents`, or remove it",
            )


def check_unused_persona(ctx: Context) -> None:
    """A persona nothing refers to takes no part in the run."""
    for declared in _root_declarations(ctx, "persona"):
        if ("persona", declared.name) not in ctx.used:
            _unused(
                ctx,
                declared,
                codes.UNUSED_PERSONA,
                "is never used",
                "add it to a world, an intervention or an interview, or remove it",
            )


def check_unused_world(ctx: Context) -> None:
    """A world no step uses: its agents never hear or say anything."""
    for declared in _root_declarations(ctx, "world"):
        if declared.name not in ctx.step_worlds:
            _unused(
                ctx,
                declared,
                codes.UNUSED_WORLD,
                "is not used by any timeline step",
                f'add a step such as `ask {declared.name} "..."`, or remove it',
            )


def check_undelivered_intervention(ctx: Context) -> None:
    """An intervention no step delivers reaches no one."""
    for declared in _root_declarations(ctx, "intervention"):
        if declared.name not in ctx.delivered:
            _unused(
                ctx,
                declared,
                codes.UNDELIVERED_INTERVENTION,
                "is never delivered",
                f"add a step `deliver {declared.name} in WORLD`, or remove it",
            )


def check_unanalysed_field(ctx: Context, fields: dict[str, FieldInfo], used: set[str]) -> None:
    """A measured field (int, float, bool) that the `analyze` block never mentions."""
    for name, info in fields.items():
        if name in used or info.spec is None or info.spec.kind not in MEASURED:
            continue
        ctx.report(
            diag.warning(
                codes.UNANALYSED_FIELD,
                f"field `{name}` is extracted but never analysed",
                info.ident.span,
                "not used in `analyze`",
                help=[f"add e.g. `summarize {name} by segment` to `analyze`, or drop the field"],
            )
        )


def _root_declarations(ctx: Context, kind: Kind) -> Iterable[Declared]:
    return (d for d in ctx.declared[kind].values() if d.in_root)


def _unused(ctx: Context, declared: Declared, code: str, problem: str, fix: str) -> None:
    ctx.report(
        diag.warning(
            code,
            f"{declared.kind} `{declared.name}` {problem}",
            declared.node.name.span,
            "unused",
            help=[fix],
        )
    )
