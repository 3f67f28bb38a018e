"""Finding, reading and parsing the files a scenario names.

A scenario is its root file plus everything it imports, transitively. Each
file is read and parsed once, whatever the number of imports that name it.
Paths are resolved relative to the file that writes them; an import starting
with `stdlib/` falls back to the bundled standard library. Nothing outside the
root file's directory tree (or the standard library) is read unless the
author allows it: a scenario shared for review should not read `~/.ssh`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks.context import Context
from tiny_dsl.diagnostics import Diagnostic, Label
from tiny_dsl.source import SourceFile, SourceTooLarge, Span, read_source_text
from tiny_dsl.syntax import ast, parse
from tiny_dsl.syntax.parser import MAX_NESTING_DEPTH, file_too_large

STDLIB_PREFIX = "stdlib/"
# Declarations only the file that is run may contain.
ROOT_ONLY = (ast.Scenario, ast.Timeline, ast.Extract, ast.Analyze, ast.Output)
_KEYWORD = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class LoadedModule:
    path: Path  # resolved, for identity
    source: SourceFile
    module: ast.Module
    is_root: bool


@lru_cache(maxsize=512)
def _parse_cached(display: str, text: str) -> tuple[SourceFile, ast.Module, tuple[Diagnostic, ...]]:
    """Parsing is pure, so repeated checks (an editor, the test suite) reuse the trees."""
    source = SourceFile(display, text)
    module, problems = parse(source)
    return source, module, tuple(problems)


def real_path(path: Path) -> Path:
    """`path` made absolute with symlinks and `..` resolved, whatever the file system says."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):
        return Path(os.path.normpath(os.path.abspath(path)))


@dataclass(frozen=True)
class PathPolicy:
    """The path sandbox: which files a scenario may read and where its run may write.

    One object answers for imports, `from` paths, an output block's `dir` and
    `--output-dir`. Reading is allowed under the scenario's directory and the
    standard library; writing under the working directory (which a relative
    output path is resolved from when the run starts) or the scenario's
    directory. Symlinks and `..` are resolved first, so neither can lead
    anywhere else. `allow_outside` lifts both limits.
    """

    scenario_dir: Path
    stdlib: Path
    allow_outside: bool = False
    work_dir: Path | None = None  # None: the working directory when asked

    @classmethod
    def for_scenario(
        cls, scenario: Path, stdlib: Path, allow_outside: bool, work_dir: Path | None = None
    ) -> PathPolicy:
        return cls(real_path(scenario).parent, real_path(stdlib), allow_outside, work_dir)

    def may_read(self, path: Path) -> bool:
        if self.allow_outside:
            return True
        real = real_path(path)
        return real.is_relative_to(self.scenario_dir) or real.is_relative_to(self.stdlib)

    def may_write(self, directory: str | Path) -> bool:
        if self.allow_outside:
            return True
        base = real_path(self.work_dir if self.work_dir is not None else Path.cwd())
        target = real_path(base / directory)
        return target.is_relative_to(base) or target.is_relative_to(self.scenario_dir)


def display_path(path: Path) -> str:
    """Relative to the working directory when under it, else as given."""
    try:
        return real_path(path).relative_to(real_path(Path.cwd())).as_posix()
    except ValueError:
        return str(path)


def is_file(path: Path) -> bool:
    try:
        return "\x00" not in str(path) and path.is_file()
    except (OSError, ValueError):
        return False


