"""The interpreter: executes a plan step by step against an engine, with resume.

    result = run_plan(plan, client=client, state_dir=Path(".tts"),
                      output_dir=Path(plan.output.dir), on_event=progress)

The run:

1. Refuses a plan whose `schema_version` it does not know, or whose steps
   carry no chained hashes (it was not compiled).
2. Sets up the engine, then, unless `fresh`, restores the longest prefix of
   steps that have checkpoints (`tiny_dsl.runtime.checkpoints`): an unchanged
   re-run executes nothing, an edit to the last step re-runs only that step.
3. Executes the remaining steps: `extract` steps through `engine.extract`,
   `analyze` steps here (with `tiny_dsl.analysis`, when installed), everything
   else through `engine.execute`; after each, saves a checkpoint holding the
   engine state, the transcript and the result rows so far (the transcript
   once: engine states refer to its events by `seq`).
4. Writes the run folder (`tiny_dsl.runtime.outputs`) and points `latest` at it.

A step that raises becomes `StepFailed` naming the step and its source
position; the run folder still gets a manifest (status `failed`) and the
transcript so far, and the next run resumes after the last completed step.
Model calls made inside the failed step were recorded in the LLM cache by the
client, so they are not paid for twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ValidationError

import tiny_dsl
from tiny_dsl.plan.model import SCHEMA_VERSION, AnalyzeStep, ExtractStep, FieldPlan, Plan, Step
from tiny_dsl.runtime.checkpoints import CheckpointStore
from tiny_dsl.runtime.client import ClientStats
from tiny_dsl.runtime.engines import make_engine
from tiny_dsl.runtime.engines.core import Engine, TranscriptEvent
from tiny_dsl.runtime.outputs import (
    PERSONAS_DIR,
    create_run_dir,
    point_latest,
    step_label,
    write_json,
    write_personas,
    write_reports,
    write_results,
    write_transcript,
)
from tiny_dsl.runtime.progress import RunEvent, RunEventKind
from tiny_dsl.runtime.providers import env_vars_used
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse, Message, Provider

__all__ = [
    "EXIT_EXPECTATION_FAILED",
    "EXIT_OK",
    "EXIT_RUN_FAILED",
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

EXIT_OK = 0
EXIT_EXPECTATION_FAILED = 1
EXIT_RUN_FAILED = 3

StepStatus = Literal["executed", "restored", "skipped", "failed", "not_run"]


class PlanError(ValueError):
    """A plan this interpreter cannot run (unknown schema version, not compiled)."""


class StepFailed(Exception):
    """A step raised; the run stopped after saving everything up to the previous step.

    `origin` is the `file:line:col` of the statement; `run_dir` the folder
    holding the failed run's manifest and partial transcript.
    """

    def __init__(
        self, step_id: str, origin: str, cause: BaseException, run_dir: Path | None = None
    ) -> None:
        detail = str(cause) or type(cause).__name__
        super().__init__(f"{origin}: step {step_id} failed: {detail}")
        self.step_id = step_id
        self.origin = origin
        self.cause = cause
        self.run_dir = run_dir


class RunClient(Protocol):
    """What the interpreter needs from `LLMClient` (model calls go through the engine)."""

    provider: Provider
    stats: ClientStats
    answered_by: set[tuple[str, str]]

    async def answer_room(self, messages: tuple[Message, ...]) -> int | None: ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


@dataclass
class StepRecord:
    """How one step fared in this run (the manifest's `steps`)."""

    id: str
    kind: str
    label: str
    origin: str
    status: StepStatus = "not_run"
    seconds: float = 0.0
    calls: int = 0  # requests: sent to the provider plus answered from the cache
    model_calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    note: str = ""


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: Literal["ok", "expectations_failed"]
    exit_code: int
    steps: list[StepRecord]
    transcript: list[TranscriptEvent]
    rows: list[dict[str, Any]]
    analysis: dict[str, Any] | None
    manifest: dict[str, Any]

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
    output_dir: Path | None = None,
    engine: Engine | None = None,
    fresh: bool = False,
    on_event: Callable[[RunEvent], None] | None = None,
    env_vars: Sequence[str] | None = None,
) -> RunResult:
    """Run `plan` to completion in a new event loop; see `arun_plan` for the parameters.

    This owns the event loop, so it also closes the client's provider
    (its HTTP connections) before returning.
    """

    async def main() -> RunResult:
        try:
            return await arun_plan(
                plan,
                client=client,
                state_dir=state_dir,
                output_dir=output_dir,
                engine=engine,
                fresh=fresh,
                on_event=on_event,
                env_vars=env_vars,
            )
        finally:
            await client.provider.aclose()

    return asyncio.run(main())


