"""The interpreter: executes a plan step by step against an engine, with resume.

    result = run_plan(plan, client=client, state_dir=Path(".tts"), on_event=progress)

The run:

1. Refuses a plan whose `schema_version` it does not know, or whose steps
   carry no chained hashes (it was not compiled).
2. Sets up the engine, then, unless `fresh`, restores the longest prefix of
   steps that have checkpoints (`tiny_dsl.runtime.checkpoints`): an unchanged
   re-run executes nothing, an edit to the last step re-runs only that step.
3. Executes the remaining steps: `extract` steps through `engine.extract`
   (rows of several blocks for one agent and world merge into one row),
   `extract overall` steps through `engine.extract_overall` (one summary
   record each), everything else through `engine.execute`; after each, saves a
   checkpoint holding the engine state, the transcript, the result rows and
   summaries so far (the transcript once: engine states refer to its events by
   `seq`).
   `analyze` steps pass through: the statistics are the analysis stage's, computed
   by the session from the rows this returns. A `replicate` step returns the
   engine to its state right after the people steps (kept from that step's
   checkpoint, so a resumed run has it too), numbering events on; the rows and
   summary records of a plan with several replicates carry `replicate`.
4. Returns a `RunResult`, everything the run produced, in memory; the session
   writes the run folder from it (`tiny_dsl.rundir`, `tiny_dsl.runtime.outputs`).

A step that raises becomes `StepFailed` naming the step and its source
position and carrying the partial result (the transcript so far), so that the
failed run still gets its folder; the next run resumes after the last
completed step. Model calls made inside the failed step were recorded in the
LLM cache by the client, so they are not paid for twice.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

import tiny_dsl
from tiny_dsl.extraction.rows import merge_rows
from tiny_dsl.plan.model import (
    SCHEMA_VERSION,
    AnalyzeStep,
    ExtractOverallStep,
    ExtractStep,
    Origin,
    Plan,
    ReplicateStep,
    Step,
    replicate_of,
)
from tiny_dsl.rundir import StepRecord
from tiny_dsl.runtime.checkpoints import CheckpointCorrupt, CheckpointStore
from tiny_dsl.runtime.client import ClientStats
from tiny_dsl.runtime.engines import make_engine
from tiny_dsl.runtime.engines.core import Engine, TranscriptEvent, continued_state
from tiny_dsl.runtime.external import ExternalAgents
from tiny_dsl.runtime.judge import Judgments, judge_turns
from tiny_dsl.runtime.outputs import step_label
from tiny_dsl.runtime.progress import RunEvent, RunEventKind
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, Message, Provider

__all__ = [
    "PlanError",
    "RunClient",
    "RunResult",
    "StepFailed",
    "StepRecord",
    "arun_plan",
    "load_plan",
    "run_plan",
]

log = logging.getLogger("tiny_dsl.runtime")


class PlanError(ValueError):
    """A plan this interpreter cannot run (unknown schema version, not compiled)."""


class StepFailed(Exception):
    """A step raised; the run stopped after checkpointing everything up to the previous step.

    `origin` is the statement the step comes from; `partial` what the run
    produced until then, for the failed run's folder.
    """

    def __init__(
        self, step_id: str, origin: Origin, cause: BaseException, partial: RunResult
    ) -> None:
        detail = str(cause) or type(cause).__name__
        super().__init__(f"{origin}: step {step_id} failed: {detail}")
        self.step_id = step_id
        self.origin = origin
        self.detail = detail
        self.cause = cause
        self.partial = partial


class RunClient(Protocol):
    """What the interpreter needs from `LLMClient` (model calls go through the engine)."""

    provider: Provider
    stats: ClientStats
    answered_by: set[tuple[str, str]]

    async def answer_room(self, messages: tuple[Message, ...]) -> int | None: ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


@dataclass
class RunResult:
    """Everything a run produced, in memory (a failed run's: up to the failed step)."""

    engine: str
    started: datetime
    duration_s: float
    steps: list[StepRecord]
    transcript: list[TranscriptEvent]
    rows: list[dict[str, Any]]
    personas: dict[str, dict[str, Any]]
    notes: list[str]
    stats: ClientStats
    answered_by: list[tuple[str, str]]  # (provider, model) of every backend that answered
    # One record per `extract overall` step: {world, step, fields..., _missing}.
    summaries: list[dict[str, Any]] = field(default_factory=list)
    # The judge's scores of turns (`quality { judge [...] }`), by turn key.
    judgments: Judgments = field(default_factory=dict)

    @property
    def executed(self) -> list[str]:
        """Ids of the steps this run executed (not restored from a checkpoint)."""
        return [s.id for s in self.steps if s.status == "executed"]

    @property
    def restored(self) -> list[str]:
        return [s.id for s in self.steps if s.status == "restored"]


def load_plan(path: Path) -> Plan:
    """Read a saved `plan.json`, refusing schema versions this interpreter does not know."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise PlanError(f"{path}: cannot read the plan: {exc}") from exc
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise PlanError(
            f"{path}: plan schema version {version!r} is not supported (this tiny_dsl "
            f"{tiny_dsl.__version__} runs version {SCHEMA_VERSION}); re-create it with `tts plan`"
        )
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "the top level"
        raise PlanError(
            f"{path}: not a plan `tts plan` wrote ({exc.error_count()} problems, the first "
            f"at {where}: {exc.errors()[0]['msg']}); re-create it with `tts plan`"
        ) from exc


def _check_plan(plan: Plan) -> None:
    if plan.schema_version != SCHEMA_VERSION:
        raise PlanError(
            f"plan schema version {plan.schema_version} is not supported (this tiny_dsl runs "
            f"version {SCHEMA_VERSION}); re-create it with `tts plan`"
        )
    unhashed = [step.id for step in plan.steps if not step.hash]
    if unhashed:
        raise PlanError(
            f"plan steps without a chained hash ({', '.join(unhashed[:3])}): "
            "plans must come from compile_plan"
        )


def run_plan(
    plan: Plan,
    *,
    client: RunClient,
    state_dir: Path,
    engine: Engine | None = None,
    fresh: bool = False,
    on_event: Callable[[RunEvent], None] | None = None,
    externals: ExternalAgents | None = None,
) -> RunResult:
    """Run `plan` to completion in a new event loop; see `arun_plan` for the parameters.

    This owns the event loop, so it also closes the client's provider and the
    connections of `externals` (the engine's external agents) before returning.
    """

    async def main() -> RunResult:
        try:
            return await arun_plan(
                plan,
                client=client,
                state_dir=state_dir,
                engine=engine,
                fresh=fresh,
                on_event=on_event,
            )
        finally:
            await client.provider.aclose()
            if externals is not None:
                await externals.aclose()

    return asyncio.run(main())


async def arun_plan(
    plan: Plan,
    *,
    client: RunClient,
    state_dir: Path,
    engine: Engine | None = None,
    fresh: bool = False,
    on_event: Callable[[RunEvent], None] | None = None,
) -> RunResult:
    """Run `plan`, resuming from checkpoints under `state_dir` unless `fresh`.

    `engine` defaults to the one the plan's `engine` setting names. Writes
    nothing but checkpoints. Raises `PlanError` for a plan it cannot run and
    `StepFailed` when a step fails.
    """
    _check_plan(plan)
    run = _Run(
        plan=plan,
        client=client,
        store=CheckpointStore(state_dir, plan.settings.scenario),
        engine=engine if engine is not None else _default_engine(plan, client),
        on_event=on_event,
    )
    return await run.execute(fresh=fresh)


def _default_engine(plan: Plan, client: RunClient) -> Engine:
    """The engine the plan's `engine` setting names (`tiny_dsl.runtime.engines`)."""
    return make_engine(None, plan, client)


@dataclass
class _Run:
    plan: Plan
    client: RunClient
    store: CheckpointStore
    engine: Engine
    on_event: Callable[[RunEvent], None] | None
    transcript: list[TranscriptEvent] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    judgments: Judgments = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)
    # The engine state every replicate starts from, once known (see `_people_state`).
    people_state: dict[str, Any] | None = None

    async def execute(self, *, fresh: bool) -> RunResult:
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        steps = self.plan.steps
        self.records = [
            StepRecord(id=s.id, kind=s.kind, label=step_label(s), origin=str(s.origin))
            for s in steps
        ]
        await self.engine.setup(self.plan)
        restarts = {s.after for s in steps if isinstance(s, ReplicateStep)}
        if None in restarts:
            # No people steps: the replicates start from the state setup builds.
            self.people_state = copy.deepcopy(self.engine.dump_state())
        first = 0 if fresh else await self._restore()
        self._emit("run_started", restored=first)
        for index in range(first, len(steps)):
            step = steps[index]
            record = self.records[index]
            self._emit("step_started", index=index, step_id=step.id, label=record.label)
            before = dataclasses.replace(self.client.stats)
            began = time.perf_counter()
            try:
                saved = await self._step(step, record)
            except Exception as exc:
                self._measure(record, before, time.perf_counter() - began)
                record.status = "failed"
                partial = self._result(started_at, clock, finished=False)
                failure = StepFailed(step.id, step.origin, exc, partial)
                self._emit(
                    "run_failed",
                    index=index,
                    step_id=step.id,
                    label=record.label,
                    duration_s=record.seconds,
                    message=str(failure),
                )
                raise failure from exc
            if saved:
                payload = self._payload(index)
                self.store.save(step.hash, payload)
                if step.id in restarts:
                    # A copy: an engine's dumped state may share lists with its live
                    # agents, which the next steps change.
                    self.people_state = copy.deepcopy(payload["engine_state"])
            self._measure(record, before, time.perf_counter() - began)
            self._emit(
                "step_finished",
                index=index,
                step_id=step.id,
                label=record.label,
                duration_s=record.seconds,
                calls=record.calls,
                cached=record.cache_hits,
            )
        result = self._result(started_at, clock)
        self._emit("run_finished", duration_s=result.duration_s)
        return result

    async def _restore(self) -> int:
        """Load the resume checkpoint; returns the index of the first step to execute."""
        restored = self.store.resume_point(self.plan, warn=self._warn)
        if restored is None:
            return 0
        payload = restored.payload
        try:
            if payload.get("engine") != self.engine.name:
                raise ValueError(f"it was saved by engine {payload.get('engine')!r}")
            transcript = [TranscriptEvent.from_json(e) for e in payload["transcript"]]
            self.engine.load_state(payload["engine_state"], transcript)
            rows = list(payload["rows"])
            summaries = list(payload.get("summaries", []))
            # Checkpoints saved before the judge existed hold no judgments.
            judgments = {
                int(key): dict(scores) for key, scores in payload.get("judgments", {}).items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            self._warn(f"cannot restore checkpoint of step {payload.get('step_id')}: {exc}")
            await self.engine.setup(self.plan)
            return 0
        self.transcript, self.rows, self.summaries = transcript, rows, summaries
        self.judgments = judgments
        for record in self.records[: restored.index + 1]:
            record.status = "restored"
        return restored.index + 1

    async def _step(self, step: Step, record: StepRecord) -> bool:
        """Execute one step; returns whether its outcome may be checkpointed."""
        if isinstance(step, AnalyzeStep):
            # The statistics are computed from the finished run's rows, by the session.
            record.status = "executed"
            return True
        if isinstance(step, ReplicateStep):
            seq = self.transcript[-1].seq if self.transcript else 0
            # A copy each time: the engine may keep (and then change) what it loads.
            state = copy.deepcopy(self._people_state(step))
            self.engine.load_state(continued_state(state, seq), self.transcript)
        elif isinstance(step, ExtractStep):
            rows = [self._replicate(step, row) for row in await self.engine.extract(step)]
            self.rows = merge_rows(self.rows, rows)
        elif isinstance(step, ExtractOverallStep):
            self.summaries.append(self._replicate(step, await self.engine.extract_overall(step)))
        else:
            self.transcript.extend(await self.engine.execute(step))
            if self.plan.settings.judge:
                personas = self.engine.personas()
                self.judgments.update(
                    await judge_turns(self.plan, self.transcript, step.id, personas, self.client)
                )
        for note in self.engine.take_notes():
            self._warn(f"step {step.id}: {note}")
        record.status = "executed"
        return True

    def _people_state(self, step: ReplicateStep) -> dict[str, Any]:
        """The engine state right after `step.after`: kept when this run executed that
        step, else read from its checkpoint (a run resumed past it)."""
        if self.people_state is not None:
            return self.people_state
        assert step.after is not None  # the setup state is taken before any step runs
        after = next(s for s in self.plan.steps if s.id == step.after)
        try:
            self.people_state = self.store.load(after.hash)["engine_state"]
        except (OSError, CheckpointCorrupt, KeyError) as exc:
            raise RuntimeError(
                f"cannot start replicate {step.replicate}: the state after {after.id} "
                f"is not readable ({exc}); run again with `--fresh`"
            ) from exc
        return self.people_state

    def _replicate(self, step: Step, record: dict[str, Any]) -> dict[str, Any]:
        """A row or summary record, with its replicate when the plan has several."""
        if self.plan.settings.replicates == 1:
            return record
        return {**record, "replicate": replicate_of(step.id)}

    def _payload(self, index: int) -> dict[str, Any]:
        step = self.plan.steps[index]
        return {
            "scenario": self.plan.settings.scenario,
            "step_index": index,
            "step_id": step.id,
            "step_hash": step.hash,
            "engine": self.engine.name,
            "engine_state": self.engine.dump_state(),
            "transcript": [event.to_json() for event in self.transcript],
            "rows": self.rows,
            "summaries": self.summaries,
            "judgments": {str(key): scores for key, scores in self.judgments.items()},
        }

    def _measure(self, record: StepRecord, before: ClientStats, duration: float) -> None:
        after = self.client.stats
        record.seconds = round(duration, 3)
        record.model_calls = after.model_calls - before.model_calls
        record.cache_hits = after.cache_hits - before.cache_hits
        record.calls = record.model_calls + record.cache_hits
        record.input_tokens = after.input_tokens - before.input_tokens
        record.output_tokens = after.output_tokens - before.output_tokens
        record.cost_usd = round(after.cost_usd - before.cost_usd, 6)

    def _warn(self, message: str) -> None:
        """Record a warning in the manifest and show it (progress display, else the log)."""
        self.notes.append(message)
        if self.on_event is None:
            log.warning(message)
        self._emit("warning", message=message)

    def _emit(self, kind: RunEventKind, **details: Any) -> None:
        if self.on_event is not None:
            self.on_event(
                RunEvent(kind=kind, total=len(self.plan.steps), stats=self.client.stats, **details)
            )

    def _result(self, started_at: datetime, clock: float, *, finished: bool = True) -> RunResult:
        """What the run produced; a failed run's personas are not asked of its engine,
        whose state the failed step may have left half-changed."""
        return RunResult(
            engine=self.engine.name,
            started=started_at,
            duration_s=round(time.perf_counter() - clock, 3),
            steps=self.records,
            transcript=self.transcript,
            rows=self.rows,
            personas=dict(self.engine.personas()) if finished else {},
            notes=self.notes,
            stats=dataclasses.replace(self.client.stats),
            answered_by=sorted(self.client.answered_by),
            summaries=self.summaries,
            judgments=self.judgments,
        )