class Loader:
    """Reads the root file and its imports, and the JSON files that personas name."""

    def __init__(self, ctx: Context, root: Path, stdlib: Path, allow_outside: bool):
        self.ctx = ctx
        self.paths = PathPolicy.for_scenario(root, stdlib, allow_outside)
        self.stdlib = self.paths.stdlib
        self.modules: list[LoadedModule] = []
        self.sources: dict[str, SourceFile] = {}

    def read_text(self, path: Path, span: Span | None) -> str | None:
        """The text of `path`, or None after reporting why it cannot be read.

        `span` is where the path is written; None for the file being checked,
        which the author named on the command line.
        """
        try:
            return read_source_text(path)
        except SourceTooLarge as exc:
            self.ctx.report(file_too_large(display_path(path), exc.size, span))
        except (OSError, ValueError) as exc:
            self.ctx.report(read_problem(path, exc, span))
        return None

    # ---------------------------------------------------------------- modules

    def load(self, display: str, text: str, path: Path) -> None:
        """Parse the root and, depth first, every file it imports; report cycles."""
        root = self._add(display, text, real_path(path), is_root=True)
        # Each stack entry: the module, its pending imports, the import that led to it.
        stack: list[tuple[LoadedModule, Iterator[ast.Import], ast.Import | None]] = [
            (root, self._imports(root), None)
        ]
        loaded = {root.path: root}
        while stack:
            current, pending, _via = stack[-1]
            node = next(pending, None)
            if node is None:
                stack.pop()
                continue
            reported = len(self.ctx.diagnostics)
            target = self.resolve_import(current, node)
            if target is None:
                self._import_failed(node, reported)
                continue
            cycle = [index for index, entry in enumerate(stack) if entry[0].path == target]
            if cycle:
                members = stack[cycle[0] :]
                check_import_cycle(
                    self.ctx,
                    node,
                    [entry[0].source.path for entry in members],
                    [entry[2] for entry in members[1:] if entry[2] is not None],
                )
                continue
            if target in loaded:
                continue
            imported = self.read_text(target, node.path.span)
            if imported is None:
                self._import_failed(node, reported)
                continue
            module = self._add(display_path(target), imported, target, is_root=False)
            loaded[target] = module
            stack.append((module, self._imports(module), node))

    def _import_failed(self, node: ast.Import, reported: int) -> None:
        """Tell the context that `node` imports nothing, with the error reported since
        `reported` diagnostics were, which says why."""
        if len(self.ctx.diagnostics) > reported:
            self.ctx.import_failed(node.path.value, self.ctx.diagnostics[reported])

    def _add(self, display: str, text: str, path: Path, *, is_root: bool) -> LoadedModule:
        source, module, problems = _parse_cached(display, text)
        for problem in problems:
            self.ctx.report(problem)
        if not module.complete:
            self.ctx.salvage(source.text)
        loaded = LoadedModule(path, source, module, is_root)
        self.modules.append(loaded)
        self.sources[source.path] = source
        if not is_root:
            for declaration in module.declarations:
                if isinstance(declaration, ROOT_ONLY):
                    check_not_allowed_in_import(self.ctx, declaration, source)
        return loaded

    @staticmethod
    def _imports(module: LoadedModule) -> Iterator[ast.Import]:
        return (d for d in module.module.declarations if isinstance(d, ast.Import))

    def resolve_import(self, importer: LoadedModule, node: ast.Import) -> Path | None:
        """The file an import names, or None after reporting why there is none."""
        written = node.path.value
        local = importer.path.parent / written
        candidates = [local]
        if written.startswith(STDLIB_PREFIX):
            candidates.append(self.stdlib / written[len(STDLIB_PREFIX) :])
        for candidate in candidates:
            if is_file(candidate):
                if not self.paths.may_read(candidate):
                    check_path_outside_root(self.ctx, node.path, "import")
                    return None
                return real_path(candidate)
        if not all(self.paths.may_read(c) for c in candidates):
            check_path_outside_root(self.ctx, node.path, "import")
            return None
        check_file_not_found(self.ctx, node.path, candidates, ".tts")
        return None

    def data_path(self, importer: Path, path_node: ast.Str) -> Path | None:
        """A data file a statement names, relative to its file's folder, or None after
        reporting why it may not or cannot be read."""
        target = importer.parent / path_node.value
        if not self.paths.may_read(target):
            check_path_outside_root(self.ctx, path_node, "data file")
            return None
        if not is_file(target):
            check_file_not_found(self.ctx, path_node, [target], Path(path_node.value).suffix)
            return None
        return real_path(target)

    # ------------------------------------------------------------- JSON files

    def load_json_spec(
        self, importer: Path, path_node: ast.Str, expected_type: str
    ) -> tuple[dict[str, Any], str] | None:
        """The `persona` object of a TinyTroupe file and its display path, or None."""
        target = importer.parent / path_node.value
        if not self.paths.may_read(target):
            check_path_outside_root(self.ctx, path_node, "`from` path")
            return None
        if not is_file(target):
            check_file_not_found(self.ctx, path_node, [target], ".json")
            return None
        text = self.read_text(target, path_node.span)
        if text is None:
            return None
        source = SourceFile(display_path(target), text)
        self.sources[source.path] = source
        try:
            data = json.loads(source.text)
        except json.JSONDecodeError as exc:
            check_invalid_json(self.ctx, path_node, source, exc)
            return None
        except RecursionError:  # nested deeper than the decoder's stack allows
            check_json_too_deep(self.ctx, path_node, source.path)
            return None
        if json_depth(data) > MAX_NESTING_DEPTH:
            check_json_too_deep(self.ctx, path_node, source.path)
            return None
        problem = _spec_problem(data, expected_type)
        if problem:
            check_invalid_tinytroupe_spec(self.ctx, path_node, source.path, problem, expected_type)
            return None
        return data["persona"], source.path


