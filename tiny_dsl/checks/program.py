"""One check pass over loaded modules, in dependency order, and the `Program` it yields.

Declarations may appear in any order in any file, so names are collected from
every module first; then each kind is checked after the kinds it refers to
(fragments before personas, demographics before populations, populations
before worlds, worlds before the timeline, extraction before analysis).
"""

from __future__ import annotations

import dataclasses

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.agents import check_external_agent
from tiny_dsl.checks.analyses import Analyses
from tiny_dsl.checks.context import (
    ARTICLE,
    KIND_OF,
    NAMED,
    Context,
    Declared,
    Kind,
    NamedDeclaration,
)
from tiny_dsl.checks.demography_files import check_demographics_file
from tiny_dsl.checks.loader import LoadedModule, Loader
from tiny_dsl.checks.params import Overrides, check_params
from tiny_dsl.checks.people_files import check_loaded_population
from tiny_dsl.checks.personas import check_fragment, check_persona
from tiny_dsl.checks.populations import check_demographics, check_population
from tiny_dsl.checks.results import check_extracts
from tiny_dsl.checks.settings import MAX_REPLICATES, check_output, check_scenario
from tiny_dsl.checks.steps import check_timeline
from tiny_dsl.checks.usage import (
    check_duplicate_persona_name,
    check_incomplete_persona,
    check_unanalysed_field,
    check_undelivered_intervention,
    check_unused_persona,
    check_unused_population,
    check_unused_world,
)
from tiny_dsl.checks.worlds import check_intervention, check_world
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

SINGLE_BLOCKS = (ast.Scenario, ast.Timeline, ast.Analyze, ast.Output)
RUN_BLOCKS = (ast.Timeline, ast.Extract, ast.Analyze, ast.Output)
# Personas, populations and external agents are all who speaks in a transcript (and
# the first two stand in groups): one name cannot be two of them.
GROUP_RIVALS: dict[Kind, tuple[Kind, ...]] = {
    "persona": ("population", "agent"),
    "population": ("persona", "agent"),
    "agent": ("persona", "population"),
}


class RootBlocks:
    """The run-only blocks of the root file: at most one of each, any number of extracts."""

    def __init__(self, ctx: Context, root: LoadedModule):
        self.first: dict[type, ast.Declaration] = {}
        self.extracts: list[ast.Extract] = []
        for declaration in root.module.declarations:
            if isinstance(declaration, ast.Extract):
                self.extracts.append(declaration)
            elif isinstance(declaration, SINGLE_BLOCKS):
                first = self.first.get(type(declaration))
                if first is None:
                    self.first[type(declaration)] = declaration
                else:
                    check_duplicate_block(ctx, root, declaration, first)
        self.runnable = [d for d in root.module.declarations if isinstance(d, RUN_BLOCKS)]

    def get(self, kind: type[ast.Declaration]) -> ast.Declaration | None:
        return self.first.get(kind)


def check_program(
    ctx: Context, loader: Loader, overrides: Overrides | None = None
) -> m.Program | None:
    """Check every declaration of every module; the `Program` if runnable and error-free.

    `overrides` are the command line's `--set`, `--seed` and `--replicates`."""
    overrides = overrides or Overrides()
    # First, so that every later check reads strings with `{NAME}` replaced.
    params = check_params(ctx, loader, overrides)
    root = loader.modules[0]
    for loaded in loader.modules:
        for declaration in loaded.module.declarations:
            if isinstance(declaration, NAMED):
                declare(ctx, loaded, declaration)
    blocks = RootBlocks(ctx, root)

    for declared in list(ctx.declared["fragment"].values()):
        check_fragment(ctx, loader, declared)
    for declared in list(ctx.declared["persona"].values()):
        check_persona(ctx, loader, declared)
    for declared in list(ctx.declared["agent"].values()):
        check_external_agent(ctx, declared)
    for declared in list(ctx.declared["demographics"].values()):
        if isinstance(declared.node, ast.Demographics) and declared.node.path is not None:
            check_demographics_file(ctx, loader, declared)
        else:
            check_demographics(ctx, declared)
    for declared in list(ctx.declared["population"].values()):
        if isinstance(declared.node, ast.Population) and declared.node.path is not None:
            check_loaded_population(ctx, loader, declared)
        else:
            check_population(ctx, declared)
    for declared in list(ctx.declared["world"].values()):
        check_world(ctx, declared)
    for declared in list(ctx.declared["intervention"].values()):
        check_intervention(ctx, declared)

    scenario = blocks.get(ast.Scenario)
    settings = (
        check_scenario(ctx, scenario, overrides.seed)
        if isinstance(scenario, ast.Scenario)
        else None
    )
    if overrides.replicates is not None and not check_replicates_option(ctx, overrides.replicates):
        settings = None
    elif settings is not None and overrides.replicates is not None:
        settings = dataclasses.replace(settings, replicates=overrides.replicates)
    output_block = blocks.get(ast.Output)
    output = check_output(
        ctx, output_block if isinstance(output_block, ast.Output) else None, loader
    )
    timeline = blocks.get(ast.Timeline)
    steps = check_timeline(ctx, timeline) if isinstance(timeline, ast.Timeline) else ()
    extractions, fields = check_extracts(ctx, blocks.extracts, steps)
    analyze = blocks.get(ast.Analyze)
    analyses = Analyses(ctx, fields, loader.sources, loader, root.path)
    lowered = analyses.check(analyze) if isinstance(analyze, ast.Analyze) else ()

    if not ctx.incomplete:
        check_incomplete_persona(ctx)
        check_duplicate_persona_name(ctx)
    if scenario is None:
        if blocks.runnable and not ctx.salvaged_scenario:
            check_not_runnable(ctx, root, blocks.runnable[0])
        return None
    if not ctx.incomplete:
        check_unused_population(ctx)
        check_unused_persona(ctx)
        check_unused_world(ctx)
        check_undelivered_intervention(ctx)
        if isinstance(analyze, ast.Analyze):
            check_unanalysed_field(ctx, fields, analyses.used)
    if ctx.error_count or settings is None or output is None:
        return None
    return m.Program(
        root=root.source.path,
        sources=dict(loader.sources),
        settings=settings,
        personas=dict(ctx.personas),
        fragments=dict(ctx.fragment_models),
        demographics=dict(ctx.demographics),
        populations=dict(ctx.populations),
        worlds=dict(ctx.worlds),
        interventions=dict(ctx.interventions),
        timeline=steps,
        extractions=tuple(extractions),
        analyses=lowered,
        output=output,
        params=params,
        external_agents=dict(ctx.external_agents),
    )


