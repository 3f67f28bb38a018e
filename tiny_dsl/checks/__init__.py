"""Stage 2: resolve imports and names, check every value, build the `Program`.

`check_file` reads a scenario and everything it imports and reports every
problem in every file in one pass; it never raises on bad input. The result's
`program` is set only when there are no errors and the file is runnable (it
has a `scenario` block). A file with only declarations is a library: it
checks clean, and `require_program` explains why it cannot be planned or run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks.context import Context
from tiny_dsl.checks.loader import Loader, display_path
from tiny_dsl.checks.model import Program
from tiny_dsl.checks.params import Overrides
from tiny_dsl.checks.program import check_program
from tiny_dsl.diagnostics import Diagnostic, DiagnosticError, sort_diagnostics
from tiny_dsl.resources import stdlib_dir
from tiny_dsl.source import SourceFile

__all__ = ["CheckResult", "Overrides", "check_file", "check_source"]


@dataclass
class CheckResult:
    program: Program | None  # None when there are errors or the file is not runnable
    diagnostics: list[Diagnostic]  # every problem found, sorted
    sources: dict[str, SourceFile]  # every file read, by display path, for rendering

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not any(d.is_error for d in self.diagnostics)

    def require_program(self) -> Program:
        """The program, or a `DiagnosticError` saying why there is none (for plan and run)."""
        if self.program is not None:
            return self.program
        problems = [d for d in self.diagnostics if d.is_error]
        if not problems:
            root = next(iter(self.sources), "the file")
            problems = [
                diag.error(
                    codes.NOT_RUNNABLE,
                    f"`{root}` has no `scenario` block: it is a library, not a runnable scenario",
                    None,
                    help=[
                        "import it from a scenario file, or add "
                        '`scenario NAME { title "..." }` and a `timeline`'
                    ],
                )
            ]
        raise DiagnosticError(problems)


def check_file(
    path: Path,
    *,
    allow_outside_root: bool = False,
    stdlib: Path | None = None,
    overrides: Overrides | None = None,
) -> CheckResult:
    """Check the scenario at `path` and everything it imports.

    Imports and `from` paths may not leave the directory of `path` (or the
    bundled stdlib) unless `allow_outside_root`. `stdlib` replaces the bundled
    standard library directory (for tests).
    """
    ctx = Context()
    loader = Loader(ctx, path, stdlib or stdlib_dir(), allow_outside_root)
    text = loader.read_text(path, None)
    if text is None:
        return CheckResult(None, sort_diagnostics(ctx.diagnostics), {})
    return _check(ctx, loader, display_path(path), text, path, overrides)


def check_source(
    source: SourceFile,
    *,
    path: Path | None = None,
    allow_outside_root: bool = False,
    stdlib: Path | None = None,
    overrides: Overrides | None = None,
) -> CheckResult:
    """Check text that is not (or not yet) saved: `path` is where it would live.

    Relative imports resolve from `path` (default: `source.path`); messages
    name the file `source.path`.
    """
    ctx = Context()
    location = path if path is not None else Path(source.path)
    loader = Loader(ctx, location, stdlib or stdlib_dir(), allow_outside_root)
    return _check(ctx, loader, source.path, source.text, location, overrides)


def _check(
    ctx: Context,
    loader: Loader,
    display: str,
    text: str,
    path: Path,
    overrides: Overrides | None = None,
) -> CheckResult:
    loader.load(display, text, path)
    program = check_program(ctx, loader, overrides)
    ctx.report_unresolved()
    return CheckResult(program, sort_diagnostics(ctx.diagnostics), dict(loader.sources))
