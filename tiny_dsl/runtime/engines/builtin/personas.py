"""Personas in the built-in engine: TinyTroupe-style merging, prompt forms.

A population member's generated persona (`tiny_dsl.runtime.engines.personas`)
gets the member's fragments merged into it, then the sampled attributes
re-applied, which are facts of the sampling plan the model may not overrule.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "apply_attributes",
    "merge_persona",
    "persona_brief",
    "persona_json",
]


def merge_persona(
    base: dict[str, Any], fragment: Mapping[str, Any], notes: list[str], path: str = ""
) -> dict[str, Any]:
    """Merge `fragment` into a copy of `base` the TinyTroupe way.

    Lists are concatenated and de-duplicated, dicts merge recursively, new keys
    are added. Where TinyTroupe raises on a conflicting scalar or a type
    mismatch, a generated persona keeps its own (generated) value and a note
    says what was dropped: a fragment is advice to the generator, not a
    contradiction to abort the run on.
    """
    merged = copy.deepcopy(base)
    for key, value in fragment.items():
        where = f"{path}.{key}" if path else key
        if key not in merged or merged[key] in (None, "", [], {}):
            merged[key] = copy.deepcopy(value)
            continue
        current = merged[key]
        if isinstance(current, list) and isinstance(value, list):
            merged[key] = _dedupe([*current, *value])
        elif isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = merge_persona(current, value, notes, where)
        elif current != value:
            notes.append(
                f"fragment value for {where} ({json.dumps(value, ensure_ascii=False)}) "
                f"conflicts with the generated {json.dumps(current, ensure_ascii=False)}; "
                "kept the generated one"
            )
    return merged


def _dedupe(items: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def apply_attributes(persona: dict[str, Any], attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled attributes override the model: they are the sampling plan's facts.

    `occupation` sets the occupation title (TinyTroupe's occupation is a dict);
    every other attribute sets the persona key of the same name.
    """
    result = copy.deepcopy(persona)
    for key, value in attributes.items():
        if key == "occupation" and isinstance(result.get("occupation"), dict):
            result["occupation"]["title"] = value
        else:
            result[key] = value
    return result


def persona_json(persona: Mapping[str, Any]) -> str:
    """Compact JSON of the persona without empty values, for prompts.

    Compact because prompt tokens are the main cost of a turn (and on the
    embedded model, most of its time); key order is kept as written.
    """
    return json.dumps(_prune(persona), ensure_ascii=False, separators=(",", ":"))


def _prune(value: Any) -> Any:
    if isinstance(value, Mapping):
        pruned = {key: _prune(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        return [_prune(item) for item in value if item not in (None, "", [], {})]
    return value


def persona_brief(persona: Mapping[str, Any]) -> str:
    """`28, Data scientist, Seattle, WA`: a one-line identity for extraction prompts."""
    occupation = persona.get("occupation")
    if isinstance(occupation, Mapping):
        occupation = occupation.get("title")
    parts = [persona.get("age"), persona.get("gender"), occupation, persona.get("residence")]
    return ", ".join(str(part) for part in parts if part not in (None, ""))
