"""The state one check pass shares: diagnostics, declared names and what was built.

Checks never stop at the first problem. A declaration whose own checks fail is
still *declared* (its name resolves, so references to it raise no second,
misleading error) but is not *built*; checks that need the built object (say,
a population's segments) skip quietly when it is missing.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.specs import LocatedSpec
from tiny_dsl.diagnostics import Diagnostic, Label
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

Kind = Literal[
    "persona", "agent", "fragment", "demographics", "population", "world", "intervention"
]
KINDS: tuple[Kind, ...] = (
    "persona",
    "agent",
    "fragment",
    "demographics",
    "population",
    "world",
    "intervention",
)
NamedDeclaration = (
    ast.PersonaInline
    | ast.PersonaFile
    | ast.ExternalAgent
    | ast.FragmentInline
    | ast.FragmentFile
    | ast.Demographics
    | ast.Population
    | ast.World
    | ast.Intervention
)
NAMED = (
    ast.PersonaInline,
    ast.PersonaFile,
    ast.ExternalAgent,
    ast.FragmentInline,
    ast.FragmentFile,
    ast.Demographics,
    ast.Population,
    ast.World,
    ast.Intervention,
)
KIND_OF: dict[type, Kind] = {
    ast.PersonaInline: "persona",
    ast.PersonaFile: "persona",
    ast.ExternalAgent: "agent",
    ast.FragmentInline: "fragment",
    ast.FragmentFile: "fragment",
    ast.Demographics: "demographics",
    ast.Population: "population",
    ast.World: "world",
    ast.Intervention: "intervention",
}
# How a kind is named in messages: "a persona", "an intervention".
ARTICLE: dict[str, str] = {
    **{kind: ("an " if kind[0] in "aeiou" else "a ") + kind for kind in KINDS},
    "agent": "an external agent",
}

# What a top-level declaration probably declares, read from raw text: used to
# keep syntax errors from cascading into "unknown name" errors.
_DECLARATION_HEAD = re.compile(
    r"^[ \t]*(?:persona|agent|fragment|demographics|population|world|intervention)[ \t]+"
    r"([A-Za-z_]\w*)",
    re.MULTILINE,
)
_SCENARIO_HEAD = re.compile(r"^[ \t]*scenario\b", re.MULTILINE)
MAX_SUGGESTIONS = 100


@dataclass(frozen=True)
class Declared:
    kind: Kind
    name: str
    node: NamedDeclaration
    file: Path  # the declaring file, to resolve its `from "..."` paths
    in_root: bool


@dataclass
class FailedImport:
    """An import whose file could not be read, and the error that says why."""

    path: str  # as written in the import
    diagnostic: Diagnostic


@dataclass
class Context:
    """Everything one pass accumulates, in the order the checks run."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Names a file with syntax errors probably declares; never reported unknown.
    salvaged: set[str] = field(default_factory=set)
    salvaged_scenario: bool = False
    failed_imports: list[FailedImport] = field(default_factory=list)
    # Names that resolved to nothing, and to no close name, while an import had
    # failed: the file may declare them, so they are listed on the import's error
    # rather than reported one by one. Each with where it is first used.
    unresolved: dict[str, Span] = field(default_factory=dict)
    incomplete: bool = False  # some file has syntax errors: skip whole-program warnings
    declared: dict[Kind, dict[str, Declared]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    used: set[tuple[Kind, str]] = field(default_factory=set)
    # Built objects, by name; a declaration with errors is missing here.
    fragments: dict[str, LocatedSpec] = field(default_factory=dict)
    fragment_models: dict[str, m.Fragment] = field(default_factory=dict)
    personas: dict[str, m.Persona] = field(default_factory=dict)
    # Personas built without a fragment they list (unknown, or with errors of its
    # own): warnings about what their spec lacks would follow from that error.
    missing_fragments: set[str] = field(default_factory=set)
    demographics: dict[str, m.Demographics] = field(default_factory=dict)
    populations: dict[str, m.Population] = field(default_factory=dict)
    worlds: dict[str, m.World] = field(default_factory=dict)
    interventions: dict[str, m.Intervention] = field(default_factory=dict)
    external_agents: dict[str, m.ExternalAgent] = field(default_factory=dict)
    # Populations and personas some world has as agents (built or not).
    world_members: set[tuple[Kind, str]] = field(default_factory=set)
    # Worlds a timeline step uses, and the worlds each intervention is delivered in.
    step_worlds: set[str] = field(default_factory=set)
    delivered: dict[str, set[str]] = field(default_factory=dict)
    error_count: int = 0  # checks compare it before and after to know if they failed
    # "Did you mean" searches left in this pass: each compares a name with every
    # declared one, so a file of thousands of unknown names would take minutes.
    suggestions_left: int = MAX_SUGGESTIONS

    def report(self, diagnostic: Diagnostic) -> None:
        self.diagnostics.append(diagnostic)
        if diagnostic.is_error:
            self.error_count += 1

    def suggest(self, name: str, candidates: Iterable[str]) -> str:
        """`did_you_mean`, for the first `MAX_SUGGESTIONS` unknown names of the pass."""
        if self.suggestions_left <= 0:
            return ""
        self.suggestions_left -= 1
        return diag.did_you_mean(name, candidates)

    def salvage(self, text: str) -> None:
        """Remember what a file with syntax errors probably declares."""
        self.incomplete = True
        self.salvaged.update(match.group(1) for match in _DECLARATION_HEAD.finditer(text))
        if _SCENARIO_HEAD.search(text):
            self.salvaged_scenario = True

    # ------------------------------------------------------------------ names

    def lookup(self, kind: Kind, name: str) -> Declared | None:
        return self.declared[kind].get(name)

    def resolve(
        self,
        name: str,
        span: Span,
        kinds: tuple[Kind, ...],
        where: str,
        extra: Iterable[str] = (),
    ) -> Declared | None:
        """The declaration `name` refers to, if it is one of `kinds`; else report why not.

        `where` says where the name is used, for messages; `extra` adds
        "did you mean" candidates (computed only if the name is unknown).
        """
        for kind in kinds:
            found = self.declared[kind].get(name)
            if found is not None:
                self.used.add((kind, name))
                return found
        expected = " or ".join(ARTICLE[kind] for kind in kinds)
        others = [kind for kind in KINDS if name in self.declared[kind]]
        if others:
            other = self.declared[others[0]][name]
            check_wrong_kind(self, name, span, expected, where, other)
            return None
        if name in self.salvaged:
            return None
        candidates = itertools.chain((n for kind in kinds for n in self.declared[kind]), extra)
        if not self.failed_imports:
            check_unknown_name(self, name, span, " or ".join(kinds), where, candidates)
            return None
        suggestion = self.suggest(name, candidates)
        if not suggestion:
            self.unresolved.setdefault(name, span)
            self.error_count += 1  # reported on the failed import, by `report_unresolved`
            return None
        imports = _failed_imports_note(self.failed_imports)
        report_unknown_name(self, name, span, " or ".join(kinds), where, [suggestion], [imports])
        return None

    def import_failed(self, path: str, diagnostic: Diagnostic) -> None:
        """Remember that the file `path` names could not be imported, as `diagnostic` says."""
        self.failed_imports.append(FailedImport(path, diagnostic))

    def report_unresolved(self) -> None:
        """List the names nothing declares on the errors of the imports that failed."""
        if not self.unresolved:
            return
        names = list(self.unresolved)
        shown = _join_names(names[:MAX_UNRESOLVED_LISTED])
        if len(names) > MAX_UNRESOLVED_LISTED:
            shown += f" and {len(names) - MAX_UNRESOLVED_LISTED} more"
        verb, pronoun = ("is", "it") if len(names) == 1 else ("are", "they")
        first = self.unresolved[names[0]]
        for failed in self.failed_imports:
            note = (
                f"{shown} {verb} used but declared nowhere (first used at {first.origin()}); "
                f"{pronoun} may be declared in `{failed.path}`"
            )
            for index, diagnostic in enumerate(self.diagnostics):
                if diagnostic is failed.diagnostic:
                    self.diagnostics[index] = dataclasses.replace(
                        diagnostic, notes=(*diagnostic.notes, note)
                    )


def check_unknown_name(
    ctx: Context,
    name: str,
    span: Span,
    what: str,
    where: str,
    candidates: Iterable[str],
    *,
    declare_hint: str = "",
) -> None:
    """A name resolves to nothing: say so, with the closest names declared.

    `what` is the kind of thing expected ("persona or population"), `where`
    the place it is used ("`agents` of world `panel`").
    """
    suggestion = ctx.suggest(name, candidates)
    helps = [suggestion or declare_hint or "declare it, or import the file that declares it"]
    report_unknown_name(ctx, name, span, what, where, helps)


def report_unknown_name(
    ctx: Context,
    name: str,
    span: Span,
    what: str,
    where: str,
    helps: list[str],
    notes: Iterable[str] = (),
) -> None:
    """E201 for `name`, with the help lines (and notes) already worked out."""
    ctx.report(
        diag.error(
            codes.UNKNOWN_NAME,
            f"unknown {what} `{name}` in {where}",
            span,
            "not declared",
            help=helps,
            notes=notes,
        )
    )


MAX_UNRESOLVED_LISTED = 10


def _failed_imports_note(failed: list[FailedImport]) -> str:
    """Which imports failed, and where their errors are, for an unknown name's error."""
    errors = ", ".join(
        item.diagnostic.primary.span.origin() for item in failed if item.diagnostic.primary
    )
    if len(failed) == 1:
        return f"`{failed[0].path}` could not be imported (see {errors}); it may declare this name"
    files = _join_names([item.path for item in failed])
    return f"{files} could not be imported (see {errors}); one of them may declare this name"


def _join_names(names: list[str]) -> str:
    quoted = [f"`{name}`" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def check_wrong_kind(
    ctx: Context, name: str, span: Span, expected: str, where: str, other: Declared
) -> None:
    """A name is declared, but as another kind than the place it is used needs."""
    ctx.report(
        diag.error(
            codes.WRONG_KIND,
            f"`{name}` is {ARTICLE[other.kind]}, but {where} expects {expected}",
            span,
            f"{ARTICLE[other.kind]}",
            secondary=[Label(other.node.name.span, f"`{name}` is declared here")],
            help=[f"use {expected} here"],
        )
    )
