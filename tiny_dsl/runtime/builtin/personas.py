"""Personas for the built-in engine: generation schema, TinyTroupe-style merging, naming.

A population member starts as sampled attributes; the `generate` step asks the
model for a full TinyTroupe persona (the schema below), merges the member's
fragments into it, and re-applies the sampled attributes, which are facts of the
sampling plan the model may not overrule.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "PERSONA_MAX_TOKENS",
    "PERSONA_SCHEMA",
    "apply_attributes",
    "describe_attributes",
    "merge_persona",
    "persona_brief",
    "persona_json",
    "unique_name",
]


def _text(limit: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": limit}


def _texts(items: int, limit: int) -> dict[str, Any]:
    return {"type": "array", "items": _text(limit), "maxItems": items}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


# TinyTroupe's persona layout (see Oscar.agent.json), with every string and list
# bounded: the embedded 135M model, decoding under a grammar, otherwise repeats
# itself until it runs out of tokens and the JSON never closes.
PERSONA_SCHEMA: dict[str, Any] = _object(
    {
        "name": _text(60),
        "age": {"type": "integer", "minimum": 0, "maximum": 110},
        "gender": _text(30),
        "nationality": _text(40),
        "residence": _text(80),
        "education": _text(120),
        "occupation": _object(
            {"title": _text(60), "organization": _text(60), "description": _text(160)}
        ),
        "personality": _object(
            {
                "traits": _texts(3, 100),
                "big_five": _object(
                    {
                        trait: _text(30)
                        for trait in (
                            "openness",
                            "conscientiousness",
                            "extraversion",
                            "agreeableness",
                            "neuroticism",
                        )
                    }
                ),
            }
        ),
        "preferences": _object(
            {"interests": _texts(3, 60), "likes": _texts(3, 80), "dislikes": _texts(3, 80)}
        ),
        "beliefs": _texts(3, 120),
        "behaviors": _object({"general": _texts(3, 120)}),
    }
)


def _worst_case_chars(schema: Mapping[str, Any]) -> int:
    kind = schema.get("type")
    if kind == "object":
        properties: Mapping[str, Any] = schema["properties"]
        return 2 + sum(len(key) + 4 + _worst_case_chars(sub) for key, sub in properties.items())
    if kind == "array":
        return 2 + schema["maxItems"] * (_worst_case_chars(schema["items"]) + 2)
    if kind == "string":
        return int(schema["maxLength"]) + 2
    return 8


# Room for the longest schema-valid persona at about two characters per token, so a
# rambling model is cut by the schema's limits rather than by max_tokens.
PERSONA_MAX_TOKENS = _worst_case_chars(PERSONA_SCHEMA) // 2 + 64


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


def describe_attributes(attributes: Mapping[str, Any]) -> str:
    """`age: 31; gender: female` for the generation prompt."""
    return "; ".join(f"{key.replace('_', ' ')}: {value}" for key, value in attributes.items())


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name 2`, `name 3`... the first whose casefold is not in `taken`.

    `taken` holds casefolded names (the caller adds each name it assigns), so a
    thousand agents cost a thousand set lookups. Names are how agents address
    each other (a TALK's target), so two agents with one name would be
    indistinguishable; callers assign names in a fixed agent order, which makes
    the suffixes deterministic.
    """
    candidate, number = name, 2
    while candidate.casefold() in taken:
        candidate = f"{name} {number}"
        number += 1
    return candidate


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
