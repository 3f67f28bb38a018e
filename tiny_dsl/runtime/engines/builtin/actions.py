"""An agent turn's answer: TinyTroupe's action list under a bounded JSON schema.

One model call per turn returns `{"actions": [...], "cognitive_state": {...}}`,
as TinyTroupe's `CognitiveActionsModel` does, restricted to what an agent can do
in the built-in engine's worlds: TALK (heard by others as the world allows) and
THINK (private). The model cannot answer DONE: a turn is one call whatever it
says, and a small model given the choice ends most turns having said and thought
nothing (`runtime.quality` flags those as empty). The turn's DONE, which the
transcript keeps as TinyTroupe's does, is recorded by the engine after the actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiny_dsl.runtime.engines.turns import (
    CONTENT_MAX_CHARS,
    MAX_ACTIONS,
    STATE_MAX_CHARS,
    TARGET_MAX_CHARS,
)

__all__ = [
    "ACTION_MAX_TOKENS",
    "Action",
    "parse_turn",
    "turn_schema",
]

_STATE_KEYS = ("goals", "attention", "emotions")
# What the model may answer; each needs a content.
TURN_ACTION_TYPES = ("TALK", "THINK")
# Shorter contents are not a thought or a sentence (and a blank one would be dropped).
CONTENT_MIN_CHARS = 2
# TinyTroupe's limit (`turns.MAX_ACTIONS`) counts the DONE that ends its list.
TURN_MAX_ACTIONS = MAX_ACTIONS - 1

# The longest schema-valid answer at about two characters per token: a turn cut off by
# max_tokens would be invalid JSON, so the limit covers the worst case.
ACTION_MAX_TOKENS = (
    TURN_MAX_ACTIONS * (CONTENT_MAX_CHARS + TARGET_MAX_CHARS + 48)
    + len(_STATE_KEYS) * (STATE_MAX_CHARS + 16)
) // 2 + 64


def turn_schema(targets: list[str]) -> dict[str, Any]:
    """The schema of one turn; `target` is "" (everyone present) or one of `targets`.

    A closed list of names instead of free text means a TALK can only address
    someone who is there (and, under constrained decoding, a small model cannot
    invent or misspell a name).
    """
    return {
        "type": "object",
        "properties": {
            "actions": {
                "type": "array",
                "minItems": 1,
                "maxItems": TURN_MAX_ACTIONS,
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "enum": list(TURN_ACTION_TYPES)},
                        "content": {
                            "type": "string",
                            "minLength": CONTENT_MIN_CHARS,
                            "maxLength": CONTENT_MAX_CHARS,
                        },
                        "target": {"type": "string", "enum": ["", *targets]},
                    },
                    "required": ["type", "content", "target"],
                    "additionalProperties": False,
                },
            },
            "cognitive_state": {
                "type": "object",
                "properties": {
                    key: {"type": "string", "maxLength": STATE_MAX_CHARS} for key in _STATE_KEYS
                },
                "required": list(_STATE_KEYS),
                "additionalProperties": False,
            },
        },
        "required": ["actions", "cognitive_state"],
        "additionalProperties": False,
    }


@dataclass(frozen=True, slots=True)
class Action:
    type: str  # TALK, THINK or DONE
    content: str
    target: str


def parse_turn(data: dict[str, Any]) -> tuple[list[Action], dict[str, str]]:
    """The actions, ending with the turn's DONE, and the cognitive state.

    The data has already passed the schema (the client validates), so this only
    normalises: whitespace is stripped and an action left without content is
    dropped (there is nothing to say or think).
    """
    actions: list[Action] = []
    for item in data.get("actions", []):
        content = item["content"].strip()
        if content:
            actions.append(Action(item["type"], content, item["target"].strip()))
    actions.append(Action("DONE", "", ""))
    state = {key: str(data.get("cognitive_state", {}).get(key, "")).strip() for key in _STATE_KEYS}
    return actions, state