def check_replicates_option(ctx: Context, replicates: int) -> bool:
    """`--replicates N` within the range the `replicates` setting allows."""
    if 1 <= replicates <= MAX_REPLICATES:
        return True
    ctx.report(
        diag.error(
            codes.OUT_OF_RANGE,
            f"`--replicates {replicates}` is out of range",
            None,
            help=[f"a scenario runs 1 to {MAX_REPLICATES} replicates"],
        )
    )
    return False


def declare(ctx: Context, loaded: LoadedModule, node: NamedDeclaration) -> None:
    """Enter a named declaration in its kind's table; report a name already taken."""
    kind = KIND_OF[type(node)]
    name = node.name.name
    taken = ctx.declared[kind].get(name)
    for rival_kind in GROUP_RIVALS.get(kind, ()):
        taken = taken or ctx.declared[rival_kind].get(name)
    if taken is not None:
        check_duplicate_name(ctx, kind, node.name.span, taken)
        return
    ctx.declared[kind][name] = Declared(kind, name, node, loaded.path, loaded.is_root)


def check_duplicate_name(ctx: Context, kind: str, span: Span, first: Declared) -> None:
    """A name already declared for this kind (or, for group members, the other kind)."""
    same = first.kind == kind
    problem = (
        f"{kind} `{first.name}` is already declared"
        if same
        else f"`{first.name}` is already declared as {ARTICLE[first.kind]}; "
        + (
            "personas, populations and external agents share one set of names"
            if "agent" in (kind, first.kind)
            else "personas and populations share names in groups"
        )
    )
    ctx.report(
        diag.error(
            codes.DUPLICATE_NAME,
            problem,
            span,
            "declared again here",
            secondary=[Label(first.node.name.span, "first declared here")],
            help=[f"rename one; {kind} names are unique across the scenario and its imports"],
        )
    )


def check_duplicate_block(
    ctx: Context, root: LoadedModule, node: ast.Declaration, first: ast.Declaration
) -> None:
    """A second `scenario`, `timeline`, `analyze` or `output` block."""
    word = type(node).__name__.lower()
    ctx.report(
        diag.error(
            codes.DUPLICATE_BLOCK,
            f"a scenario has at most one `{word}` block",
            _keyword_span(root, node, word),
            f"second `{word}` block",
            secondary=[Label(_keyword_span(root, first, word), f"first `{word}` block")],
            help=[f"merge the two `{word}` blocks into one"],
        )
    )


def check_not_runnable(ctx: Context, root: LoadedModule, block: ast.Declaration) -> None:
    """A file with a timeline (or extract, analyze, output) but no scenario block."""
    word = type(block).__name__.lower()
    ctx.report(
        diag.error(
            codes.NOT_RUNNABLE,
            f"`{root.source.path}` has a `{word}` block but no `scenario`: it is not runnable",
            _keyword_span(root, block, word),
            "needs a `scenario` block",
            help=['add `scenario NAME { title "..." seed 1 }` at the top of the file'],
        )
    )


def _keyword_span(root: LoadedModule, node: ast.Declaration, word: str) -> Span:
    start = node.span.start
    return root.source.span(start, start + len(word))