def json_depth(data: Any) -> int:
    """How deeply arrays and objects nest in decoded JSON, counted without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(data, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING_DEPTH:
                break
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth) for child in children)
    return deepest


def _spec_problem(data: Any, expected_type: str) -> str:
    """What keeps `data` from being a TinyTroupe file of `expected_type`, or ""."""
    if not isinstance(data, dict):
        return "the file does not hold a JSON object"
    kind = data.get("type")
    if kind != expected_type:
        found = f'`"type": {json.dumps(kind)}`' if "type" in data else 'no `"type"`'
        return f'it has {found}, expected `"type": "{expected_type}"`'
    persona = data.get("persona")
    if not isinstance(persona, dict):
        return 'it has no `"persona"` object'
    if expected_type == "TinyPerson" and not isinstance(persona.get("name"), str):
        return 'its `"persona"` has no `"name"` string'
    return ""


# ------------------------------------------------------------------ the checks


def read_problem(path: Path, exc: OSError | ValueError, span: Span | None) -> Diagnostic:
    """Why `path` could not be read as a scenario: not there (E203, with close
    names), a directory, not UTF-8 or refused by the system (E210)."""
    display = display_path(path)
    if isinstance(exc, FileNotFoundError):
        return missing_file(path.as_posix(), [path], ".tts", span)
    if is_dir(path):
        return directory_given(path, span)
    if isinstance(exc, UnicodeDecodeError):
        reason = f"it is not UTF-8 text ({exc.reason} at byte {exc.start})"
    else:
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
        reason = reason[:1].lower() + reason[1:]
    return diag.error(
        codes.UNREADABLE_FILE,
        f"cannot read `{display}`: {reason}",
        span,
        "cannot be read",
        help=["save the file as UTF-8 text, or point to another file"],
    )


MAX_LISTED_FILES = 5


def directory_given(path: Path, span: Span | None) -> Diagnostic:
    """A directory where a scenario file is expected, with the scenarios in it."""
    names = _files_in(path, ".tts")
    shown = [f"`{display_path(path / name)}`" for name in names]
    if not shown:
        advice = "it holds no `.tts` file; name a scenario file"
    elif len(shown) == 1:
        advice = f"name the scenario file in it: {shown[0]}"
    else:
        more = f" ({len(shown)} in all)" if len(shown) > MAX_LISTED_FILES else ""
        listed = ", ".join(shown[:MAX_LISTED_FILES])
        advice = f"name a scenario file in it, such as {listed}{more}"
    return diag.error(
        codes.UNREADABLE_FILE,
        f"`{display_path(path)}` is a directory, not a scenario file",
        span,
        "a directory",
        help=[advice],
    )


def check_import_cycle(
    ctx: Context, closing: ast.Import, files: list[str], steps: list[ast.Import]
) -> None:
    """Files that import each other in a circle, shown import by import."""
    ctx.report(
        diag.error(
            codes.IMPORT_CYCLE,
            "import cycle: " + " -> ".join(f"`{f}`" for f in [*files, files[0]]),
            closing.path.span,
            "this import closes the cycle",
            secondary=[Label(node.path.span, "imported here") for node in steps],
            help=["move the declarations both files need into a third file that both import"],
        )
    )


def check_path_outside_root(ctx: Context, path_node: ast.Str, what: str) -> None:
    """A path that leaves the scenario's directory tree (and the stdlib)."""
    ctx.report(
        diag.error(
            codes.PATH_OUTSIDE_ROOT,
            f"{what} `{path_node.value}` leads outside the scenario's directory",
            path_node.span,
            "outside the scenario's directory",
            help=[
                "copy the file into the scenario's directory, or pass `--allow-outside` "
                "if you trust this path"
            ],
        )
    )


def check_file_not_found(ctx: Context, path_node: ast.Str, tried: list[Path], suffix: str) -> None:
    """A path to a file that does not exist, with close names from where it was looked for."""
    ctx.report(missing_file(path_node.value, tried, suffix, path_node.span))


# Paths in one directory share their prefix, so all of them look alike: only
# the names about as close as the closest are suggested.
FILE_SUGGESTION_MARGIN = 0.1


