"""The simulation engines, and choosing the one a run uses (`engine` setting or `--engine`).

    engine = make_engine(cli_choice, plan, client)   # cli_choice None: the plan's setting

`builtin` is always available. `tinytroupe` needs TinyTroupe, an optional extra
installed from its repository (PyPI's `tinytroupe` is an empty placeholder);
without it `make_engine` raises `EngineUnavailable` with the install
instructions, which the CLI reports with exit status 2.

Modules: `core` (the `Engine` protocol, transcript events, dispatch by step
kind, event numbering, saved-state header), `prompts` (seeds, templates, memory
views, delivery frames), `personas` (the persona generation call, member
naming), `turns` (turn answer bounds), `extraction` (the extraction call),
`profile` (tuning per engine and provider: `engine_profile`), and the two
engines, `builtin` and `tinytroupe`, which import only those, never each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tiny_dsl.plan.model import Plan
from tiny_dsl.runtime.client import ClientStats
from tiny_dsl.runtime.engines.builtin import BuiltinEngine
from tiny_dsl.runtime.engines.core import Engine, ExternalReplies
from tiny_dsl.runtime.engines.profile import (
    TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S,
    TINYTROUPE_EMBEDDED_N_CTX,
    EngineProfile,
    engine_profile,
)
from tiny_dsl.runtime.engines.tinytroupe import (
    INSTALL_HINT,
    TinyTroupeEngine,
    tinytroupe_installed,
)
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, Message, Provider

__all__ = [
    "ENGINE_NAMES",
    "TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S",
    "TINYTROUPE_EMBEDDED_N_CTX",
    "EngineProfile",
    "EngineUnavailable",
    "engine_profile",
    "make_engine",
]

ENGINE_NAMES = ("builtin", "tinytroupe")


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
    externals: ExternalReplies | None = None,
    log_dir: Path | None = None,
    verbose: bool = False,
) -> Engine:
    """The engine called `name`, or the plan's `engine` setting when `name` is None.

    Tuned for the client's provider by `engine_profile`. `log_dir` and `verbose`
    only concern the TinyTroupe engine (where its log file goes; whether it
    prints its conversation display). `externals` answer for the plan's external
    agents (systems under test).
    """
    selected = name or plan.settings.engine
    if selected == "builtin":
        return BuiltinEngine(client, externals)
    if selected == "tinytroupe":
        if not tinytroupe_installed():
            raise EngineUnavailable(INSTALL_HINT)
        memory = engine_profile(selected, client.provider.name).memory
        return TinyTroupeEngine(
            client, memory=memory, log_dir=log_dir, verbose=verbose, externals=externals
        )
    raise ValueError(f"unknown engine {selected!r}; choose one of: {', '.join(ENGINE_NAMES)}")