async def arun_plan(
    plan: Plan,
    *,
    client: RunClient,
    state_dir: Path,
    output_dir: Path | None = None,
    engine: Engine | None = None,
    fresh: bool = False,
    on_event: Callable[[RunEvent], None] | None = None,
    env_vars: Sequence[str] | None = None,
) -> RunResult:
    """Run `plan`, resuming from checkpoints under `state_dir` unless `fresh`.

    `output_dir` receives the run folder (default: the plan's `output.dir`);
    `engine` defaults to the one the plan's `engine` setting names; `env_vars` are the
    names of environment variables that configured the provider (default: asked
    of the provider layer), recorded in the manifest. Raises `PlanError` for a
    plan it cannot run and `StepFailed` when a step fails.
    """
    _check_plan(plan)
    run = _Run(
        plan=plan,
        client=client,
        store=CheckpointStore(state_dir, plan.settings.scenario),
        output_dir=Path(output_dir if output_dir is not None else plan.output.dir),
        engine=engine if engine is not None else _default_engine(plan, client),
        on_event=on_event,
        env_vars=list(env_vars if env_vars is not None else env_vars_used(client.provider.name)),
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
    output_dir: Path
    engine: Engine
    on_event: Callable[[RunEvent], None] | None
    env_vars: list[str]
    transcript: list[TranscriptEvent] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    analysis: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)

    async def execute(self, *, fresh: bool) -> RunResult:
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        steps = self.plan.steps
        self.records = [
            StepRecord(id=s.id, kind=s.kind, label=step_label(s), origin=str(s.origin))
            for s in steps
        ]
        await self.engine.setup(self.plan)
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
                failure = StepFailed(step.id, str(step.origin), exc)
                self._emit(
                    "run_failed",
                    index=index,
                    step_id=step.id,
                    label=record.label,
                    duration_s=record.seconds,
                    message=str(failure),
                )
                failure.run_dir = self._write_failed(started_at, clock, failure)
                raise failure from exc
            if saved:
                self.store.save(step.hash, self._payload(index))
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
        result = self._finish(started_at, clock)
        self._emit("run_finished", duration_s=result.manifest["duration_s"])
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
            analysis = payload["analysis"]
        except (KeyError, TypeError, ValueError) as exc:
            self._warn(f"cannot restore checkpoint of step {payload.get('step_id')}: {exc}")
            await self.engine.setup(self.plan)
            return 0
        self.transcript, self.rows, self.analysis = transcript, rows, analysis
        for record in self.records[: restored.index + 1]:
            record.status = "restored"
        return restored.index + 1

    async def _step(self, step: Step, record: StepRecord) -> bool:
        """Execute one step; returns whether its outcome may be checkpointed."""
        if isinstance(step, AnalyzeStep):
            return self._analyze(step, record)
        if isinstance(step, ExtractStep):
            self.rows.extend(await self.engine.extract(step))
        else:
            self.transcript.extend(await self.engine.execute(step))
        for note in self.engine.take_notes():
            self._warn(f"step {step.id}: {note}")
        record.status = "executed"
        return True

    def _analyze(self, step: AnalyzeStep, record: StepRecord) -> bool:
        try:
            module = importlib.import_module("tiny_dsl.analysis")
        except ImportError:
            module = None
        analyze = getattr(module, "analyze", None)
        if analyze is None:
            # Not checkpointed: once the analysis module is installed, a re-run must
            # execute this step instead of restoring its absence.
            record.status = "skipped"
            record.note = "tiny_dsl.analysis is not available; analysis skipped"
            self._warn(f"step {step.id}: {record.note}")
            return False
        result = analyze(step.analyses, self.rows, self._fields(), self.plan.interventions)
        self.analysis = {
            "result": result.model_dump(mode="json"),
            "expectations_failed": bool(result.expectations_failed),
        }
        record.status = "executed"
        return True

    def _fields(self) -> list[FieldPlan]:
        fields: dict[str, FieldPlan] = {}
        for step in self.plan.steps:
            if isinstance(step, ExtractStep):
                for item in step.fields:
                    fields.setdefault(item.name, item)
        return list(fields.values())

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
            "analysis": self.analysis,
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

    # -- outputs ------------------------------------------------------------------

    def _finish(self, started_at: datetime, clock: float) -> RunResult:
        expectations_failed = bool(self.analysis and self.analysis["expectations_failed"])
        status: Literal["ok", "expectations_failed"] = (
            "expectations_failed" if expectations_failed else "ok"
        )
        exit_code = EXIT_EXPECTATION_FAILED if expectations_failed else EXIT_OK
        run_id, run_dir = create_run_dir(self.output_dir, started_at, self.plan.plan_hash)
        files = ["manifest.json", "plan.json", "transcript.jsonl", "transcript.md"]
        write_json(run_dir / "plan.json", self.plan.model_dump(mode="json"))
        write_transcript(run_dir, self.plan, self.transcript)
        if write_personas(run_dir, self.engine.personas()):
            files.append(f"{PERSONAS_DIR}/")
        files += write_results(run_dir, self.rows, self._fields(), self.plan.output.formats)
        if self.analysis is not None:
            write_json(run_dir / "analysis.json", self.analysis["result"])
            files.append("analysis.json")
        manifest = self._manifest(run_id, started_at, clock, status, exit_code, None, files)
        write_json(run_dir / "manifest.json", manifest)
        # Reports read the finished run folder, so they come after everything else.
        manifest["reports"] = reports = write_reports(run_dir, self.plan.output.formats)
        if reports.get("status") == "failed":
            self._warn(f"reports were not written: {reports['reason']}")
            manifest["notes"] = self.notes
        manifest["files"] += reports.get("files", [])
        write_json(run_dir / "manifest.json", manifest)
        point_latest(self.output_dir, run_id)
        return RunResult(
            run_id=run_id,
            run_dir=run_dir,
            status=status,
            exit_code=exit_code,
            steps=self.records,
            transcript=self.transcript,
            rows=self.rows,
            analysis=self.analysis["result"] if self.analysis else None,
            manifest=manifest,
        )

    def _write_failed(self, started_at: datetime, clock: float, failure: StepFailed) -> Path:
        """A failed run's folder: manifest and transcript so far; `latest` is left alone."""
        run_id, run_dir = create_run_dir(self.output_dir, started_at, self.plan.plan_hash)
        write_json(run_dir / "plan.json", self.plan.model_dump(mode="json"))
        write_transcript(run_dir, self.plan, self.transcript)
        files = ["manifest.json", "plan.json", "transcript.jsonl", "transcript.md"]
        manifest = self._manifest(
            run_id, started_at, clock, "failed", EXIT_RUN_FAILED, str(failure), files
        )
        write_json(run_dir / "manifest.json", manifest)
        return run_dir

    def _manifest(
        self,
        run_id: str,
        started_at: datetime,
        clock: float,
        status: str,
        exit_code: int,
        error: str | None,
        files: list[str],
    ) -> dict[str, Any]:
        plan, stats = self.plan, self.client.stats
        provider = self.client.provider
        answered = sorted(self.client.answered_by)
        result = self.analysis["result"] if self.analysis else None
        # `provider`/`model` name who actually answered when that is one backend (a
        # server may report a different model than configured); `configured` is what
        # was asked for, `answered_by` every backend that answered (cache included).
        actual = answered[0] if len(answered) == 1 else (provider.name, provider.model)
        return {
            "tiny_dsl_version": tiny_dsl.__version__,
            "run_id": run_id,
            "scenario": plan.settings.scenario,
            "title": plan.settings.title,
            "source_file": plan.source_file,
            "source_hash": plan.source_hash,
            "plan_hash": plan.plan_hash,
            "schema_version": plan.schema_version,
            "seed": plan.settings.seed,
            "engine": self.engine.name,
            "provider": actual[0],
            "model": actual[1],
            "configured": {"provider": provider.name, "model": provider.model},
            "answered_by": [{"provider": name, "model": model} for name, model in answered],
            "scenario_settings": {
                "provider": plan.settings.provider,
                "model": plan.settings.model,
                "temperature": plan.settings.temperature,
                "max_concurrency": plan.settings.max_concurrency,
                "budget_usd": plan.settings.budget_usd,
                "max_calls": plan.settings.max_calls,
            },
            "started": started_at.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - clock, 3),
            "steps": [dataclasses.asdict(record) for record in self.records],
            "steps_executed": sum(r.status == "executed" for r in self.records),
            "steps_restored": sum(r.status == "restored" for r in self.records),
            "model_calls": stats.model_calls,
            "cache_hits": stats.cache_hits,
            "retries": stats.retries,
            "repairs": stats.repairs,
            "input_tokens": stats.input_tokens,
            "output_tokens": stats.output_tokens,
            "cost_usd": round(stats.cost_usd, 6),
            "env_vars": self.env_vars,
            "status": status,
            "exit_code": exit_code,
            "error": error,
            "expectations": result["expectations"] if result else None,
            "expectations_failed": len(result["expectations_failed"]) if result else 0,
            "files": files,
            "notes": self.notes,
        }
