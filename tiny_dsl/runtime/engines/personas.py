"""Personas both engines share: the generation call, its schema, and member naming.

A population member starts as sampled attributes; the `generate` step asks the
model for a full TinyTroupe persona with `persona_request`. Both engines send
that same request (same prompt, schema and seed), so they simulate the same
people and share cached answers, and both make names unique with
`unique_name`, because agents address each other by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tiny_dsl.plan.model import AgentPlan, Plan
from tiny_dsl.runtime.engines.prompts import derive_seed, render_prompt
from tiny_dsl.runtime.providers.base import ChatRequest, Message

__all__ = [
    "PERSONA_MAX_TOKENS",
    "PERSONA_SCHEMA",
    "describe_attributes",
    "persona_request",
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


def persona_request(
    plan: Plan, agent: AgentPlan, demographics: str, context: str, step_id: str
) -> ChatRequest:
    """The one call that fleshes out a population member into a persona.

    Shared by every engine, so that both simulate the same people and share
    cached answers.
    """
    user = render_prompt(
        "generate_user.j2",
        demographics=demographics,
        context=context,
        attributes=describe_attributes(agent.attributes),
        particularities=agent.particularities,
    )
    return ChatRequest(
        messages=(
            Message("system", render_prompt("generate_system.j2")),
            Message("user", user),
        ),
        temperature=plan.settings.temperature,
        max_tokens=PERSONA_MAX_TOKENS,
        json_schema=PERSONA_SCHEMA,
        schema_name="persona",
        seed=derive_seed(plan.settings.seed, step_id, agent.id, "generate"),
        purpose=f"generate {agent.id}",
    )
