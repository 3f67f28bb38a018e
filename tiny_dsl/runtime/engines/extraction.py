"""The extraction model call: one structured call per agent over what that agent saw and did.

Engine-independent: the built-in engine passes the agent's transcript events in
the extracted world and its persona; this module builds the request, makes the
call and turns the answer into a validated row (`tiny_dsl.extraction` holds the
pure schema and row building). The TinyTroupe engine makes the call through
TinyTroupe's `ResultsExtractor` and turns its answer into values with
`answer_values`, the same way. Following TinyTroupe's
`ResultsExtractor`, the model reads the agent's own trajectory; unlike it, the
answer is schema-constrained and checked field by field, and whatever cannot be
obtained is recorded as missing with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tiny_dsl.extraction.rows import MISSING_COLUMN, build_row
from tiny_dsl.extraction.schema import extraction_schema, max_answer_tokens, validate_answer
from tiny_dsl.plan.model import (
    AgentPlan,
    ExtractOverallStep,
    ExtractStep,
    FieldPlan,
    InterventionPlan,
)
from tiny_dsl.runtime.engines.core import TranscriptEvent
from tiny_dsl.runtime.engines.personas import with_agent_model
from tiny_dsl.runtime.engines.prompts import derive_seed, memory_view, render_prompt
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, InvalidOutput, Message

__all__ = [
    "EXTRACT_RECORD_CHARS",
    "ExtractionClient",
    "answer_values",
    "extract_overall_record",
    "extract_row",
    "extraction_request",
    "overall_record",
    "rank_words",
]

# How much of an agent's record the extraction prompt shows (newest first). Long
# enough for a survey answer or a few focus-group rounds, short enough for a
# 4k-token context such as the embedded model's.
EXTRACT_RECORD_CHARS = 6000
_RECORD_ITEM_CHARS = 800


class ExtractionClient(Protocol):
    """The part of `LLMClient` extraction needs."""

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


def extraction_request(
    *,
    seed: int,
    step: ExtractStep,
    agent_id: str,
    name: str,
    brief: str,
    events: list[TranscriptEvent],
) -> ChatRequest:
    """The request for one agent.

    Temperature is 0: extraction reads facts off a record, it should not be
    creative, and repeated extractions of the same record should agree.
    """
    view, omitted = memory_view(
        events, me=agent_id, max_chars=EXTRACT_RECORD_CHARS, item_chars=_RECORD_ITEM_CHARS
    )
    user = render_prompt(
        "extract_user.j2",
        name=name,
        brief=brief,
        events=view,
        omitted=omitted,
        fields=[
            {"name": f.name, "type": _describe(f), "description": f.description}
            for f in step.fields
        ],
    )
    return ChatRequest(
        messages=(
            Message("system", render_prompt("extract_system.j2")),
            Message("user", user),
        ),
        temperature=0.0,
        max_tokens=max_answer_tokens(step.fields),
        json_schema=extraction_schema(step.fields),
        schema_name="extraction",
        seed=derive_seed(seed, step.id, agent_id, "extract"),
        purpose=f"extract {agent_id}",
    )


async def extract_row(
    client: ExtractionClient,
    *,
    seed: int,
    step: ExtractStep,
    agent: AgentPlan,
    name: str,
    persona: Mapping[str, Any],
    brief: str,
    events: list[TranscriptEvent],
    interventions: list[InterventionPlan],
) -> dict[str, Any]:
    """Ask the model about one agent and return its validated row.

    An answer that still violates the schema after the client's repair attempts
    makes every field missing with that reason; provider failures (network,
    budget, replay miss) propagate and stop the step, since retrying later can
    succeed.
    """
    request = extraction_request(
        seed=seed, step=step, agent_id=agent.id, name=name, brief=brief, events=events
    )
    # The agent's own model reads its record; at temperature 0 like every extraction.
    request = with_agent_model(request, agent, temperature=False)
    answer: Any
    try:
        answer = (await client.complete(request)).data
    except InvalidOutput as exc:
        answer = exc
    values, missing = answer_values(step.fields, answer)
    return build_row(
        agent=agent,
        name=name,
        world=step.world,
        persona=persona,
        interventions=interventions,
        values=values,
        missing=missing,
    )


async def extract_overall_record(
    client: ExtractionClient,
    *,
    seed: int,
    step: ExtractOverallStep,
    context: str,
    histories: list[tuple[str, str, list[TranscriptEvent]]],
) -> dict[str, Any]:
    """One call over the whole world's record: each agent's (id, name, events in the world).

    The record is shared out evenly between the agents, newest events kept, so that
    every participant is heard however long one of them talked.
    """
    share = max(EXTRACT_RECORD_CHARS // max(len(histories), 1), _RECORD_ITEM_CHARS)
    shown = []
    for agent_id, name, events in histories:
        view, omitted = memory_view(
            events, me=agent_id, max_chars=share, item_chars=_RECORD_ITEM_CHARS
        )
        shown.append({"name": name, "events": view, "omitted": omitted})
    user = render_prompt(
        "extract_world_user.j2",
        world=step.world,
        context=context,
        histories=shown,
        fields=[
            {"name": f.name, "type": _describe(f), "description": f.description}
            for f in step.fields
        ],
    )
    request = ChatRequest(
        messages=(
            Message("system", render_prompt("extract_world_system.j2")),
            Message("user", user),
        ),
        temperature=0.0,
        max_tokens=max_answer_tokens(step.fields),
        json_schema=extraction_schema(step.fields),
        schema_name="extraction",
        seed=derive_seed(seed, step.id, step.world, "extract_overall"),
        purpose=f"extract overall {step.world}",
    )
    answer: Any
    try:
        answer = (await client.complete(request)).data
    except InvalidOutput as exc:
        answer = exc
    return overall_record(step, answer)


def overall_record(step: ExtractOverallStep, answer: Any) -> dict[str, Any]:
    """The world's summary record: `world`, `step`, the fields, `_missing` (as in rows)."""
    values, missing = answer_values(step.fields, answer)
    return {"world": step.world, "step": step.id, **values, MISSING_COLUMN: missing}


def answer_values(fields: list[FieldPlan], answer: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Field values and the reasons for missing ones, from a model's answer.

    `answer` is the structured answer, or the `InvalidOutput` raised when it
    still violated the schema after the client's repairs: then every field is
    missing with that reason.
    """
    if isinstance(answer, InvalidOutput):
        reason = f"the model's answer did not match the schema: {answer}"
        return {field.name: None for field in fields}, {field.name: reason for field in fields}
    return validate_answer(fields, answer)


def _describe(field: FieldPlan) -> str:
    """The field's type in words, for the prompt (the schema says it formally)."""
    if field.kind in ("int", "float"):
        noun = "integer" if field.kind == "int" else "number"
        if field.low is not None and field.high is not None:
            return f"{noun} from {_number(field.low)} to {_number(field.high)}"
        return noun
    if field.kind == "bool":
        return "true or false"
    if field.kind == "enum":
        return "one of " + ", ".join(field.members)
    if field.kind == "list":
        return "list of short texts"
    if field.kind == "rank":
        return rank_words(field)
    return "short text"


def rank_words(field: FieldPlan) -> str:
    """A `rank` field's type in words (the TinyTroupe engine's hints say it the same way)."""
    return "a ranking of all of " + ", ".join(field.members) + " (a list, best first)"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)
