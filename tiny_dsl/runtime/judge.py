"""Model-judged quality of agent turns: `quality { judge [...]; threshold T }`.

Like TinyTroupe's action quality checks (`ActionGenerator`'s persona adherence,
self-consistency, fluency and suitability, each a 0-9 `Proposition`), but one
call per turn scores every criterion the scenario names, each with a short
reason first (a model that explains before it scores scores more consistently).

The judge reads the transcript, not an engine: the interpreter calls it after
each step on the turns that step added, so both engines are judged the same
way, the calls are counted in the step and its checkpoint keeps the scores
(a resumed run does not judge a restored step again). The calls go through
the run's `LLMClient`, so they are cached and recorded before use like any
other. Turns that say nothing (flagged `empty` already) and the replies of
external agents (which have no persona) are not judged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from tiny_dsl.plan.model import Plan
from tiny_dsl.runtime.engines.core import TranscriptEvent
from tiny_dsl.runtime.engines.prompts import derive_seed, render_prompt
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, Message
from tiny_dsl.runtime.quality import Turn, transcript_turns

__all__ = [
    "CRITERIA",
    "JudgeClient",
    "Judgments",
    "judge_request",
    "judge_turns",
]

# What each criterion asks, as TinyTroupe's stock propositions do.
CRITERIA = {
    "persona_adherence": (
        "Does the turn fit the persona: what this person would say and think, in their "
        "own voice, with their background, opinions and style?"
    ),
    "self_consistency": (
        "Is the turn consistent with what the person said and did before, without contradicting it?"
    ),
    "fluency": (
        "Is the turn fluent and natural, like a real person talking, without "
        "repetitive, formulaic or garbled language?"
    ),
    "suitability": (
        "Is the turn a suitable response to what the person just heard or was asked, "
        "rather than an echo of it or something beside the point?"
    ),
}
SCORE_MAX = 9
REASON_MAX_CHARS = 160
# How much of the persona, of what was heard and of the turn before the prompt shows.
_PERSONA_CHARS = 1500
_HEARD_CHARS = 1200
_PREVIOUS_CHARS = 600
# Judged turns should score the same on every run: the judge does not sample.
_TEMPERATURE = 0.0

# Turn key (`quality.Turn.key`) -> criterion -> score.
Judgments = dict[int, dict[str, int]]


class JudgeClient(Protocol):
    """The part of `LLMClient` the judge needs."""

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


def _schema(criteria: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            name: {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
                    "score": {"type": "integer", "minimum": 0, "maximum": SCORE_MAX},
                },
                "required": ["reason", "score"],
                "additionalProperties": False,
            }
            for name in criteria
        },
        "required": list(criteria),
        "additionalProperties": False,
    }


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def judge_request(plan: Plan, turn: Turn, name: str, persona: Mapping[str, Any]) -> ChatRequest:
    """The call that scores one turn of `name` on the plan's criteria."""
    criteria = plan.settings.judge
    system = render_prompt(
        "judge_system.j2",
        criteria=[{"name": c, "question": CRITERIA[c]} for c in criteria],
        top=SCORE_MAX,
    )
    user = render_prompt(
        "judge_user.j2",
        name=name,
        persona=json.dumps(persona, ensure_ascii=False, separators=(",", ":"))[:_PERSONA_CHARS],
        heard=_cut("\n".join(turn.heard), _HEARD_CHARS),
        previous=_cut(turn.previous or "", _PREVIOUS_CHARS),
        turn=[
            {"type": event.type, "content": event.content}
            for event in turn.events
            if event.type in ("TALK", "THINK") and event.content.strip()
        ],
    )
    return ChatRequest(
        messages=(Message("system", system), Message("user", user)),
        temperature=_TEMPERATURE,
        # Each criterion's reason at about two characters per token, its score and keys.
        max_tokens=len(criteria) * (REASON_MAX_CHARS // 2 + 24) + 16,
        json_schema=_schema(criteria),
        schema_name="turn_judgment",
        seed=derive_seed(plan.settings.seed, "judge", turn.step, turn.agent, turn.key),
        purpose=f"judge {turn.agent}",
    )


def judged_turns(plan: Plan, transcript: Sequence[TranscriptEvent], step_id: str) -> list[Turn]:
    """The turns of step `step_id` the judge scores."""
    return [
        turn
        for turn in transcript_turns(plan, transcript)
        if turn.step == step_id and not turn.external and turn.text
    ]


async def judge_turns(
    plan: Plan,
    transcript: Sequence[TranscriptEvent],
    step_id: str,
    personas: Mapping[str, Mapping[str, Any]],
    client: JudgeClient,
) -> Judgments:
    """Score every turn step `step_id` added to the transcript, concurrently (the
    client bounds concurrency)."""
    turns = judged_turns(plan, transcript, step_id)
    names = _names(transcript)

    async def score(turn: Turn) -> tuple[int, dict[str, int]]:
        persona = personas.get(turn.agent, {})
        request = judge_request(plan, turn, names.get(turn.agent, turn.agent), persona)
        data = (await client.complete(request)).data
        if not isinstance(data, dict):
            raise RuntimeError(f"the judge returned no JSON object for a turn of {turn.agent}")
        return turn.key, {name: int(data[name]["score"]) for name in plan.settings.judge}

    # Every judgment that was going to arrive is recorded before the first failure (in
    # turn order, so independent of timing) is raised: a re-run does not pay for them.
    results = await asyncio.gather(*(score(turn) for turn in turns), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return dict(result for result in results if not isinstance(result, BaseException))


def _names(transcript: Iterable[TranscriptEvent]) -> dict[str, str]:
    """Agent id -> the name it had last in the transcript (generated members are renamed)."""
    return {event.agent: event.agent_name for event in transcript}
