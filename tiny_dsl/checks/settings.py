"""The `scenario` settings and the `output` block, with their defaults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context
from tiny_dsl.checks.loader import Loader
from tiny_dsl.checks.values import (
    Node,
    Props,
    as_float,
    check_out_of_range,
    check_wrong_type,
    read_choice,
    read_items,
    show_number,
)
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

SCENARIO_FIELDS = (
    "title",
    "description",
    "seed",
    "model",
    "provider",
    "base_url",
    "temperature",
    "budget",
    "max_concurrency",
    "max_calls",
    "engine",
    "replicates",
    "quality",
)
QUALITY_FIELDS = ("regenerate", "judge", "threshold")
MAX_REGENERATE = 5
# What `quality { judge [...] }` can score, as TinyTroupe's action quality checks do
# (`runtime.judge` holds what each one asks the judge).
JUDGE_CRITERIA = ("persona_adherence", "self_consistency", "fluency", "suitability")
# Scores are 0 to 9; a turn scoring below the threshold on a criterion is flagged.
JUDGE_SCORE_MAX = 9
DEFAULT_JUDGE_THRESHOLD = 7
PROVIDERS = ("embedded", "openai", "azure", "openai-compatible")
ENGINES: tuple[Literal["builtin", "tinytroupe"], ...] = ("builtin", "tinytroupe")
DEFAULT_TEMPERATURE = 0.7
DEFAULT_CONCURRENCY = 8
MAX_REPLICATES = 50
MAX_CONCURRENCY = 256
OUTPUT_FIELDS = ("formats", "dir")
FORMATS = ("csv", "json", "jsonl", "html", "md", "messages", "pdf")
DEFAULT_FORMATS = ("csv", "json")


def check_scenario(
    ctx: Context, node: ast.Scenario, seed_override: int | None = None
) -> m.Settings | None:
    """The run's settings; None when any of them is invalid. `seed_override` is
    `--seed N` (the command line's `--replicates N` applies at plan time)."""
    errors = ctx.error_count
    props = Props(ctx, node.body, f"scenario `{node.name.name}`", node.name.span, SCENARIO_FIELDS)
    props.report_unknown()
    title = props.string("title")
    description = props.string("description")
    seed = props.integer("seed", 0, None)
    model = props.string("model")
    provider = props.choice("provider", PROVIDERS)
    base_url = props.string("base_url")
    temperature = props.number("temperature", 0, 2)
    budget_node = props.value("budget")
    budget = read_budget(ctx, budget_node) if budget_node is not None else None
    concurrency = props.integer("max_concurrency", 1, MAX_CONCURRENCY)
    max_calls = props.integer("max_calls", 1, None)
    engine_node = props.value("engine")
    engine = read_choice(ctx, "engine", engine_node, ENGINES) if engine_node is not None else None
    replicates = props.integer("replicates", 1, MAX_REPLICATES)
    quality = read_quality(ctx, props)
    if seed_override is not None:
        seed = seed_override
    if ctx.error_count != errors:
        return None
    return m.Settings(
        name=node.name.name,
        title=title if title is not None else node.name.name,
        description=description or "",
        seed=seed or 0,
        model=model,
        provider=provider,
        base_url=base_url,
        temperature=temperature if temperature is not None else DEFAULT_TEMPERATURE,
        budget_usd=budget,
        max_concurrency=concurrency or DEFAULT_CONCURRENCY,
        max_calls=max_calls,
        engine="tinytroupe" if engine == "tinytroupe" else "builtin",
        span=node.span,
        budget_span=_property_span(props, "budget"),
        max_calls_span=_property_span(props, "max_calls"),
        replicates=replicates or 1,
        replicates_span=_property_span(props, "replicates"),
        quality=quality,
    )


def read_quality(ctx: Context, props: Props) -> m.Quality:
    """`quality { regenerate N; judge [criteria]; threshold T }`."""
    node = props.value("quality")
    if node is None:
        return m.Quality()
    if not isinstance(node, ast.Block):
        check_wrong_type(ctx, "quality", node, "a block", "{ regenerate 2 }")
        return m.Quality()
    where = props.entries["quality"].key.span
    quality = Props(ctx, node, "`quality`", where, QUALITY_FIELDS)
    quality.report_unknown()
    regenerate = quality.integer("regenerate", 0, MAX_REGENERATE)
    judge = _read_judge(ctx, quality.value("judge"))
    threshold = quality.integer("threshold", 0, JUDGE_SCORE_MAX)
    if threshold is not None and not judge and "judge" not in quality.entries:
        ctx.report(
            diag.warning(
                codes.UNUSED_SETTING,
                "`threshold` has no effect without `judge`",
                quality.entries["threshold"].span,
                "nothing is judged",
                help=[f"add `judge [{', '.join(JUDGE_CRITERIA)}]`, or remove `threshold`"],
            )
        )
    return m.Quality(
        regenerate=regenerate or 0,
        judge=judge,
        threshold=threshold if threshold is not None else DEFAULT_JUDGE_THRESHOLD,
    )


def _read_judge(ctx: Context, node: Node | None) -> tuple[str, ...]:
    """`judge [persona_adherence, fluency]`: the criteria, each once, in the author's order."""
    if node is None:
        return ()
    items = read_items(ctx, "judge", node, f"[{', '.join(JUDGE_CRITERIA)}]")
    if items is None:
        return ()
    criteria: list[str] = []
    for item in items:
        criterion = read_choice(ctx, "judge", item, JUDGE_CRITERIA)
        if criterion is None:
            continue
        if criterion in criteria:
            ctx.report(
                diag.warning(
                    codes.UNUSED_SETTING,
                    f"`{criterion}` is judged once; the repeat has no effect",
                    item.span,
                    "repeated",
                    help=[f"remove the second `{criterion}`"],
                )
            )
            continue
        criteria.append(criterion)
    return tuple(criteria)


def _property_span(props: Props, key: str) -> Span | None:
    """Where the property `key` is written (key and value), if it is."""
    entry = props.entries.get(key)
    return entry.span if entry is not None else None


def read_budget(ctx: Context, node: Node) -> float | None:
    """A positive amount in US dollars, the currency model prices are known in."""
    if not isinstance(node, ast.Money):
        check_wrong_type(ctx, "budget", node, "an amount of money", "5.00 usd")
        return None
    if node.currency != "usd":
        ctx.report(
            diag.error(
                codes.UNSUPPORTED_CURRENCY,
                f"budgets are in `usd` only, found `{node.currency}`",
                node.span,
                "not in usd",
                help=[
                    "model prices are known in US dollars; convert the amount, "
                    f"for example `budget {show_number(node.amount)} usd`"
                ],
            )
        )
        return None
    amount = as_float(ctx, "budget", node.amount)
    if amount is None:
        return None
    if amount <= 0:
        check_out_of_range(ctx, "budget", node.span, f"{show_number(node.amount)} usd", 0, None)
        return None
    return amount


def check_output(ctx: Context, node: ast.Output | None, loader: Loader) -> m.OutputSpec | None:
    """What a run writes; the defaults when there is no `output` block.

    `dir` may not lead outside the project unless the author allows it
    (`loader.paths.may_write`): a scenario shared for review should not write
    into `~/.config`.
    """
    if node is None:
        return m.OutputSpec(DEFAULT_FORMATS, None, None)
    errors = ctx.error_count
    props = Props(ctx, node.body, "`output`", node.span, OUTPUT_FIELDS)
    props.report_unknown()
    formats: tuple[str, ...] = DEFAULT_FORMATS
    listed = props.value("formats")
    if listed is not None:
        formats = read_formats(ctx, listed) or DEFAULT_FORMATS
    directory = props.string("dir")
    directory_node = props.value("dir")
    if isinstance(directory_node, ast.Str) and not loader.paths.may_write(directory_node.value):
        check_output_outside_root(ctx, directory_node)
    if ctx.error_count != errors:
        return None
    return m.OutputSpec(formats, directory, node.span)


def check_output_outside_root(ctx: Context, node: ast.Str) -> None:
    """An output `dir` outside the working directory and the scenario's directory."""
    ctx.report(
        diag.error(
            codes.PATH_OUTSIDE_ROOT,
            f"output `dir` `{node.value}` leads outside the project",
            node.span,
            "outside the working directory and the scenario's directory",
            help=[
                'use a relative path that stays inside the project, such as `dir "outputs/study"`, '
                "or pass `--allow-outside` if you mean to write there"
            ],
        )
    )


def read_formats(ctx: Context, node: Node) -> tuple[str, ...] | None:
    """A list of distinct output formats (a single name is accepted too)."""
    items: Sequence[Node] | None = (node,)
    if not isinstance(node, ast.Ref | ast.Str):
        items = read_items(ctx, "formats", node, "[csv, json]")
    if items is None:
        return None
    formats: dict[str, Node] = {}
    for item in items:
        word = read_choice(ctx, "formats", item, FORMATS)
        if word is None:
            continue
        if word in formats:
            ctx.report(
                diag.error(
                    codes.DUPLICATE_NAME,
                    f"format `{word}` is listed twice",
                    item.span,
                    "listed again here",
                    secondary=[Label(formats[word].span, "first listed here")],
                    help=["list every format once"],
                )
            )
            continue
        formats[word] = item
    if not items:
        check_wrong_type(ctx, "formats", node, "at least one format", "[csv, json]")
        return None
    return tuple(formats) if len(formats) == len(items) else None
