"""The `tts` command: check, fmt, plan, run, explain, report, diff.

The CLI does nothing but call the stages and map their outcome to exit codes:

  0  success
  1  `tts run`: an `expect` failed; `tts fmt --check`: a file would change
  2  bad input: syntax, check or configuration errors (nothing was spent)
  3  `tts run`: the run failed (it can be resumed by running again)
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tiny_dsl import __version__
from tiny_dsl import diagnostics as diag
from tiny_dsl.source import SourceFile

if TYPE_CHECKING:
    from tiny_dsl.plan.model import Plan

EXIT_OK = 0
EXIT_EXPECTATION_FAILED = 1
EXIT_WOULD_REFORMAT = 1
EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 3

_FORMATS = click.Choice(["text", "json"])


def _parse_sets(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """`--set NAME=VALUE`, repeatable; the value is everything after the first `=`."""
    params: dict[str, str] = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f'`{item}`: expected NAME=VALUE, for example topic="AI"')
        params[name.strip()] = value
    return params


def _set_option(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--set",
        "params",
        multiple=True,
        callback=_parse_sets,
        metavar="NAME=VALUE",
        help="Give param NAME the value VALUE (repeatable; overrides its default).",
    )(command)


def _seed_option(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--seed",
        type=click.IntRange(min=0),
        help="The scenario's seed (overrides `seed`): other samples and model seeds.",
    )(command)


def _replicates_option(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--replicates",
        type=int,
        help="Run the timeline N times on the same people (overrides `replicates`, 1..50).",
    )(command)


def _emit_diagnostics(
    diagnostics: list[diag.Diagnostic],
    sources: dict[str, SourceFile],
    output_format: str,
) -> None:
    """Diagnostics go to stderr as text, or to stdout as JSON for tools."""
    if output_format == "json":
        click.echo(diag.render_json(diagnostics))
        return
    if not diagnostics:
        return
    color = sys.stderr.isatty()
    click.echo(diag.render_text(diagnostics, sources, color=color), err=True, nl=False)
    click.echo(diag.summary_line(diagnostics), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tts")
def main() -> None:
    """tiny_dsl: declarative scenarios for LLM persona simulations.

    Write a `.tts` file, then `tts check` it, `tts plan` it to see what it will
    do and cost, and `tts run` it. See `tts COMMAND --help`.
    """


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "output_format",
    type=_FORMATS,
    default="text",
    show_default=True,
    help="Diagnostics as compiler-style text (stderr) or JSON (stdout).",
)
@click.option(
    "--allow-outside",
    is_flag=True,
    help="Let imports, `from` paths and output `dir` reach outside the project.",
)
@_set_option
@_seed_option
def check(
    files: tuple[Path, ...],
    output_format: str,
    allow_outside: bool,
    params: dict[str, str],
    seed: int | None,
) -> None:
    """Parse, resolve and type-check FILES; report every problem at once.

    Exit 0 when no file has errors (warnings allowed), 2 otherwise.
    """
    from tiny_dsl.session import RunOptions, Session

    session = Session(allow_outside=allow_outside)
    options = RunOptions(params=params, seed=seed)
    all_diagnostics: list[diag.Diagnostic] = []
    sources: dict[str, SourceFile] = {}
    for path in files:
        result = session.check(path, options)
        all_diagnostics.extend(result.diagnostics)
        sources.update(result.sources)
    _emit_diagnostics(all_diagnostics, sources, output_format)
    if any(d.is_error for d in all_diagnostics):
        sys.exit(EXIT_BAD_INPUT)
    if output_format == "text":
        click.echo(
            f"ok: {len(files)} file{'s' if len(files) != 1 else ''} checked"
            + (f" ({diag.summary_line(all_diagnostics)})" if all_diagnostics else ""),
            err=True,
        )


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if any file is not formatted.",
)
@click.option(
    "--diff", "show_diff", is_flag=True, help="Write nothing; show what would change as a diff."
)
def fmt(files: tuple[Path, ...], check_only: bool, show_diff: bool) -> None:
    """Rewrite FILES in the canonical layout (comments kept).

    With --check, exit 1 if a file would change; with --diff, print the
    changes instead of writing them. A file with syntax errors is left
    untouched and reported (exit 2).
    """
    from tiny_dsl.checks.loader import read_problem
    from tiny_dsl.source import SourceTooLarge
    from tiny_dsl.syntax.formatter import format_source
    from tiny_dsl.syntax.parser import file_too_large

    writes = not (check_only or show_diff)
    changed: list[Path] = []
    broken = False
    for path in files:
        try:
            source = SourceFile.read(path, _display_path(path))
        except SourceTooLarge as exc:
            _emit_diagnostics([file_too_large(_display_path(path), exc.size)], {}, "text")
            broken = True
            continue
        except (OSError, ValueError) as exc:  # missing, a directory, not UTF-8
            _emit_diagnostics([read_problem(path, exc, None)], {}, "text")
            broken = True
            continue
        formatted, problems = format_source(source)
        if formatted is None:
            _emit_diagnostics(problems, {source.path: source}, "text")
            broken = True
            continue
        if formatted == source.text:
            continue
        changed.append(path)
        if show_diff:
            click.echo(
                "".join(
                    difflib.unified_diff(
                        source.text.splitlines(keepends=True),
                        formatted.splitlines(keepends=True),
                        f"{path} (original)",
                        f"{path} (formatted)",
                    )
                ),
                nl=False,
            )
        if writes:
            _write_atomic(path, formatted)
    verb = "reformatted" if writes else "would reformat"
    for path in changed:
        click.echo(f"{verb} {path}", err=True)
    if broken:
        sys.exit(EXIT_BAD_INPUT)
    if check_only and changed:
        sys.exit(EXIT_WOULD_REFORMAT)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Save the plan as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of text.")
@click.option(
    "--format",
    "output_format",
    type=_FORMATS,
    default="text",
    show_default=True,
    help="How to print diagnostics.",
)
@click.option(
    "--allow-outside",
    is_flag=True,
    help="Let imports, `from` paths and output `dir` reach outside the project.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path(".tts"),
    show_default=True,
    help="Where checkpoints are kept (to show what is covered).",
)
@_set_option
@_seed_option
@_replicates_option
def plan(
    file: Path,
    output: Path | None,
    as_json: bool,
    output_format: str,
    allow_outside: bool,
    state_dir: Path,
    params: dict[str, str],
    seed: int | None,
    replicates: int | None,
) -> None:
    """Show the execution plan of FILE: steps, LLM calls, tokens and cost.

    Nothing is sent to any model. Exit 0, or 2 when the file has errors.
    """
    from tiny_dsl.plan import render_plan
    from tiny_dsl.session import RunOptions, Session

    options = RunOptions(params=params, seed=seed, replicates=replicates)
    planned = Session(allow_outside=allow_outside, state_dir=state_dir).plan(file, options)
    diagnostics_format = "text" if as_json and output_format == "text" else output_format
    _emit_diagnostics(planned.diagnostics, planned.sources, diagnostics_format)
    execution_plan = planned.plan
    if execution_plan is None:
        sys.exit(EXIT_BAD_INPUT)
    text = execution_plan.model_dump_json(indent=2)
    if output is not None:
        _write_atomic(output, text + "\n")
    if as_json:
        click.echo(text)
    elif output_format == "text":
        covered = _covered_steps(execution_plan, state_dir)
        click.echo(render_plan(execution_plan, covered=covered, color=sys.stdout.isatty()))
        if output is not None:
            click.echo(f"plan saved to {output}")


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option(
    "--provider", help="embedded, openai, azure or openai-compatible (overrides the scenario)."
)
@click.option("--model", help="The model to ask (overrides the scenario).")
@click.option("--base-url", help="Server URL for --provider openai-compatible.")
@click.option(
    "--engine",
    type=click.Choice(["builtin", "tinytroupe"]),
    help="Simulation engine (overrides the scenario; default builtin).",
)
@click.option("--fresh", is_flag=True, help="Ignore checkpoints and cached answers.")
@click.option("--replay", is_flag=True, help="Answer every call from the cache; fail on a miss.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors and the result line.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path(".tts"),
    show_default=True,
    help="Where the LLM cache and checkpoints are kept.",
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path),
    help="Where run folders go (default: the `output` block's dir, or outputs/<scenario>).",
)
@click.option(
    "--allow-outside",
    is_flag=True,
    help="Let imports, `from` paths and outputs reach outside the project.",
)
@click.option(
    "--allow-over-budget",
    is_flag=True,
    help="Start even when the plan's estimated calls exceed `max_calls` (default 10,000) "
    "or its estimated cost exceeds the budget.",
)
@click.option(
    "--format",
    "output_format",
    type=_FORMATS,
    default="text",
    show_default=True,
    help="Diagnostics and the run summary as text (stderr) or JSON (stdout).",
)
@_set_option
@_seed_option
@_replicates_option
def run(
    target: Path,
    provider: str | None,
    model: str | None,
    base_url: str | None,
    engine: str | None,
    fresh: bool,
    replay: bool,
    quiet: bool,
    state_dir: Path,
    output_dir: Path | None,
    allow_outside: bool,
    allow_over_budget: bool,
    output_format: str,
    params: dict[str, str],
    seed: int | None,
    replicates: int | None,
) -> None:
    """Run TARGET (a .tts file or a saved plan.json) and write its outputs.

    Resumes from the longest unchanged prefix of steps a previous run completed.
    Exit 0 ok, 1 an `expect` failed, 2 bad input or configuration (nothing was
    spent), 3 the run failed (run again to resume).
    """
    from tiny_dsl.session import RunOptions, Session

    if fresh and replay:
        raise click.UsageError("--fresh and --replay contradict each other; choose one")
    options = RunOptions(
        provider=provider,
        model=model,
        base_url=base_url,
        engine=engine,
        mode="fresh" if fresh else "replay" if replay else "normal",
        # JSON goes to stdout alone: no progress display beside it.
        quiet=quiet or output_format == "json",
        output_dir=output_dir,
        allow_over_budget=allow_over_budget,
        params=params,
        seed=seed,
        replicates=replicates,
    )
    outcome = Session(allow_outside=allow_outside, state_dir=state_dir).run(target, options)
    if output_format == "json":
        click.echo(outcome.to_json())
    else:
        _emit_diagnostics(outcome.diagnostics, outcome.sources, "text")
        if outcome.summary:
            click.echo(outcome.summary, err=outcome.exit_code != EXIT_OK)
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("code")
def explain(code: str) -> None:
    """Explain a diagnostic CODE (for example E201)."""
    _load_all_codes()
    info = diag.CODES.get(code.upper())
    if info is None:
        suggestion = diag.did_you_mean(code.upper(), diag.CODES)
        click.echo(
            f"error: unknown diagnostic code `{code}`" + (f"; {suggestion}" if suggestion else ""),
            err=True,
        )
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"{code.upper()} ({info.slug})\n\n{info.explanation}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["html", "md", "pdf"]),
    help="Which reports to write (default: those the scenario's output block names, else both).",
)
def report(run_dir: Path, formats: tuple[str, ...]) -> None:
    """Regenerate the reports of RUN_DIR from its saved results (no model calls).

    The statistics are recomputed from the results found there.
    """
    from tiny_dsl.session import Session

    for path in Session().report(run_dir, formats):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("run_a", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def diff(run_a: Path, run_b: Path, as_json: bool) -> None:
    """Show what changed from RUN_A to RUN_B: settings, plan steps and results."""
    from tiny_dsl.reporting import diff_runs, diff_runs_json

    click.echo(diff_runs_json(run_a, run_b) if as_json else diff_runs(run_a, run_b))


# ------------------------------------------------------------------- helpers


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _write_atomic(path: Path, text: str) -> None:
    from tiny_dsl.files import write_text_atomic

    write_text_atomic(path, text)


def _covered_steps(execution_plan: Plan, state_dir: Path) -> set[str]:
    from tiny_dsl.runtime.checkpoints import covered_steps

    return set(covered_steps(execution_plan, state_dir))


def _load_all_codes() -> None:
    """Codes are registered by the stage that emits them; import every stage."""
    import importlib

    for module in ("tiny_dsl.checks", "tiny_dsl.plan", "tiny_dsl.runtime"):
        try:
            importlib.import_module(module)
        except ImportError:  # an optional stage dependency is missing
            continue


if __name__ == "__main__":
    main()
