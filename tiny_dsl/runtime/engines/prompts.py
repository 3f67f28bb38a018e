"""What both engines put into their prompts: seeds, templates, memory views, delivery frames.

Shared so that the two engines send byte-identical requests wherever their
semantics agree (persona generation, extraction), and therefore share cached
answers, and frame a delivered message the same way.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tiny_dsl.resources import templates_dir
from tiny_dsl.runtime.engines.core import TranscriptEvent

__all__ = [
    "CHANNEL_FRAMES",
    "delivery_text",
    "derive_seed",
    "memory_view",
    "render_prompt",
    "time_label",
]

# How a delivered message is framed, by channel; other channels get a generic frame.
CHANNEL_FRAMES = {
    "email": "You receive an email",
    "sms": "You receive a text message",
    "text": "You receive a text message",
    "push": "You get a push notification",
    "in_app": "You see a message in the app",
    "social": "You see a social media post",
    "ad": "You see an ad",
    "letter": "You receive a letter",
    "mail": "You receive a letter",
    "phone": "You get a phone call",
    "web": "You see on a website",
}


def delivery_text(channel: str, content: str) -> str:
    """`[email] You receive an email: "..."`: a delivered message as the recipient sees it."""
    frame = CHANNEL_FRAMES.get(channel, f"You receive a message ({channel})")
    return f'[{channel}] {frame}: "{content}"'


def derive_seed(seed: int, *parts: str | int) -> int:
    """A per-call seed from the plan seed and what identifies the call.

    Hashing (step id, agent id, ...) rather than counting calls makes every
    call's seed independent of how many other calls ran before it or in which
    order they completed, so a resumed or reordered run sends identical requests
    and hits the LLM cache. 31 bits keep every provider's seed parameter happy.
    """
    payload = json.dumps([seed, *parts], separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(payload.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    # Templates ship with the package and are trusted; scenario text only ever arrives
    # as render data. The sandbox still guards against a template (or a future
    # user-supplied one) reaching into Python objects passed as data. Autoescape is
    # off because prompts are plain text, not HTML.
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir())),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render_prompt(template: str, **data: Any) -> str:
    """Render `tiny_dsl/runtime/prompts/<template>` with `data` (missing names raise)."""
    return _environment().get_template(template).render(**data).strip()


def time_label(iso: str) -> str:
    """`2025-03-03T08:00:00` as prompts show it: `2025-03-03 08:00`."""
    return iso[:16].replace("T", " ")


def memory_view(
    events: list[TranscriptEvent],
    *,
    me: str,
    max_chars: int,
    item_chars: int,
) -> tuple[list[dict[str, Any]], int]:
    """The most recent events that fit in `max_chars`, as prompt data, and how many were left out.

    `DONE` actions are skipped (they carry no content). Each item's content is
    cut at `item_chars`; `to_you` marks speech addressed to `me`. Newest events
    win because what just happened is what the next action responds to.
    """
    selected: list[dict[str, Any]] = []
    used = 0
    shown = [event for event in events if event.type != "DONE"]
    for event in reversed(shown):
        content = event.content
        if len(content) > item_chars:
            content = content[: item_chars - 3].rstrip() + "..."
        cost = len(content) + 40
        if selected and used + cost > max_chars:
            break
        used += cost
        selected.append(
            {
                "time": time_label(event.time),
                "kind": event.kind,
                "type": event.type,
                "content": content,
                "source_name": event.source_name,
                "target_name": event.target_name,
                "to_you": event.target == me,
            }
        )
    selected.reverse()
    return selected, len(shown) - len(selected)
