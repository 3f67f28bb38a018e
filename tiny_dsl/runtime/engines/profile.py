"""How a run is tuned for its engine and provider: the one place that decides it.

    profile = engine_profile("tinytroupe", "embedded")
    EmbeddedProvider(n_ctx=profile.n_ctx)              # when n_ctx is not None
    LLMClient(..., attempt_timeout_s=profile.attempt_timeout_s)
    TinyTroupeEngine(client, memory=profile.memory)

On the embedded model, TinyTroupe's agent prompt (about 5,600 tokens before any
memory) needs the model's full 8k window, so the provider is built with
`TINYTROUPE_EMBEDDED_N_CTX`. Reading that prompt from scratch takes the model
one to several minutes on two cores (8.5 measured on a busy machine; an agent's
later turns resume from the provider's saved state of its previous prompt), so
an attempt may take `TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S` (the client's usual
limit would time every first turn out and retry it). The engine then also shows
agents a compact memory window (`COMPACT_MEMORY`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COMPACT_MEMORY",
    "DEFAULT_ATTEMPT_TIMEOUT_S",
    "TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S",
    "TINYTROUPE_EMBEDDED_N_CTX",
    "EngineProfile",
    "MemoryWindow",
    "engine_profile",
]

# The embedded model's (SmolLM2's) trained context, which TinyTroupe's prompts need.
TINYTROUPE_EMBEDDED_N_CTX = 8192
# Per-attempt limit for one TinyTroupe turn on the embedded model (measured: about
# 510 s for a prompt read from scratch on a loaded two-core machine).
TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S = 1800.0
# Per-attempt limit for everything else.
DEFAULT_ATTEMPT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class MemoryWindow:
    """How much episodic memory an agent's prompt shows (TinyTroupe's knobs).

    `fixed_prefix` and `lookback` are `EpisodicMemory`'s first and last items
    kept in the prompt; `item_chars` is TinyTroupe's `MAX_CONTENT_DISPLAY_LENGTH`,
    the cut applied to each remembered item (and to the history extraction reads).
    """

    fixed_prefix: int
    lookback: int
    item_chars: int


# TinyTroupe's agent prompt is about 5,600 tokens before any memory. With its default
# window (10 + 20 items of up to 4,000 characters) a focus group outgrows the embedded
# model's 8k context by the third round; this window keeps every turn inside it.
COMPACT_MEMORY = MemoryWindow(fixed_prefix=2, lookback=8, item_chars=240)


@dataclass(frozen=True)
class EngineProfile:
    """The tuning a run on one engine and provider needs.

    `n_ctx`: the context window to build the embedded provider with (None: its
    default); `attempt_timeout_s`: the client's per-attempt limit; `memory`: the
    TinyTroupe engine's prompt memory window (None: TinyTroupe's own).
    """

    n_ctx: int | None
    attempt_timeout_s: float
    memory: MemoryWindow | None


def engine_profile(engine_name: str, provider_name: str | None) -> EngineProfile:
    """The tuning for `engine_name` on `provider_name` (None: the default, the embedded model)."""
    if engine_name == "tinytroupe" and provider_name in (None, "embedded"):
        return EngineProfile(
            n_ctx=TINYTROUPE_EMBEDDED_N_CTX,
            attempt_timeout_s=TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S,
            memory=COMPACT_MEMORY,
        )
    return EngineProfile(n_ctx=None, attempt_timeout_s=DEFAULT_ATTEMPT_TIMEOUT_S, memory=None)
