"""An agent turn's answer: TinyTroupe's action list under a bounded JSON schema.

One model call per turn returns `{"actions": [...], "cognitive_state": {...}}`,
as TinyTroupe's `CognitiveActionsModel` does, restricted to the actions the
built-in engine implements: TALK (heard by others as the world allows), THINK
(private) and DONE (end of turn; anything after it is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiny_dsl.runtime.engines.turns import (
    ACTION_TYPES,
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

# The longest schema-valid answer at about two characters per token: a turn cut off by
# max_tokens would be invalid JSON, so the limit covers the worst case.
ACTION_MAX_TOKENS = (
    MAX_ACTIONS * (CONTENT_MAX_CHARS + TARGET_MAX_CHARS + 48)
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
                "maxItems": MAX_ACTIONS,
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "enum": list(ACTION_TYPES)},
                        "content": {"type": "string", "maxLength": CONTENT_MAX_CHARS},
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
    """The actions up to and including the first DONE, and the cognitive state.

    The data has already passed the schema (the client validates), so this only
    normalises: whitespace is stripped, TALK/THINK without content are dropped
    (there is nothing to say or think), and everything after DONE is ignored,
    as TinyTroupe stops acting at DONE.
    """
    actions: list[Action] = []
    for item in data.get("actions", []):
        kind = item["type"]
        content = item["content"].strip()
        if kind == "DONE":
            actions.append(Action("DONE", "", ""))
            break
        if content:
            actions.append(Action(kind, content, item["target"].strip()))
    state = {key: str(data.get("cognitive_state", {}).get(key, "")).strip() for key in _STATE_KEYS}
    return actions, state