def missing_file(written: str, tried: list[Path], suffix: str, span: Span | None) -> Diagnostic:
    """E203 for the path `written`, looked for at `tried`, with the closest names.

    Candidates come from the directory each tried path is in, written the way
    the author wrote the path; when no such directory exists (a misspelt
    directory), from the files at the same depth under its closest existing
    ancestor.
    """
    written_dir = PurePosixPath(written).parent
    candidates: set[str] = set()
    for attempt in tried:
        directory = attempt.parent
        names = _files_in(directory, suffix)
        if names:
            candidates.update((written_dir / name).as_posix() for name in names)
            continue
        base, prefix, depth = directory, written_dir, 0
        while not is_dir(base) and base != base.parent:
            base, prefix, depth = base.parent, prefix.parent, depth + 1
        candidates.update(
            (prefix / relative).as_posix() for relative in _files_under(base, suffix, depth)
        )
    suggestion = diag.did_you_mean(written, candidates, margin=FILE_SUGGESTION_MARGIN)
    if span is None:  # the file named on the command line: no file names it
        return diag.error(
            codes.FILE_NOT_FOUND,
            f"cannot find `{written}`",
            None,
            help=[suggestion] if suggestion else ["check the path of the scenario file"],
        )
    looked = " and ".join(f"`{display_path(p)}`" for p in tried)
    return diag.error(
        codes.FILE_NOT_FOUND,
        f"cannot find `{written}`",
        span,
        "no such file",
        help=[suggestion] if suggestion else ["paths are relative to the file that names them"],
        notes=[f"looked for {looked}"],
    )


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _files_in(directory: Path, suffix: str) -> list[str]:
    if not is_dir(directory):
        return []
    try:
        return sorted(p.name for p in directory.iterdir() if p.name.endswith(suffix))
    except OSError:
        return []


MAX_SUGGESTED_FILES = 2000


def _files_under(directory: Path, suffix: str, depth: int) -> list[str]:
    """Paths of `suffix` files `depth` directories below `directory`, relative to it."""
    found: list[str] = []
    try:
        for path in directory.glob("*/" * depth + f"*{suffix}"):
            found.append(path.relative_to(directory).as_posix())
            if len(found) >= MAX_SUGGESTED_FILES:
                break
    except (OSError, ValueError):
        pass
    return found


def check_not_allowed_in_import(
    ctx: Context, declaration: ast.Declaration, source: SourceFile
) -> None:
    """A run-only block (scenario, timeline, ...) in a file that is imported."""
    start = declaration.span.start
    keyword = _KEYWORD.match(source.text, start)
    word = keyword.group(0) if keyword else "block"
    ctx.report(
        diag.error(
            codes.NOT_ALLOWED_IN_IMPORT,
            f"an imported file cannot contain a `{word}` block",
            source.span(start, start + len(word)),
            "only allowed in the file that is run",
            help=[
                "imported files declare personas, fragments, demographics, populations, worlds "
                f"and interventions; move this `{word}` block to the scenario file"
            ],
        )
    )


def check_invalid_json(
    ctx: Context, path_node: ast.Str, source: SourceFile, exc: json.JSONDecodeError
) -> None:
    """A TinyTroupe file that is not JSON, with where the JSON parser stopped."""
    offset = min(max(exc.pos, 0), len(source.text))
    ctx.report(
        diag.error(
            codes.INVALID_JSON,
            f"`{source.path}` is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            path_node.span,
            "this file is not valid JSON",
            secondary=[Label(source.span(offset, offset), exc.msg)],
            help=["fix the JSON at that position; a JSON linter shows the details"],
        )
    )


def check_json_too_deep(ctx: Context, path_node: ast.Str, display: str) -> None:
    """A TinyTroupe file whose arrays and objects nest past `MAX_NESTING_DEPTH`."""
    ctx.report(
        diag.error(
            "E107",
            f"`{display}` nests arrays and objects more than {MAX_NESTING_DEPTH} levels deep",
            path_node.span,
            "nested too deeply",
            help=["a persona needs a few levels at most; flatten the JSON or fix its generator"],
        )
    )


def check_invalid_tinytroupe_spec(
    ctx: Context, path_node: ast.Str, display: str, problem: str, expected_type: str
) -> None:
    """Valid JSON that is not the TinyTroupe file `persona`/`fragment ... from` needs."""
    shape = (
        '{"type": "TinyPerson", "persona": {"name": "...", ...}}'
        if expected_type == "TinyPerson"
        else '{"type": "Fragment", "persona": {...}}'
    )
    helps = [f"the file must look like `{shape}`"]
    if "Fragment" in problem and expected_type == "TinyPerson":
        helps.insert(0, "this is a fragment file: declare it with `fragment NAME from ...`")
    elif "TinyPerson" in problem and expected_type == "Fragment":
        helps.insert(0, "this is an agent file: declare it with `persona NAME from ...`")
    what = "agent" if expected_type == "TinyPerson" else "fragment"
    ctx.report(
        diag.error(
            codes.INVALID_TINYTROUPE_SPEC,
            f"`{display}` is not a TinyTroupe {what} specification: {problem}",
            path_node.span,
            f"not {'an' if what == 'agent' else 'a'} {what} file",
            help=helps,
        )
    )
