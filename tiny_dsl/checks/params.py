"""`param NAME value` declarations, `{NAME}` in strings, and the command line's overrides.

    values = check_params(ctx, loader, overrides)    # before any other declaration is checked

Parameters are global to the program: a `param` in an imported file is one of
the scenario's. Each value is a string (a long string too) or a number;
`tts check/plan/run --set NAME=VALUE` replaces it (a number parameter takes a
number). A parameter's value may use other parameters (`{other}`), in any
order; a cycle is an error. Then every string of every module (import paths
aside: they are resolved already) has its `{NAME}` replaced, NAME a declared
parameter; everything else in braces stays as written (`{env.X}`, JSON), and a
`{nme}` one edit or so away from a parameter's name is warned about.

The substitution rewrites the syntax trees the later checks read, so every
construct gets parameter values without knowing about them, and no syntax
node reaches the checked model.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks.context import Context
from tiny_dsl.checks.loader import Loader
from tiny_dsl.checks.values import describe, show_number
from tiny_dsl.diagnostics import Label
from tiny_dsl.syntax import ast

ParamValue = str | int | float

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


@dataclass(frozen=True)
class Overrides:
    """What `tts check/plan/run` replace on the command line (None: as written)."""

    params: Mapping[str, str] = field(default_factory=dict)  # `--set NAME=VALUE`, as typed
    seed: int | None = None  # `--seed N`
    replicates: int | None = None  # `--replicates N`


def check_params(ctx: Context, loader: Loader, overrides: Overrides) -> dict[str, ParamValue]:
    """Every parameter's final value (declared order), after `overrides`; substitutes
    `{NAME}` in every module's strings. Reports every problem, in one pass."""
    declared = _declared(ctx, loader)
    values: dict[str, ParamValue] = {}
    for name, node in declared.items():
        value = _read_value(ctx, node)
        if value is not None:
            values[name] = value
    _apply_overrides(ctx, declared, values, overrides.params)
    resolved = _resolve(ctx, declared, values)
    if declared:
        for index, loaded in enumerate(loader.modules):
            substituted = _Substitution(ctx, resolved, declared).module(loaded.module)
            loader.modules[index] = dataclasses.replace(loaded, module=substituted)
    return resolved


def _declared(ctx: Context, loader: Loader) -> dict[str, ast.Param]:
    """The `param` declarations of every module, first one of a name kept."""
    declared: dict[str, ast.Param] = {}
    for loaded in loader.modules:
        for node in loaded.module.declarations:
            if not isinstance(node, ast.Param):
                continue
            first = declared.get(node.name.name)
            if first is not None:
                ctx.report(
                    diag.error(
                        codes.DUPLICATE_NAME,
                        f"param `{node.name.name}` is already declared",
                        node.name.span,
                        "declared again here",
                        secondary=[Label(first.name.span, "first declared here")],
                        help=[
                            "rename one; param names are unique across the scenario and its imports"
                        ],
                    )
                )
                continue
            declared[node.name.name] = node
    return declared


def _read_value(ctx: Context, node: ast.Param) -> ParamValue | None:
    value = node.value
    if isinstance(value, ast.Str):
        return value.value
    if isinstance(value, ast.Number):
        return value.value
    ctx.report(
        diag.error(
            codes.WRONG_TYPE,
            f"param `{node.name.name}` takes a string or a number, found {describe(value)}",
            value.span,
            "expected a string or a number",
            help=[f'for example: `param {node.name.name} "a value"` or `param {node.name.name} 3`'],
        )
    )
    return None


