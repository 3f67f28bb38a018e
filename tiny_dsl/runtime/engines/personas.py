"""Personas both engines share: the generation call, its schema, and member naming.

A population member starts as sampled attributes; the `generate` step asks the
model for a full TinyTroupe persona with `persona_request`. Both engines send
that same request (same prompt, schema and seed), so they simulate the same
people and share cached answers, and both make names unique with
`unique_name`, because agents address each other by name.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tiny_dsl.plan.model import AgentPlan, Plan, PopulationPlan, ProposeStep
from tiny_dsl.runtime.engines.prompts import derive_seed, render_prompt
from tiny_dsl.runtime.providers.base import ChatRequest, Message

__all__ = [
    "PERSONA_MAX_TOKENS",
    "PERSONA_SCHEMA",
    "VARY_VALUE_CHARS",
    "describe_attributes",
    "generated_persona_request",
    "keep_written_fields",
    "persona_request",
    "propose_request",
    "propose_schema",
    "unique_name",
    "vary_values",
    "with_agent_model",
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
    plan: Plan,
    agent: AgentPlan,
    demographics: str,
    context: str,
    step_id: str,
    varied: Mapping[str, str] | None = None,
) -> ChatRequest:
    """The one call that fleshes out a population member into a persona.

    Shared by every engine, so that both simulate the same people and share
    cached answers. `varied` are the member's values of its population's `vary`
    dimensions, shown like the sampled attributes. A population without
    demographics (no `from`) has no "Population:" line.
    """
    population = next((p for p in plan.populations if p.name == agent.population), None)
    user = render_prompt(
        "generate_user.j2",
        demographics=demographics,
        without_demographics=population is not None and not population.demographics,
        context=context,
        attributes=describe_attributes({**agent.attributes, **(varied or {})}),
        particularities=agent.particularities,
    )
    return with_agent_model(_persona_call(plan, agent, user, step_id), agent)


def generated_persona_request(plan: Plan, agent: AgentPlan, step_id: str) -> ChatRequest:
    """The one call that writes a `persona { generate "..." }` from its description.

    The same schema, system prompt and seed derivation as a member's, so both
    engines send it byte-identically; the fields written in the block are shown
    as fixed, and are set over the answer afterwards (`keep_written_fields`).
    """
    written = agent.persona or {}
    user = render_prompt(
        "generate_person_user.j2",
        description=agent.generate or "",
        context=agent.generate_context,
        fixed=json.dumps(written, ensure_ascii=False, separators=(",", ":")) if written else "",
    )
    return with_agent_model(_persona_call(plan, agent, user, step_id), agent)


def _persona_call(plan: Plan, agent: AgentPlan, user: str, step_id: str) -> ChatRequest:
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


def with_agent_model(
    request: ChatRequest, agent: AgentPlan, *, temperature: bool = True
) -> ChatRequest:
    """`request` with the agent's own model and (unless `temperature` is False: an
    extraction, which reads at temperature 0) its own temperature. An agent without
    either gets `request` itself, so a v1 scenario's requests (and cache keys) stay."""
    changes: dict[str, Any] = {}
    if agent.model is not None:
        changes["model"] = agent.model
    if temperature and agent.temperature is not None:
        changes["temperature"] = agent.temperature
    return dataclasses.replace(request, **changes) if changes else request


def keep_written_fields(generated: Mapping[str, Any], written: Mapping[str, Any]) -> dict[str, Any]:
    """A generated persona with the fields written in the block set over it, as given.

    Objects merge key by key (`preferences { likes [...] }` keeps the generated
    interests); any other value, lists included, replaces the generated one.
    """
    result = copy.deepcopy(dict(generated))
    for key, value in written.items():
        current = result.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            result[key] = keep_written_fields(current, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# -- `vary` dimensions ---------------------------------------------------------------

# A proposed value is a short phrase; the bound keeps the embedded model from rambling.
VARY_VALUE_CHARS = 80


def propose_schema(step: ProposeStep) -> dict[str, Any]:
    """One array per dimension, exactly N bounded strings each."""
    return _object(
        {
            dimension.name: {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": VARY_VALUE_CHARS},
                "minItems": dimension.values,
                "maxItems": dimension.values,
            }
            for dimension in step.dimensions
        }
    )


def propose_request(plan: Plan, step: ProposeStep) -> ChatRequest:
    """The one call proposing the values of every `vary` dimension of a population.

    It sees the population's demographics description, context and
    particularities; it uses the population's own model and temperature, when set.
    """
    population = _population(plan, step.population)
    user = render_prompt(
        "propose_user.j2",
        demographics=population.demographics_description,
        context=population.context,
        particularities=population.particularities,
        dimensions=[d.model_dump() for d in step.dimensions],
    )
    schema = propose_schema(step)
    request = ChatRequest(
        messages=(
            Message("system", render_prompt("propose_system.j2")),
            Message("user", user),
        ),
        temperature=plan.settings.temperature,
        max_tokens=_worst_case_chars(schema) // 2 + 64,
        json_schema=schema,
        schema_name="proposal",
        seed=derive_seed(plan.settings.seed, step.id, step.population, "propose"),
        purpose=f"propose {step.population}",
    )
    first = plan.agent(population.members[0]) if population.members else None
    return with_agent_model(request, first) if first is not None else request


def vary_values(
    step: ProposeStep, answer: Mapping[str, Any], members: Sequence[AgentPlan]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Each member's value of every dimension, from the proposal; and notes on repairs.

    Values are stripped; empty ones and repeats (ignoring case) are dropped, in
    the order proposed. With all N values left, a member takes the value of its
    plan slot, so the quota holds exactly as planned. With fewer (M), the quota
    is redone over what remains: members ordered by (slot, agent id) take the M
    values in turn, so each is used floor or ceil(size / M) times, and members
    are still spread at random (the slots are a seeded shuffle).
    """
    varied: dict[str, dict[str, str]] = {member.id: {} for member in members}
    notes: list[str] = []
    for dimension in step.dimensions:
        proposed = answer.get(dimension.name)
        raw = [str(value) for value in proposed] if isinstance(proposed, list) else []
        values: list[str] = []
        seen: set[str] = set()
        for value in raw:
            text = " ".join(value.split())
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                values.append(text)
        if not values:
            raise RuntimeError(
                f"the proposal for `{dimension.name}` of {step.population} holds no usable value"
            )
        if len(values) < dimension.values:
            notes.append(
                f"{step.population}: `{dimension.name}` got {len(values)} distinct values of "
                f"the {dimension.values} asked for ({len(raw) - len(values)} empty or repeated "
                f"dropped); each member takes one of the {len(values)}, quota exact over them"
            )
            order = sorted(members, key=lambda m: (m.vary_slots[dimension.name], m.id))
            for position, member in enumerate(order):
                varied[member.id][dimension.name] = values[position % len(values)]
        else:
            for member in members:
                varied[member.id][dimension.name] = values[member.vary_slots[dimension.name]]
    return varied, notes


def _population(plan: Plan, name: str) -> PopulationPlan:
    return next(p for p in plan.populations if p.name == name)
