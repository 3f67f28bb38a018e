"""The hub: one `Session` holds what every command needs and runs the pipeline.

    session = Session(root=Path.cwd(), state_dir=Path(".tts"))
    session.check(path, options)         # CheckResult: every problem at once
    session.plan(path, options)          # Planned: the plan, or why there is none
    session.run(target, options)         # RunOutcome: exit code, diagnostics, run folder
    session.report(run_dir, formats)     # the reports of a finished run, recomputed

`RunOptions` carries the command line's choices, among them `params` (`--set
NAME=VALUE`), `seed` (`--seed`) and `replicates` (`--replicates`), which the
checks apply; a saved `plan.json` refuses them unless they equal its own.

A session knows the project root (where relative output paths lead), whether
paths may leave the project (`allow_outside`), the standard library, the state
directory (LLM cache, checkpoints, engine logs) and the one `PathPolicy` that
decides which files a scenario may read and where its run may write. The
provider seam (`provider_factory`) lets tests answer model calls without
reaching into the pipeline.

Everything `tts run` can refuse is refused before a model is called (exit 2):
check errors, a stale saved plan, a plan over its limits, a missing credential,
an engine that is not installed. A run that starts and fails still leaves its
folder (manifest with status `failed`, the transcript so far) and exits 3;
every failure is a `Diagnostic` with a code, shown like a check error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tiny_dsl
from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import CheckResult, Overrides, check_file
from tiny_dsl.checks.codes import PATH_OUTSIDE_ROOT
from tiny_dsl.checks.loader import PathPolicy
from tiny_dsl.checks.model import Program
from tiny_dsl.plan import compile_plan, plan_diagnostics, price_for, run_refusals
from tiny_dsl.plan.model import AnalyzeStep, Origin, Plan
from tiny_dsl.resources import stdlib_dir
from tiny_dsl.rundir import (
    ANALYSIS,
    MANIFEST,
    PERSONAS_DIR,
    PLAN,
    TRANSCRIPT_JSONL,
    TRANSCRIPT_MD,
    AgentModel,
    Backend,
    Manifest,
    QualityCounts,
    Reports,
    RunStatus,
    ScenarioSettings,
    create_run_dir,
    point_latest,
    write_json,
    write_manifest,
)
from tiny_dsl.runtime import codes
from tiny_dsl.runtime.cache import CacheCorruptError, LLMCache
from tiny_dsl.runtime.client import ClientError, LLMClient, ReplayMiss
from tiny_dsl.runtime.engines import (
    EngineProfile,
    EngineUnavailable,
    engine_profile,
    make_engine,
)
from tiny_dsl.runtime.engines.core import Engine, TranscriptEvent
from tiny_dsl.runtime.external import ExternalAgents, external_env_vars
from tiny_dsl.runtime.interpreter import (
    PlanError,
    RunClient,
    RunResult,
    StepFailed,
    load_plan,
    run_plan,
)
from tiny_dsl.runtime.outputs import (
    result_fields,
    write_messages,
    write_personas,
    write_results,
    write_summaries,
    write_transcript,
)
from tiny_dsl.runtime.progress import RunEvent, make_progress
from tiny_dsl.runtime.providers import (
    EMBEDDED_MODEL,
    PROVIDER_NAMES,
    EmbeddedProvider,
    Provider,
    ProviderConfigError,
    env_vars_used,
    make_provider,
)
from tiny_dsl.runtime.quality import QUALITY_COLUMN, Assessment, StepQuality, assess_run
from tiny_dsl.source import SourceFile, Span

# Analysis and reporting import scipy, pandas and matplotlib: two to three seconds that
# `tts check` and `tts plan` never need, so they are imported where a run or a report
# uses them.
if TYPE_CHECKING:
    from tiny_dsl.analysis import AnalysisResult
    from tiny_dsl.reporting import RunData

EXIT_OK = 0
EXIT_EXPECTATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 3


@dataclass(frozen=True)
class RunOptions:
    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    engine: str | None = None
    mode: Literal["normal", "replay", "fresh"] = "normal"
    quiet: bool = False
    output_dir: Path | None = None
    # Start even when the plan's estimate exceeds `max_calls` or the budget.
    allow_over_budget: bool = False
    # Per-attempt model-call timeout (None: chosen per provider) and first retry delay.
    # Fault-injection tests shorten both to keep their runs brief.
    attempt_timeout_s: float | None = None
    backoff_base_s: float = 1.0
    # `--set NAME=VALUE` (as typed), `--seed N`, `--replicates N`: applied by the checks.
    params: Mapping[str, str] = field(default_factory=dict)
    seed: int | None = None
    replicates: int | None = None

    def overrides(self) -> Overrides:
        return Overrides(params=dict(self.params), seed=self.seed, replicates=self.replicates)


class RunSetupError(Exception):
    """The run cannot start; nothing was spent. Always carries at least one diagnostic."""

    def __init__(
        self, diagnostics: list[diag.Diagnostic], sources: dict[str, SourceFile] | None = None
    ) -> None:
        super().__init__(diag.summary_line(diagnostics))
        self.diagnostics = diagnostics
        self.sources = sources or {}


def _refusal(code: str, message: str, *help_lines: str) -> RunSetupError:
    return RunSetupError([diag.error(code, message, None, help=help_lines)])


@dataclass
class Planned:
    """What `Session.plan` found: the plan, or None with the diagnostics that say why."""

    plan: Plan | None
    program: Program | None
    diagnostics: list[diag.Diagnostic]
    sources: dict[str, SourceFile]


@dataclass
class RunOutcome:
    """How `tts run` ended: the exit code, the summary lines, and the run folder."""

    exit_code: int
    summary: str = ""
    diagnostics: list[diag.Diagnostic] = field(default_factory=list)
    sources: dict[str, SourceFile] = field(default_factory=dict)
    run_dir: Path | None = None
    manifest: Manifest | None = None
    result: RunResult | None = None
    analysis: AnalysisResult | None = None

    @property
    def run_id(self) -> str:
        return self.manifest.run_id if self.manifest else ""

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.result.rows if self.result else []

    @property
    def transcript(self) -> list[TranscriptEvent]:
        return self.result.transcript if self.result else []

    @property
    def executed(self) -> list[str]:
        """Ids of the steps this run executed (not restored from a checkpoint)."""
        return self.result.executed if self.result else []

    @property
    def restored(self) -> list[str]:
        return self.result.restored if self.result else []

    def to_json(self) -> str:
        """The outcome for tools (`tts run --format json`)."""
        manifest = self.manifest
        return json.dumps(
            {
                "exit_code": self.exit_code,
                "status": manifest.status if manifest else "not_started",
                "run_dir": str(self.run_dir) if self.run_dir else None,
                "summary": self.summary,
                "diagnostics": [d.to_json() for d in diag.sort_diagnostics(self.diagnostics)],
                "manifest": manifest.model_dump(mode="json") if manifest else None,
            },
            indent=2,
        )


ProviderFactory = Callable[[Plan, RunOptions], Provider]


@dataclass
class Session:
    root: Path = field(default_factory=Path.cwd)
    allow_outside: bool = False
    stdlib: Path = field(default_factory=stdlib_dir)
    state_dir: Path = Path(".tts")
    # The provider a run's plan asks for; tests pass one that answers without a model.
    provider_factory: ProviderFactory | None = None

    def paths(self, scenario: Path) -> PathPolicy:
        """The path sandbox for a scenario at `scenario` (its imports, its outputs)."""
        return PathPolicy.for_scenario(scenario, self.stdlib, self.allow_outside, self.root)

    # ------------------------------------------------------------------ check, plan

    def check(self, path: Path, options: RunOptions | None = None) -> CheckResult:
        """Check `path`, with `--set`, `--seed` and `--replicates` of `options` applied."""
        return check_file(
            path,
            allow_outside_root=self.allow_outside,
            stdlib=self.stdlib,
            overrides=(options or RunOptions()).overrides(),
        )

    def plan(self, path: Path, options: RunOptions | None = None) -> Planned:
        """Check `path` and compile its plan, with `--provider` and friends applied."""
        result = self.check(path, options)
        diagnostics = list(result.diagnostics)
        try:
            program = result.require_program()
        except diag.DiagnosticError as exc:
            diagnostics = diag.sort_diagnostics([*diagnostics, *exc.diagnostics])
            return Planned(None, None, diagnostics, dict(result.sources))
        plan = compile_plan(_with_overrides(program, options or RunOptions()))
        diagnostics = [*diagnostics, *plan_diagnostics(program, plan)]
        return Planned(plan, program, diagnostics, dict(result.sources))

    # ------------------------------------------------------------------------ run

    def run(self, target: Path, options: RunOptions) -> RunOutcome:
        """Check, plan, refuse, pick the provider and engine, run, analyze, write, report."""
        try:
            _known_provider(options.provider)
            plan = self._runnable_plan(target, options)  # check -> plan -> refuse over limits
            output_dir = self._output_dir(plan, options)
            provider = self._provider(plan, options)
            _refuse_foreign_models(plan, provider)
            cache = self._cache(options)
        except RunSetupError as refused:
            return RunOutcome(EXIT_BAD_INPUT, "", refused.diagnostics, refused.sources)
        try:
            attempt_timeout_s = self._profile(plan, provider.name, options).attempt_timeout_s
            client = LLMClient(
                provider,
                cache,
                mode=options.mode,
                max_concurrency=plan.settings.max_concurrency,
                budget_usd=plan.settings.budget_usd,
                # The embedded model is free; an unpriced model is counted at zero
                # (`tts plan` warns).
                price=(price_for(provider.model) if provider.name != "embedded" else None)
                or (0.0, 0.0),
                max_calls=plan.settings.max_calls,
                attempt_timeout_s=options.attempt_timeout_s or attempt_timeout_s,
                backoff_base_s=options.backoff_base_s,
            )
            externals = ExternalAgents(
                plan, cache, mode=options.mode, backoff_base_s=options.backoff_base_s
            )
            try:
                engine = make_engine(
                    options.engine,
                    plan,
                    client,
                    externals=externals,
                    log_dir=self.state_dir / "logs",
                )
            except EngineUnavailable as exc:
                unavailable = _refusal(codes.ENGINE_UNAVAILABLE, str(exc))
                return RunOutcome(EXIT_BAD_INPUT, "", unavailable.diagnostics)
            progress = make_progress(quiet=options.quiet)
            with progress:
                return self.execute(
                    plan,
                    client,
                    engine=engine,
                    output_dir=output_dir,
                    fresh=options.mode == "fresh",
                    on_event=progress,
                    env_vars=[
                        *env_vars_used(provider.name, options.base_url),
                        *external_env_vars(plan),
                    ],
                    externals=externals,
                )
        finally:
            if cache is not None:
                cache.close()

    def execute(
        self,
        plan: Plan,
        client: RunClient,
        *,
        engine: Engine | None = None,
        output_dir: Path | None = None,
        fresh: bool = False,
        on_event: Callable[[RunEvent], None] | None = None,
        env_vars: Sequence[str] | None = None,
        externals: ExternalAgents | None = None,
    ) -> RunOutcome:
        """Run a plan on a client and write its folder: the pipeline after setup.

        runtime run -> analysis -> results and analysis.json -> reports (from
        memory) -> manifest, once -> `latest`.
        """
        directory = Path(output_dir if output_dir is not None else plan.output.dir)
        env = list(env_vars if env_vars is not None else env_vars_used(client.provider.name))
        try:
            result = run_plan(
                plan,
                client=client,
                state_dir=self.state_dir,
                engine=engine,
                fresh=fresh,
                on_event=on_event,
                externals=externals,
            )
        except StepFailed as failure:
            return self._failed(plan, client, directory, env, failure, externals)
        except PlanError as exc:
            refused = _refusal(codes.RUN_SETUP_FAILED, str(exc))
            return RunOutcome(EXIT_BAD_INPUT, "", refused.diagnostics)
        except (ClientError, CacheCorruptError) as exc:
            # Raised outside any step (setting the engine up, restoring a checkpoint).
            return RunOutcome(EXIT_RUN_FAILED, "", [_stopped(exc)])
        from tiny_dsl.analysis import analyze_plan
        from tiny_dsl.reporting import RunData

        assessment = assess_run(plan, result.transcript, result.rows, result.judgments)
        for row, flagged in zip(result.rows, assessment.rows, strict=True):
            row[QUALITY_COLUMN] = flagged
        has_analysis = any(isinstance(step, AnalyzeStep) for step in plan.steps)
        analysis = analyze_plan(plan, result.rows)
        failed = bool(has_analysis and analysis.expectations_failed)
        status: RunStatus = "expectations_failed" if failed else "ok"
        exit_code = EXIT_EXPECTATION_FAILED if failed else EXIT_OK
        run_id, run_dir = create_run_dir(directory, result.started, plan.plan_hash)
        files = self._write_artifacts(run_dir, plan, result, assessment.events)
        if has_analysis:
            write_json(run_dir / ANALYSIS, analysis.model_dump(mode="json"))
            files.append(ANALYSIS)
        manifest = _manifest(plan, client, result, run_id, status, exit_code, None, env, files)
        _count_external(manifest, externals)
        _count_quality(manifest, assessment)
        manifest.analysis = has_analysis
        if has_analysis:
            manifest.expectations = [e.model_dump(mode="json") for e in analysis.expectations]
            manifest.expectations_failed = len(analysis.expectations_failed)
        manifest.reports = self._reports(
            RunData(
                path=run_dir,
                manifest=manifest,
                plan=plan.model_dump(mode="json"),
                rows=result.rows,
                transcript=[event.to_json() for event in result.transcript],
                summaries=result.summaries,
                analysis=analysis,
            ),
            plan.output.formats,
            result.notes,
        )
        manifest.files += manifest.reports.files
        manifest.notes = result.notes
        write_manifest(run_dir, manifest)
        point_latest(directory, run_id)
        summary = _summary(manifest, result, run_dir, analysis if has_analysis else None)
        return RunOutcome(exit_code, summary, [], {}, run_dir, manifest, result, analysis)

    # --------------------------------------------------------------------- report

    def report(self, run_dir: Path, formats: Iterable[str] | None = None) -> list[Path]:
        """Write the reports of `run_dir` (those its scenario asked for when `formats`
        is empty), with the statistics recomputed from the results found there."""
        from tiny_dsl.reporting import build_view, load_run, report_formats, write_reports

        run = load_run(run_dir)
        wanted = set(formats or ()) or report_formats(run.plan)
        return write_reports(build_view(run), run_dir, wanted)

    # ----------------------------------------------------------------- the steps

    def _runnable_plan(self, target: Path, options: RunOptions) -> Plan:
        if not target.exists():
            raise _refusal(codes.RUN_SETUP_FAILED, f"no such file: {target}")
        if target.suffix == ".json":
            plan = self._saved_plan(target, options)
            _refuse_over_limits(plan, None, {}, options)
            return plan
        planned = self.plan(target, options)
        if planned.plan is None:
            raise RunSetupError(planned.diagnostics, planned.sources)
        _refuse_over_limits(planned.plan, planned.program, planned.sources, options)
        return planned.plan

    def _saved_plan(self, path: Path, options: RunOptions) -> Plan:
        """A plan.json, refused when its source changed or when flags would change it."""
        try:
            plan = load_plan(path)
        except PlanError as exc:
            raise _refusal(codes.RUN_SETUP_FAILED, str(exc)) from exc
        source = Path(plan.source_file)
        if source.exists():
            result = check_file(source, allow_outside_root=True, stdlib=self.stdlib)
            if result.program is None or compile_plan(result.program).source_hash != (
                plan.source_hash
            ):
                raise _refusal(
                    codes.RUN_SETUP_FAILED,
                    f"{path} was planned from an earlier version of {source}",
                    f"re-create it with `tts plan {source} -o {path}`, or run {source} directly",
                )
        overrides = {
            "provider": options.provider,
            "model": options.model,
            "base_url": options.base_url,
            "engine": options.engine,
        }
        settings = plan.settings.model_dump()
        different = [
            f"--{key.replace('_', '-')}"
            for key, value in overrides.items()
            if value and value != settings[key]
        ]
        different.extend(_run_shape_changes(plan, options))
        if different:
            raise _refusal(
                codes.RUN_SETUP_FAILED,
                f"{', '.join(different)} would change a saved plan",
                f"plan again with the same options (`tts plan {source} ... -o {path}`) "
                "or run the .tts file with them",
            )
        return plan

    def _output_dir(self, plan: Plan, options: RunOptions) -> Path:
        """`--output-dir`, or a saved plan's output `dir`, may not lead outside the project
        (a scenario's own `dir` is checked with the scenario, E205)."""
        directory = options.output_dir if options.output_dir is not None else Path(plan.output.dir)
        if self.paths(Path(plan.source_file)).may_write(directory):
            return directory
        what = "--output-dir" if options.output_dir is not None else "the plan's output `dir`"
        raise _refusal(
            PATH_OUTSIDE_ROOT,
            f"{what} `{directory}` leads outside the project",
            "write outputs inside the working directory or the scenario's directory, "
            "or pass `--allow-outside` if you mean to write there",
        )

    def _provider(self, plan: Plan, options: RunOptions) -> Provider:
        """The provider the settings ask for; missing credentials stop the run (exit 2).

        A scenario that names a model (say `gpt-4o-mini`) without a provider means
        OpenAI, or the server in OPENAI_BASE_URL when no key is set. It never falls
        back to the embedded model silently: the error offers `--provider embedded`.
        """
        if self.provider_factory is not None:
            return self.provider_factory(plan, options)
        settings = plan.settings
        name = settings.provider
        if name is None and settings.model not in (None, EMBEDDED_MODEL):
            has_key = bool(os.environ.get("OPENAI_API_KEY"))
            name = (
                "openai-compatible"
                if os.environ.get("OPENAI_BASE_URL") and not has_key
                else "openai"
            )
        n_ctx = self._profile(plan, name, options).n_ctx
        try:
            if name in (None, "embedded") and n_ctx is not None:
                return EmbeddedProvider(n_ctx=n_ctx)
            return make_provider(name, settings.model, settings.base_url)
        except ProviderConfigError as exc:
            named = f"the scenario asks for {settings.model}, but " if settings.model else ""
            # The provider's message already says what to set or pass.
            raise _refusal(codes.PROVIDER_UNAVAILABLE, f"{named}{exc}") from exc

    @staticmethod
    def _profile(plan: Plan, provider_name: str | None, options: RunOptions) -> EngineProfile:
        """How the run is tuned for its engine on this provider (`engine_profile`)."""
        return engine_profile(options.engine or plan.settings.engine, provider_name)

    def _cache(self, options: RunOptions) -> LLMCache:
        try:
            cache = LLMCache(self.state_dir / "cache.sqlite")
        except CacheCorruptError as exc:
            raise _refusal(codes.CACHE_CORRUPT, str(exc)) from exc
        if options.mode == "replay" and len(cache) == 0:
            cache.close()
            raise _nothing_recorded()
        return cache

    def _write_artifacts(
        self, run_dir: Path, plan: Plan, result: RunResult, flags: Mapping[int, list[str]]
    ) -> list[str]:
        """plan.json, the transcript, the personas and the results; returns the file names.
        `flags` are the quality flags of the transcript's events, by seq."""
        write_json(run_dir / PLAN, plan.model_dump(mode="json"))
        write_transcript(run_dir, plan, result.transcript)
        files = [MANIFEST, PLAN, TRANSCRIPT_JSONL, TRANSCRIPT_MD]
        if write_personas(run_dir, result.personas):
            files.append(f"{PERSONAS_DIR}/")
        files += write_results(run_dir, result.rows, result_fields(plan), plan.output.formats)
        files += write_summaries(run_dir, result.summaries)
        files += write_messages(run_dir, plan, result.transcript, result.personas, flags)
        return files

    @staticmethod
    def _reports(run: RunData, formats: Sequence[str], notes: list[str]) -> Reports:
        from tiny_dsl.reporting import build_view, report_formats, write_reports

        wanted = sorted(report_formats({"output": {"formats": list(formats)}}, default=()))
        if not wanted:
            return Reports()
        try:
            written = write_reports(build_view(run), run.path, wanted)
        except Exception as exc:
            # The run itself succeeded and its results are on disk; `tts report` can retry.
            reason = f"{type(exc).__name__}: {exc}"
            notes.append(f"reports were not written: {reason}")
            return Reports(requested=wanted, status="failed", reason=reason)
        return Reports(requested=wanted, status="written", files=[p.name for p in written])

    def _failed(
        self,
        plan: Plan,
        client: RunClient,
        directory: Path,
        env_vars: list[str],
        failure: StepFailed,
        externals: ExternalAgents | None,
    ) -> RunOutcome:
        """A failed run's folder: manifest and transcript so far; `latest` is left alone."""
        partial = failure.partial
        run_id, run_dir = create_run_dir(directory, partial.started, plan.plan_hash)
        write_json(run_dir / PLAN, plan.model_dump(mode="json"))
        write_transcript(run_dir, plan, partial.transcript)
        files = [MANIFEST, PLAN, TRANSCRIPT_JSONL, TRANSCRIPT_MD]
        manifest = _manifest(
            plan, client, partial, run_id, "failed", EXIT_RUN_FAILED, str(failure), env_vars, files
        )
        _count_external(manifest, externals)
        _count_quality(
            manifest, assess_run(plan, partial.transcript, partial.rows, partial.judgments)
        )
        manifest.analysis = any(isinstance(step, AnalyzeStep) for step in plan.steps)
        write_manifest(run_dir, manifest)
        diagnostic, sources = _step_failure(failure, run_dir, bool(partial.restored))
        exit_code = (
            EXIT_BAD_INPUT if diagnostic.code == codes.REPLAY_NOTHING_RECORDED else EXIT_RUN_FAILED
        )
        return RunOutcome(exit_code, "", [diagnostic], sources, run_dir, manifest, partial)


# ---------------------------------------------------------------------- helpers


def _known_provider(name: str | None) -> None:
    if name is not None and name not in PROVIDER_NAMES:
        raise _refusal(
            codes.PROVIDER_UNAVAILABLE,
            f"unknown provider `{name}`",
            diag.did_you_mean(name, PROVIDER_NAMES)
            or "choose one of: " + ", ".join(PROVIDER_NAMES),
        )


def _with_overrides(program: Program, options: RunOptions) -> Program:
    """Apply --provider/--model/--base-url/--engine to the settings before planning.

    They are part of what the step hashes cover, so a run on another model never
    reuses checkpoints made with a different one.
    """
    changes: dict[str, Any] = {}
    if options.provider is not None:
        changes["provider"] = options.provider
        if options.provider == "embedded":
            # The embedded provider runs one model; the scenario's model name is moot.
            changes["model"] = None
            changes["base_url"] = None
    if options.model is not None:
        changes["model"] = options.model
    if options.base_url is not None:
        changes["base_url"] = options.base_url
    if options.engine is not None:
        changes["engine"] = options.engine
    if not changes:
        return program
    return dataclasses.replace(program, settings=dataclasses.replace(program.settings, **changes))


def _run_shape_changes(plan: Plan, options: RunOptions) -> list[str]:
    """The flags among `--set`, `--seed` and `--replicates` that a saved plan does not
    already have (it was planned with its values; they cannot be changed after)."""
    changed: list[str] = []
    if options.seed is not None and options.seed != plan.settings.seed:
        changed.append("--seed")
    if options.replicates is not None and options.replicates != plan.settings.replicates:
        changed.append("--replicates")
    changed.extend(
        f"--set {name}"
        for name, value in options.params.items()
        if name not in plan.params or str(plan.params[name]) != value
    )
    return changed


def _refuse_over_limits(
    plan: Plan, program: Program | None, sources: dict[str, SourceFile], options: RunOptions
) -> None:
    """Stop a plan whose estimate exceeds `max_calls` or the budget before it spends."""
    refusals = [] if options.allow_over_budget else run_refusals(plan, program)
    if refusals:
        raise RunSetupError(refusals, sources)


def _refuse_foreign_models(plan: Plan, provider: Provider) -> None:
    """Stop a run where an agent's own `model` is one the provider cannot serve, before
    any call; one error per `model` line, at that line, naming the first agent."""
    serves: Callable[[str], bool] | None = getattr(provider, "serves", None)
    if serves is None:
        return
    diagnostics: list[diag.Diagnostic] = []
    sources: dict[str, SourceFile] = {}
    reported: set[tuple[str, int]] = set()
    for agent in plan.agents:
        if agent.model is None or serves(agent.model) or agent.model_origin is None:
            continue
        origin = agent.model_origin
        if (origin.file, origin.start) in reported:
            continue
        reported.add((origin.file, origin.start))
        located = origin_span(origin)
        if located is not None:
            sources[located[1].path] = located[1]
        who = f"population `{agent.population}`" if agent.population else f"persona `{agent.id}`"
        diagnostics.append(
            diag.error(
                codes.AGENT_MODEL_UNAVAILABLE,
                f"{who} asks for model {agent.model!r} (agent {agent.id}), which the "
                f"{provider.name} provider cannot run",
                located[0] if located else None,
                f"the {provider.name} provider runs only {provider.model}",
                help=[
                    "run with a provider that serves this model (`--provider openai`), or "
                    "remove this `model` line to use the scenario's model"
                ],
            )
        )
    if diagnostics:
        raise RunSetupError(diagnostics, sources)


def _nothing_recorded() -> RunSetupError:
    return _refusal(
        codes.REPLAY_NOTHING_RECORDED,
        "--replay: the cache holds no recorded run of this scenario",
        "run once without --replay to record the model's answers; later runs can replay them",
    )


def _stopped(exc: BaseException) -> diag.Diagnostic:
    if isinstance(exc, CacheCorruptError):
        # The message says what to do; running again would read the same damaged entry.
        return diag.error(codes.CACHE_CORRUPT, str(exc), None)
    return diag.error(
        codes.RUN_STOPPED,
        f"the run stopped: {exc}",
        None,
        help=["completed steps are checkpointed: fix the cause and run the same command again"],
    )


def _step_failure(
    failure: StepFailed, run_dir: Path, resumed: bool
) -> tuple[diag.Diagnostic, dict[str, SourceFile]]:
    """The diagnostic for a failed step, pointing at its statement when the source is there."""
    where = f"partial run in {run_dir}"
    cause = failure.cause
    if isinstance(cause, ReplayMiss) and not resumed and failure.partial.stats.cache_hits == 0:
        refused = _nothing_recorded()
        return refused.diagnostics[0], {}
    located = origin_span(failure.origin)
    span, sources = (located[0], {located[1].path: located[1]}) if located else (None, {})
    message = f"step {failure.step_id} failed: {failure.detail}"
    if isinstance(cause, CacheCorruptError):
        return diag.error(codes.CACHE_CORRUPT, message, span, notes=[where]), sources
    if isinstance(cause, ReplayMiss):
        return (
            diag.error(
                codes.REPLAY_MISS,
                message,
                span,
                "no recorded answer for this step",
                help=["run without --replay to call the model for what changed"],
                notes=[where],
            ),
            sources,
        )
    code = codes.RUN_STOPPED if isinstance(cause, ClientError) else codes.STEP_FAILED
    return (
        diag.error(
            code,
            message,
            span,
            "this step failed",
            help=[
                "fix the cause and run the same command again; completed steps and "
                "recorded model calls are reused"
            ],
            notes=[where],
        ),
        sources,
    )


def origin_span(origin: Origin) -> tuple[Span, SourceFile] | None:
    """The span of a step's statement and its source, to show the author's line.

    None when the file cannot be read any more (a saved plan run elsewhere); the
    diagnostic then still names `file:line:col`.
    """
    try:
        source = SourceFile.read(Path(origin.file), origin.file)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return origin.span(), source


def _manifest(
    plan: Plan,
    client: RunClient,
    result: RunResult,
    run_id: str,
    status: RunStatus,
    exit_code: int,
    error: str | None,
    env_vars: list[str],
    files: list[str],
) -> Manifest:
    settings, stats, provider = plan.settings, result.stats, client.provider
    answered = result.answered_by
    # Who actually answered when that is one backend, else what was configured.
    actual = answered[0] if len(answered) == 1 else (provider.name, provider.model)
    return Manifest(
        tiny_dsl_version=tiny_dsl.__version__,
        run_id=run_id,
        scenario=settings.scenario,
        title=settings.title,
        source_file=plan.source_file,
        source_hash=plan.source_hash,
        plan_hash=plan.plan_hash,
        schema_version=plan.schema_version,
        seed=settings.seed,
        engine=result.engine,
        provider=actual[0],
        model=actual[1],
        configured=Backend(provider=provider.name, model=provider.model),
        answered_by=[Backend(provider=name, model=model) for name, model in answered],
        scenario_settings=ScenarioSettings(
            provider=settings.provider,
            model=settings.model,
            temperature=settings.temperature,
            max_concurrency=settings.max_concurrency,
            budget_usd=settings.budget_usd,
            max_calls=settings.max_calls,
        ),
        started=result.started.isoformat(timespec="seconds"),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=result.duration_s,
        steps=result.steps,
        steps_executed=sum(r.status == "executed" for r in result.steps),
        steps_restored=len(result.restored),
        model_calls=stats.model_calls,
        cache_hits=stats.cache_hits,
        retries=stats.retries,
        repairs=stats.repairs,
        input_tokens=stats.input_tokens,
        output_tokens=stats.output_tokens,
        cost_usd=round(stats.cost_usd, 6),
        env_vars=env_vars,
        status=status,
        exit_code=exit_code,
        error=error,
        files=files,
        notes=result.notes,
        agent_models={
            agent.id: AgentModel(
                model=agent.model or provider.model,
                temperature=(
                    agent.temperature if agent.temperature is not None else settings.temperature
                ),
            )
            for agent in plan.agents
            if agent.model is not None or agent.temperature is not None
        },
        calls_by_model=dict(sorted(getattr(client, "calls_by_model", {}).items())),
    )


def _count_quality(manifest: Manifest, assessment: Assessment) -> None:
    """The answer-quality counts, per step and over the run."""
    for record in manifest.steps:
        counted = assessment.steps.get(record.id)
        if counted is not None:
            record.quality = _quality_counts(counted)
    manifest.quality = _quality_counts(assessment.total())


def _quality_counts(counted: StepQuality) -> QualityCounts:
    return QualityCounts(
        turns=counted.turns,
        turns_flagged=counted.turns_flagged,
        answers=counted.answers,
        answers_flagged=counted.answers_flagged,
        flags=counted.flags,
        judged=counted.judged,
        scores=counted.mean_scores(),
    )


def _count_external(manifest: Manifest, externals: ExternalAgents | None) -> None:
    """The calls to systems under test, apart from the model's."""
    if externals is None:
        return
    stats = externals.stats
    manifest.external_calls = stats.model_calls
    manifest.external_cache_hits = stats.cache_hits
    manifest.external_retries = stats.retries


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _summary(
    manifest: Manifest, result: RunResult, run_dir: Path, analysis: AnalysisResult | None
) -> str:
    answered = sorted(f"{b.provider}/{b.model}" for b in manifest.answered_by)
    model_text = ", ".join(answered) if answered else "no model (everything restored)"
    lines = [
        f"run {manifest.run_id}: {_plural(manifest.steps_executed, 'step')} run, "
        f"{manifest.steps_restored} restored from checkpoints",
        f"  answered by  {model_text}",
        f"  model calls  {manifest.model_calls} (cache hits {manifest.cache_hits}, "
        f"retries {manifest.retries})",
        *(
            [
                f"  external     {manifest.external_calls} calls to systems under test "
                f"(cache hits {manifest.external_cache_hits}, "
                f"retries {manifest.external_retries})"
            ]
            if manifest.external_calls or manifest.external_cache_hits
            else []
        ),
        f"  tokens       {manifest.input_tokens:,} in / {manifest.output_tokens:,} out, "
        f"cost ${manifest.cost_usd:.4f}",
        f"  outputs      {run_dir}",
    ]
    if any(a.startswith("embedded/") for a in answered):
        lines.append(
            "  note         the embedded model is for offline runs, CI and demos; "
            "real studies use a capable model"
        )
    for failure in analysis.expectations_failed if analysis else []:
        lines.append(f"  FAILED       {failure.origin}: {failure.statement} ({failure.reason})")
    return "\n".join(lines)
