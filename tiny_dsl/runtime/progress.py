"""Run progress: the events the interpreter emits, and the displays that consume them.

The interpreter calls `on_event(RunEvent)` at run and step boundaries. Every
event carries the client's live `ClientStats`, so a display can show call
counts, cache hits, tokens, cost and retries as they change within a step (the
live display re-reads them several times a second) without subscribing to
individual model calls.

`make_progress(quiet=..., stream=...)` picks the display: nothing when quiet, a
live `rich` panel on a terminal, one plain line per step otherwise (logs, CI):

    [03/09] ask inbox: 24 calls (20 cached) 12.3s
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Literal, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tiny_dsl.runtime.client import ClientStats

__all__ = [
    "LiveProgress",
    "PlainProgress",
    "ProgressDisplay",
    "QuietProgress",
    "RunEvent",
    "RunEventKind",
    "make_progress",
]

RunEventKind = Literal[
    "run_started",
    "step_started",
    "step_finished",
    "warning",
    "run_finished",
    "run_failed",
]


@dataclass(frozen=True)
class RunEvent:
    """Something that happened in a run.

    `index` is the 0-based step index (-1 for run-level events) of `total`
    steps; `restored` (on `run_started`) is how many leading steps came from a
    checkpoint. `calls`/`cached` are the step's requests (sent plus answered
    from the cache) and cache hits. `stats` is the client's live counter
    object, not a copy.
    """

    kind: RunEventKind
    total: int
    stats: ClientStats = field(default_factory=ClientStats)
    index: int = -1
    step_id: str = ""
    label: str = ""
    duration_s: float = 0.0
    calls: int = 0
    cached: int = 0
    restored: int = 0
    message: str = ""


class ProgressDisplay(Protocol):
    """A run-event consumer usable as a context manager around the run."""

    def __call__(self, event: RunEvent) -> None: ...

    def __enter__(self) -> ProgressDisplay: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _Display(ABC):
    """Context-manager plumbing shared by the displays."""

    @abstractmethod
    def __call__(self, event: RunEvent) -> None: ...

    def __enter__(self) -> _Display:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class QuietProgress(_Display):
    """`--quiet`: prints nothing (errors still reach the caller as exceptions)."""

    def __call__(self, event: RunEvent) -> None:
        return None


def _totals(stats: ClientStats) -> str:
    return (
        f"{stats.model_calls} model calls, {stats.cache_hits} cache hits, "
        f"{stats.input_tokens:,} in / {stats.output_tokens:,} out tokens, "
        f"${stats.cost_usd:.4f}, {stats.retries} retries"
    )


def _calls(event: RunEvent) -> str:
    if not event.calls:
        return ""
    return f"{event.calls} call{'s' if event.calls != 1 else ''} ({event.cached} cached) "


class PlainProgress(_Display):
    """One line per step and per warning, for logs and CI."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: RunEvent) -> None:
        width = len(str(event.total))
        position = f"[{event.index + 1:0{width}d}/{event.total:0{width}d}]"
        if event.kind == "run_started" and event.restored:
            self._print(
                f"resuming: {event.restored} of {event.total} steps restored from checkpoints"
            )
        elif event.kind == "step_finished":
            self._print(f"{position} {event.label}: {_calls(event)}{event.duration_s:.1f}s")
        elif event.kind == "warning":
            self._print(f"warning: {event.message}")
        elif event.kind == "run_failed":
            self._print(f"{position} {event.label}: FAILED after {event.duration_s:.1f}s")
        elif event.kind == "run_finished":
            self._print(f"done in {event.duration_s:.1f}s: {_totals(event.stats)}")

    def _print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)


class LiveProgress(_Display):
    """A live panel on a terminal: current step, steps done, calls, cache hits, tokens, cost."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live = Live(console=console, refresh_per_second=4, transient=False)
        self._live.update(self)  # re-rendered on every refresh via __rich__
        self._event = RunEvent("run_started", total=0)
        self._done = 0
        self._step_started = time.monotonic()
        self._step_calls_before = 0

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.stop()

    def __call__(self, event: RunEvent) -> None:
        self._event = event
        if event.kind == "run_started":
            self._done = event.restored
            if event.restored:
                self._console.print(
                    f"resuming: {event.restored} of {event.total} steps restored from checkpoints"
                )
        elif event.kind == "step_started":
            self._step_started = time.monotonic()
            self._step_calls_before = event.stats.model_calls + event.stats.cache_hits
        elif event.kind == "step_finished":
            self._done = event.index + 1
            self._console.print(
                f"[green]✓[/] {event.label}: {_calls(event)}{event.duration_s:.1f}s"
            )
        elif event.kind == "warning":
            self._console.print(f"[yellow]warning:[/] {event.message}")
        elif event.kind == "run_failed":
            self._console.print(f"[red]✗[/] {event.label}: failed")
        self._live.refresh()

    def __rich__(self) -> RenderableType:
        event, stats = self._event, self._event.stats
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        if event.kind in ("step_started", "step_finished") and event.total:
            step_calls = stats.model_calls + stats.cache_hits - self._step_calls_before
            current = (
                f"{event.label}  ({step_calls} calls, {time.monotonic() - self._step_started:.0f}s)"
                if event.kind == "step_started"
                else "-"
            )
            table.add_row("step", current)
        table.add_row("steps", f"{self._done}/{event.total}")
        table.add_row("model calls", f"{stats.model_calls}  (cache hits {stats.cache_hits})")
        table.add_row("tokens", f"{stats.input_tokens:,} in / {stats.output_tokens:,} out")
        table.add_row("cost", f"${stats.cost_usd:.4f}")
        table.add_row("retries", str(stats.retries))
        return Group(Text("tts run", style="bold cyan"), table)


def make_progress(*, quiet: bool = False, stream: IO[str] | None = None) -> ProgressDisplay:
    """The display for this output: quiet, live (a terminal) or plain lines."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return QuietProgress()
    if stream.isatty():
        return LiveProgress(Console(file=stream))
    return PlainProgress(stream)
