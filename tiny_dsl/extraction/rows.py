"""Result rows: one per agent and world, with who the agent is next to the fields.

A row carries everything an analysis needs to group or compare without going
back to the plan: the agent's world, population and segment, the variant it was
assigned in every intervention, and its persona attributes (prefixed
`persona_`). Missing values are `None`, and `_missing` maps each missing field
to the reason, so a reader can tell "the model did not know" from "invalid".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tiny_dsl.plan.model import AgentPlan, FieldPlan, InterventionPlan

__all__ = [
    "FIXED_COLUMNS",
    "MISSING_COLUMN",
    "REPLICATE_COLUMN",
    "build_row",
    "merge_rows",
    "persona_attributes",
    "result_columns",
]

FIXED_COLUMNS = ("agent", "name", "world", "population", "segment")
# 1..N in the rows of a plan with several replicates (absent: one replicate), the
# column after the fixed ones.
REPLICATE_COLUMN = "replicate"
MISSING_COLUMN = "_missing"
# Field -> the quality flags of its answer (`runtime.quality`), set after the run.
QUALITY_COLUMN = "_quality"
PERSONA_PREFIX = "persona_"
# Persona keys worth a column: TinyTroupe's identity fields, which are scalars (or,
# for occupation, a dict whose title is the scalar).
_PERSONA_KEYS = ("age", "gender", "nationality", "residence", "education", "occupation")


def persona_attributes(agent: AgentPlan, persona: Mapping[str, Any]) -> dict[str, Any]:
    """`persona_*` columns: identity fields of the persona and every sampled attribute.

    Sampled demographic attributes (region, income, ...) are included even when
    the persona has no such key, since they are what a population was stratified
    on. Only scalar values become columns; structured values stay in the persona.
    """
    columns: dict[str, Any] = {}
    for key in _PERSONA_KEYS:
        value = persona.get(key)
        if key == "occupation" and isinstance(value, Mapping):
            value = value.get("title")
        if _is_scalar(value):
            columns[PERSONA_PREFIX + key] = value
    for key, value in agent.attributes.items():
        if key == "occupation" or PERSONA_PREFIX + key in columns:
            continue
        if _is_scalar(value):
            columns[PERSONA_PREFIX + key] = value
    # A `vary` dimension's value is known only at run time: the engine's persona has it.
    for key in agent.vary_slots:
        value = persona.get(key)
        if _is_scalar(value):
            columns[PERSONA_PREFIX + key] = value
    return columns


def build_row(
    *,
    agent: AgentPlan,
    name: str,
    world: str | None,
    persona: Mapping[str, Any],
    interventions: list[InterventionPlan],
    values: Mapping[str, Any],
    missing: Mapping[str, str],
) -> dict[str, Any]:
    """The result row of one agent (see the module docstring for the columns).

    `variant_<intervention>` is the assigned variant or `control`, and None for
    an agent the intervention does not target; with exactly one intervention the
    same value is also in `variant`, the column most analyses group by.
    """
    row: dict[str, Any] = {
        "agent": agent.id,
        "name": name,
        "world": world,
        "population": agent.population,
        "segment": agent.segment,
    }
    for intervention in interventions:
        row[f"variant_{intervention.name}"] = intervention.assignment.get(agent.id)
    if len(interventions) == 1:
        row["variant"] = row[f"variant_{interventions[0].name}"]
    row.update(persona_attributes(agent, persona))
    row.update(values)
    row[MISSING_COLUMN] = dict(missing)
    return row


def merge_rows(
    rows: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """`rows` with the rows of one more `extract` step merged in.

    A row is one agent in one world (`world` None: a group source) in one
    replicate, so the fields of a later block for the same agent and world (a
    final verdict after a first impression) join the row the earlier block made;
    other rows are appended.
    The checks keep a field name to one block per agent and world, so nothing
    is overwritten.
    """
    merged = [dict(row) for row in rows]
    index = {_row_key(row): row for row in merged}
    for row in new:
        key = _row_key(row)
        known = index.get(key)
        if known is None:
            known = index[key] = dict(row)
            merged.append(known)
            continue
        missing = {**known.get(MISSING_COLUMN, {}), **row.get(MISSING_COLUMN, {})}
        known.update({k: v for k, v in row.items() if k != MISSING_COLUMN})
        known[MISSING_COLUMN] = missing
    return merged


def _row_key(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return row.get("agent"), row.get("world"), row.get(REPLICATE_COLUMN)


def result_columns(rows: Iterable[Mapping[str, Any]], fields: list[FieldPlan]) -> list[str]:
    """A stable column order: fixed columns, variants, persona attributes sorted, fields.

    Fields come in declared order (first extract block first); `_missing` follows,
    then `_quality` when the rows have it.
    Columns are the union over all rows, so rows from different extract blocks or
    with different persona attributes share one table.
    """
    rows = list(rows)
    present = {key for row in rows for key in row}
    field_names = list(dict.fromkeys(field.name for field in fields))
    variants = sorted(key for key in present if key.startswith("variant_"))
    if "variant" in present:
        variants.insert(0, "variant")
    persona = sorted(key for key in present if key.startswith(PERSONA_PREFIX))
    fixed = [*FIXED_COLUMNS, *([REPLICATE_COLUMN] if REPLICATE_COLUMN in present else [])]
    quality = [QUALITY_COLUMN] if QUALITY_COLUMN in present else []
    known = {*fixed, *variants, *persona, *field_names, MISSING_COLUMN, *quality}
    # Anything else (a future engine's extra column) goes before the fields, sorted.
    extra = sorted(present - known)
    return [*fixed, *variants, *persona, *extra, *field_names, MISSING_COLUMN, *quality]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and value != ""