def _apply_overrides(
    ctx: Context,
    declared: Mapping[str, ast.Param],
    values: dict[str, ParamValue],
    overrides: Mapping[str, str],
) -> None:
    """`--set NAME=VALUE`: NAME must be declared; a number parameter takes a number."""
    for name, text in overrides.items():
        node = declared.get(name)
        if node is None:
            hint = ctx.suggest(name, declared)
            listed = ", ".join(f"`{n}`" for n in declared) or "none"
            ctx.report(
                diag.error(
                    codes.UNKNOWN_PARAM,
                    f"`--set {name}=...` names no param of the scenario",
                    None,
                    help=[*([hint] if hint else []), f"the scenario's params: {listed}"],
                )
            )
            continue
        if isinstance(node.value, ast.Number):
            if not _NUMBER.fullmatch(text.strip()):
                ctx.report(
                    diag.error(
                        codes.WRONG_TYPE,
                        f"`--set {name}={text}`: param `{name}` takes a number",
                        None,
                        secondary=[Label(node.value.span, "declared as a number here")],
                        help=[f"for example: `--set {name}={show_number(node.value)}`"],
                    )
                )
                continue
            number = float(text)
            values[name] = int(number) if number.is_integer() and "." not in text else number
        else:
            values[name] = text


def _resolve(
    ctx: Context, declared: Mapping[str, ast.Param], values: Mapping[str, ParamValue]
) -> dict[str, ParamValue]:
    """Each value with the parameters it uses replaced; a cycle is reported once."""
    resolved: dict[str, ParamValue] = {}
    reported: set[str] = set()

    def resolve(name: str, path: tuple[str, ...]) -> ParamValue | None:
        if name in resolved:
            return resolved[name]
        if name not in values:
            return None
        if name in path:
            cycle = [*path[path.index(name) :], name]
            if not reported & set(cycle):
                reported.update(cycle)
                node = declared[name]
                ctx.report(
                    diag.error(
                        codes.PARAM_CYCLE,
                        f"params use each other in a cycle: {' -> '.join(cycle)}",
                        node.value.span,
                        "uses itself through the others",
                        secondary=[
                            Label(declared[other].value.span, f"`{other}` is declared here")
                            for other in dict.fromkeys(cycle[1:-1])
                        ],
                        help=["write one of the values out instead of using another param"],
                    )
                )
            return None
        value = values[name]
        if isinstance(value, str):

            def inner(match: re.Match[str]) -> str:
                used = match.group(1)
                if used not in declared:
                    return match.group(0)
                found = resolve(used, (*path, name))
                return match.group(0) if found is None else _text(found)

            value = _PLACEHOLDER.sub(inner, value)
        if name in reported:
            return None
        resolved[name] = value
        return value

    for name in declared:
        resolve(name, ())
    return {name: resolved[name] for name in declared if name in resolved}


def _text(value: ParamValue) -> str:
    """How a value reads inside a string: numbers without a trailing `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Substitution:
    """Rewrites a module's strings with the parameters' values (`values`; a declared
    param whose value is in error is left as written, and was reported)."""

    def __init__(
        self, ctx: Context, values: Mapping[str, ParamValue], declared: Mapping[str, object]
    ) -> None:
        self.ctx = ctx
        self.values = values
        self.declared = declared

    def module(self, module: ast.Module) -> ast.Module:
        declarations = tuple(
            node if isinstance(node, ast.Import | ast.Param) else self.node(node)
            for node in module.declarations
        )
        return dataclasses.replace(module, declarations=declarations)

    def node(self, node: Any) -> Any:
        if isinstance(node, ast.Str):
            return self.string(node)
        if isinstance(node, tuple):
            items = tuple(self.node(item) for item in node)
            return node if all(a is b for a, b in zip(items, node, strict=True)) else items
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            changes = {}
            for item in dataclasses.fields(node):
                before = getattr(node, item.name)
                after = self.node(before)
                if after is not before:
                    changes[item.name] = after
            return dataclasses.replace(node, **changes) if changes else node
        return node

    def string(self, node: ast.Str) -> ast.Str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in self.values:
                return _text(self.values[name])
            if name not in self.declared:
                self._near_miss(node, name)
            return match.group(0)

        text = _PLACEHOLDER.sub(replace, node.value)
        return node if text == node.value else dataclasses.replace(node, value=text)

    def _near_miss(self, node: ast.Str, name: str) -> None:
        """`{nme}` a letter or two from a parameter's name: probably a typo."""
        hint = diag.did_you_mean(name, self.declared)
        if not hint:
            return
        self.ctx.report(
            diag.warning(
                codes.PARAM_LIKE_TEXT,
                f"`{{{name}}}` is not a param, so it stays as written",
                node.span,
                "kept verbatim",
                help=[hint],
            )
        )
