"""`tts run`: from a file on disk to a finished run folder.

Everything that can be refused is refused here, before a model is called:
syntax and check errors, a saved plan whose source has changed since it was
planned, a model whose credentials are missing, an engine that is not
installed. Those become `RunSetupError` (exit 2). Then the plan runs through
the interpreter, and the outcome carries the exit code and a one-line summary
that names the model that actually answered.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import check_file
from tiny_dsl.checks.codes import PATH_OUTSIDE_ROOT
from tiny_dsl.checks.loader import output_dir_inside
from tiny_dsl.checks.model import Program
from tiny_dsl.plan import compile_plan, price_for, run_refusals
from tiny_dsl.plan.model import Plan
from tiny_dsl.runtime.cache import CacheCorruptError, LLMCache
from tiny_dsl.runtime.client import ClientError, LLMClient
from tiny_dsl.runtime.engines import (
    TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S,
    TINYTROUPE_EMBEDDED_N_CTX,
    EngineUnavailable,
    make_engine,
)
from tiny_dsl.runtime.interpreter import (
    EXIT_RUN_FAILED,
    PlanError,
    RunResult,
    StepFailed,
    load_plan,
    run_plan,
)
from tiny_dsl.runtime.progress import make_progress
from tiny_dsl.runtime.providers import (
    EMBEDDED_MODEL,
    PROVIDER_NAMES,
    EmbeddedProvider,
    Provider,
    ProviderConfigError,
    env_vars_used,
    make_provider,
)
from tiny_dsl.source import SourceFile


@dataclass(frozen=True)
class RunOptions:
    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    engine: str | None = None
    mode: Literal["normal", "replay", "fresh"] = "normal"
    quiet: bool = False
    state_dir: Path = Path(".tts")
    output_dir: Path | None = None
    allow_outside: bool = False
    # Start even when the plan's estimate exceeds `max_calls` or the budget.
    allow_over_budget: bool = False
    # Per-attempt model-call timeout (None: chosen per provider) and first retry delay.
    # Fault-injection tests shorten both to keep their runs brief.
    attempt_timeout_s: float | None = None
    backoff_base_s: float = 1.0


class RunSetupError(Exception):
    """The run cannot start; nothing was spent. Carries diagnostics when there are any."""

    def __init__(
        self,
        message: str = "",
        diagnostics: list[diag.Diagnostic] | None = None,
        sources: dict[str, SourceFile] | None = None,
    ) -> None:
        super().__init__(message or diag.summary_line(diagnostics or []))
        self.message = message
        self.diagnostics = diagnostics or []
        self.sources = sources or {}


@dataclass
class RunOutcome:
    exit_code: int
    summary: str
    result: RunResult | None = None
    answered_by: list[str] = field(default_factory=list)


def run_target(target: Path, options: RunOptions) -> RunOutcome:
    """Plan (or load) TARGET, pick the provider and engine, run, and summarise."""
    if options.provider is not None and options.provider not in PROVIDER_NAMES:
        hint = diag.did_you_mean(options.provider, PROVIDER_NAMES)
        raise RunSetupError(
            f"unknown provider `{options.provider}`; "
            + (hint or "choose one of: " + ", ".join(PROVIDER_NAMES))
        )
    plan = _load_plan(target, options)
    _check_output_dir(plan, options)
    provider = _provider(plan, options)
    cache = _cache(options)
    # TinyTroupe's long agent prompt takes the embedded model minutes to read.
    attempt_timeout_s = options.attempt_timeout_s or (
        TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S
        if provider.name == "embedded" and (options.engine or plan.settings.engine) == "tinytroupe"
        else 120.0
    )
    client = LLMClient(
        provider,
        cache,
        mode=options.mode,
        max_concurrency=plan.settings.max_concurrency,
        budget_usd=plan.settings.budget_usd,
        # The embedded model is free; an unpriced model is counted at zero (`tts plan` warns).
        price=(price_for(provider.model) if provider.name != "embedded" else None) or (0.0, 0.0),
        max_calls=plan.settings.max_calls,
        attempt_timeout_s=attempt_timeout_s,
        backoff_base_s=options.backoff_base_s,
    )
    try:
        engine = make_engine(options.engine, plan, client, log_dir=options.state_dir / "logs")
    except EngineUnavailable as exc:
        raise RunSetupError(str(exc)) from exc
    progress = make_progress(quiet=options.quiet)
    try:
        with progress:
            result = run_plan(
                plan,
                client=client,
                state_dir=options.state_dir,
                output_dir=options.output_dir,
                engine=engine,
                fresh=options.mode == "fresh",
                on_event=progress,
                env_vars=env_vars_used(provider.name, options.base_url),
            )
    except StepFailed as exc:
        where = f" (partial run in {exc.run_dir})" if exc.run_dir else ""
        if isinstance(exc.cause, CacheCorruptError):
            # Running again would read the same damaged entry: the cache message says
            # what to do instead.
            return RunOutcome(EXIT_RUN_FAILED, f"error: {exc}{where}")
        return RunOutcome(
            EXIT_RUN_FAILED,
            f"error: {exc}{where}\nhelp: fix the cause and run the same command again; "
            "completed steps and recorded model calls are reused",
        )
    except (ClientError, CacheCorruptError) as exc:
        return RunOutcome(EXIT_RUN_FAILED, f"error: the run stopped: {exc}")
    finally:
        if cache is not None:
            cache.close()
    return _outcome(result, client)


def _load_plan(target: Path, options: RunOptions) -> Plan:
    if not target.exists():
        raise RunSetupError(f"no such file: {target}")
    if target.suffix == ".json":
        return _saved_plan(target, options)
    result = check_file(target, allow_outside_root=options.allow_outside)
    try:
        program = result.require_program()
    except diag.DiagnosticError as exc:
        raise RunSetupError(
            diagnostics=diag.sort_diagnostics([*result.diagnostics, *exc.diagnostics]),
            sources=dict(result.sources),
        ) from exc
    plan = compile_plan(_with_overrides(program, options))
    _refuse_over_limits(plan, program, dict(result.sources), options)
    return plan


def _refuse_over_limits(
    plan: Plan, program: Program | None, sources: dict[str, SourceFile], options: RunOptions
) -> None:
    """Stop a plan whose estimate exceeds `max_calls` or the budget before it spends."""
    refusals = [] if options.allow_over_budget else run_refusals(plan, program)
    if refusals:
        raise RunSetupError(diagnostics=refusals, sources=sources)


def _check_output_dir(plan: Plan, options: RunOptions) -> None:
    """`--output-dir`, or a saved plan's output `dir`, may not lead outside the project
    (a scenario's own `dir` is checked with the scenario, E205)."""
    directory = options.output_dir if options.output_dir is not None else Path(plan.output.dir)
    if options.allow_outside or output_dir_inside(directory, Path(plan.source_file).parent):
        return
    what = "--output-dir" if options.output_dir is not None else "the plan's output `dir`"
    raise RunSetupError(
        diagnostics=[
            diag.error(
                PATH_OUTSIDE_ROOT,
                f"{what} `{directory}` leads outside the project",
                None,
                help=[
                    "write outputs inside the working directory or the scenario's directory, "
                    "or pass `--allow-outside` if you mean to write there"
                ],
            )
        ]
    )


def _with_overrides(program: Program, options: RunOptions) -> Program:
    """Apply --provider/--model/--base-url/--engine to the settings before planning.

    They are part of what the step hashes cover, so a run on another model never
    reuses checkpoints made with a different one.
    """
    settings = program.settings
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
    return dataclasses.replace(program, settings=dataclasses.replace(settings, **changes))


def _saved_plan(path: Path, options: RunOptions) -> Plan:
    """A plan.json, refused when its source changed or when flags would change it."""
    try:
        plan = load_plan(path)
    except PlanError as exc:
        raise RunSetupError(str(exc)) from exc
    source = Path(plan.source_file)
    if source.exists():
        result = check_file(source, allow_outside_root=True)
        if result.program is None or compile_plan(result.program).source_hash != plan.source_hash:
            raise RunSetupError(
                f"{path} was planned from an earlier version of {source}; "
                f"re-create it with `tts plan {source} -o {path}`, or run {source} directly"
            )
    overrides = {
        "provider": options.provider,
        "model": options.model,
        "base_url": options.base_url,
        "engine": options.engine,
    }
    settings = plan.settings.model_dump()
    different = [f"--{k.replace('_', '-')}" for k, v in overrides.items() if v and v != settings[k]]
    if different:
        raise RunSetupError(
            f"{', '.join(different)} would change a saved plan; plan again with the same "
            f"options (`tts plan {source} ... -o {path}`) or run the .tts file with them"
        )
    _refuse_over_limits(plan, None, {}, options)
    return plan


def _provider(plan: Plan, options: RunOptions) -> Provider:
    """The provider the settings ask for; missing credentials stop the run (exit 2).

    A scenario that names a model (say `gpt-4o-mini`) without a provider means
    OpenAI, or the server in OPENAI_BASE_URL when no key is set. It never falls
    back to the embedded model silently: the error offers `--provider embedded`.
    """
    settings = plan.settings
    name = settings.provider
    if name is None and settings.model not in (None, EMBEDDED_MODEL):
        has_key = bool(os.environ.get("OPENAI_API_KEY"))
        name = (
            "openai-compatible" if os.environ.get("OPENAI_BASE_URL") and not has_key else "openai"
        )
    engine = options.engine or settings.engine
    try:
        if (name in (None, "embedded")) and engine == "tinytroupe":
            # TinyTroupe's agent prompt alone fills most of a 4k window.
            return EmbeddedProvider(n_ctx=TINYTROUPE_EMBEDDED_N_CTX)
        return make_provider(name, settings.model, settings.base_url)
    except ProviderConfigError as exc:
        named = f"the scenario asks for {settings.model}, but " if settings.model else ""
        raise RunSetupError(f"{named}{exc}") from exc


def _cache(options: RunOptions) -> LLMCache | None:
    try:
        return LLMCache(options.state_dir / "cache.sqlite")
    except CacheCorruptError as exc:
        # The message already says what to do; repeating it would only blur it.
        raise RunSetupError(str(exc)) from exc


def _outcome(result: RunResult, client: LLMClient) -> RunOutcome:
    stats = client.stats
    answered = sorted(f"{provider}/{model}" for provider, model in client.answered_by)
    model_text = ", ".join(answered) if answered else "no model (everything restored)"
    lines = [
        f"run {result.run_id}: {len(result.executed)} steps run, "
        f"{len(result.restored)} restored from checkpoints",
        f"  answered by  {model_text}",
        f"  model calls  {stats.model_calls} (cache hits {stats.cache_hits}, "
        f"retries {stats.retries})",
        f"  tokens       {stats.input_tokens:,} in / {stats.output_tokens:,} out, "
        f"cost ${stats.cost_usd:.4f}",
        f"  outputs      {result.run_dir}",
    ]
    if any(a.startswith("embedded/") for a in answered):
        lines.append(
            "  note         the embedded model is for offline runs, CI and demos; "
            "real studies use a capable model"
        )
    if result.analysis and result.analysis.get("expectations_failed"):
        for failure in result.analysis["expectations_failed"]:
            lines.append(
                f"  FAILED       {failure['origin']}: {failure['statement']} ({failure['reason']})"
            )
    return RunOutcome(result.exit_code, "\n".join(lines), result, answered)
