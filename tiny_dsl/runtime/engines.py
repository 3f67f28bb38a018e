"""Choosing the engine a run uses: `engine` in the scenario settings, or `--engine`.

    engine = make_engine(cli_choice, plan, client)   # cli_choice None: the plan's setting

`builtin` is always available. `tinytroupe` needs TinyTroupe, an optional extra
installed from its repository (PyPI's `tinytroupe` is an empty placeholder);
without it `make_engine` raises `EngineUnavailable` with the install
instructions, which the CLI reports with exit status 2.

On the embedded model, TinyTroupe's agent prompt (about 5,600 tokens before any
memory) needs the model's full 8k window: build the provider with
`EmbeddedProvider(n_ctx=TINYTROUPE_EMBEDDED_N_CTX)`. Reading that prompt from
scratch takes the model one to several minutes on two cores (8.5 measured on a
busy machine; an agent's later turns resume from the provider's saved state of
its previous prompt), so give the `LLMClient`
`attempt_timeout_s=TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S` (its default would time
every first turn out and retry it). The engine then also shows agents a compact
memory window (`COMPACT_MEMORY`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tiny_dsl.plan.model import Plan
from tiny_dsl.runtime.builtin import BuiltinEngine
from tiny_dsl.runtime.client import ClientStats
from tiny_dsl.runtime.engine import Engine
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, Message, Provider
from tiny_dsl.runtime.tinytroupe import (
    COMPACT_MEMORY,
    INSTALL_HINT,
    TinyTroupeEngine,
    tinytroupe_installed,
)

__all__ = [
    "ENGINE_NAMES",
    "TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S",
    "TINYTROUPE_EMBEDDED_N_CTX",
    "EngineUnavailable",
    "make_engine",
]

ENGINE_NAMES = ("builtin", "tinytroupe")
# The embedded model's (SmolLM2's) trained context, which TinyTroupe's prompts need.
TINYTROUPE_EMBEDDED_N_CTX = 8192
# Per-attempt limit for one TinyTroupe turn on the embedded model (measured: about
# 510 s for a prompt read from scratch on a loaded two-core machine).
TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S = 1800.0


class EngineUnavailable(RuntimeError):
    """The selected engine cannot run in this environment; the message says how to fix it."""


class EngineClient(Protocol):
    """What engines need from `LLMClient`."""

    provider: Provider
    stats: ClientStats

    async def answer_room(self, messages: tuple[Message, ...]) -> int | None: ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


def make_engine(
    name: str | None,
    plan: Plan,
    client: EngineClient,
    *,
    log_dir: Path | None = None,
    verbose: bool = False,
) -> Engine:
    """The engine called `name`, or the plan's `engine` setting when `name` is None.

    `log_dir` and `verbose` only concern the TinyTroupe engine (where its log
    file goes; whether it prints its conversation display).
    """
    selected = name or plan.settings.engine
    if selected == "builtin":
        return BuiltinEngine(client)
    if selected == "tinytroupe":
        if not tinytroupe_installed():
            raise EngineUnavailable(INSTALL_HINT)
        memory = COMPACT_MEMORY if client.provider.name == "embedded" else None
        return TinyTroupeEngine(client, memory=memory, log_dir=log_dir, verbose=verbose)
    raise ValueError(f"unknown engine {selected!r}; choose one of: {', '.join(ENGINE_NAMES)}")
