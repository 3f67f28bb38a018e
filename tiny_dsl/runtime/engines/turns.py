"""Bounds of an agent turn's answer, shared by both engines' turn schemas.

Every free string needs one: a small model decoding under a grammar tends to
ramble up to the limit, so they also bound the worst-case time of a call. The
built-in engine's schema (`builtin.actions`) and the bounds the TinyTroupe
bridge puts on TinyTroupe's pydantic models use the same numbers, so both
engines ask for answers of the same size.
"""

from __future__ import annotations

__all__ = [
    "ACTION_TYPES",
    "CONTENT_MAX_CHARS",
    "MAX_ACTIONS",
    "STATE_MAX_CHARS",
    "TARGET_MAX_CHARS",
]

# The actions the DSL's worlds give meaning to: TALK (heard by others as the world
# allows), THINK (private) and DONE (end of turn).
ACTION_TYPES = ("TALK", "THINK", "DONE")
MAX_ACTIONS = 4
CONTENT_MAX_CHARS = 400
STATE_MAX_CHARS = 80
# Longest target name counted in the token budget (targets are an enum of names present).
TARGET_MAX_CHARS = 60
