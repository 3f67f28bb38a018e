"""`demographics NAME from "file.json"`: TinyTroupe's demography files as demographics.

TinyTroupe's factory reads files such as `examples/information/populations/
usa.json` as free text for the model. Here the parts that are distributions
become distributions, sampled by code like inline ones, and the rest stays
text for the model (the demographics' description, shown in every generation
prompt). The rules:

- a map whose values are all shares (`"18.6%"` strings or numbers) is a
  distribution. Keys like `0-14` are numeric brackets (`65+` gets the upper
  bound `UPPER_AGE`); any other key makes it categorical, labels as written;
- its attribute name is the key in snake case with a trailing `distribution`
  dropped (`"Age Distribution"` -> `age`); a map named `Distribution` takes its
  parent's name (`household_income`); share maps nested in a map of other
  things are distributions of their own (`regions`);
- shares adding up to more than 100.5% are several answers per person (the USA
  political affiliation at 124%, "... or higher" education levels): text. A
  categorical map short of 100% by no more than the rounding of its shares
  (half a point each) leaves the rest to `other`, as inline distributions do;
  one further short holds rates or a subgroup (labour force participation and
  unemployment; the 6% of another religion): text, as is a numeric one, with why;
- everything else (strings, lists, maps of lists, single shares) is text.

`tts check` lists the keys taken as text in one note per file (N101); a name
two keys derive gets the later one's whole path (N103).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context, Declared
from tiny_dsl.checks.loader import (
    Loader,
    check_file_not_found,
    check_path_outside_root,
    display_path,
    is_file,
)
from tiny_dsl.checks.located_json import JsonFile, JsonPath
from tiny_dsl.checks.populations import GENERAL, OTHER, RESERVED_ATTRIBUTES, TOLERANCE
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

UPPER_AGE = 99  # the upper bound of an open bracket such as `65+`
# Percentage points a share printed as a whole number may be off by.
ROUNDING_PER_SHARE = 0.5
DESCRIPTIVE_KEYS = ("title", "description", "source")
_BRACKET = re.compile(r"\s*(\d+)\s*(?:-|\u2013|to)\s*(\d+)\s*")
_OPEN_BRACKET = re.compile(r"\s*(\d+)\s*\+\s*")
_SHARE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*%\s*")
_NOT_NAME = re.compile(r"[^0-9a-z]+")


@dataclass
class _Reading:
    """What the walk over a file's content found."""

    distributions: list[m.Distribution] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    renamed: list[tuple[str, str, JsonPath]] = field(default_factory=list)
    text_keys: list[str] = field(default_factory=list)  # "A > B (why)"
    text: Any = None  # the content kept for the model


def check_demographics_file(ctx: Context, loader: Loader, declared: Declared) -> None:
    node = declared.node
    if not isinstance(node, ast.Demographics) or node.path is None:
        return
    file = _read(ctx, loader, declared, node.path)
    if file is None:
        return
    data = file.data
    if not isinstance(data, dict):
        ctx.report(
            diag.error(
                codes.INVALID_TINYTROUPE_SPEC,
                f"`{file.display}` is not a TinyTroupe demography file: it holds "
                f"{'a list' if isinstance(data, list) else 'a single value'}",
                node.path.span,
                "not a demography file",
                help=['the file must be an object: `{"title": ..., "content": {...}}`'],
            )
        )
        return
    content = data.get("content")
    base: JsonPath = ("content",)
    if not isinstance(content, dict):
        content = {k: v for k, v in data.items() if k not in DESCRIPTIVE_KEYS}
        base = ()
    reading = _Reading()
    reading.text = _walk(file, content, base, (), reading) or {}
    title = str(data.get("title") or declared.name)
    description = describe(data, reading.text)
    if reading.text_keys:
        shown = len(reading.text_keys)
        ctx.report(
            diag.note(
                codes.DEMOGRAPHICS_TEXT,
                f"{shown} key{'s' if shown != 1 else ''} of `{file.display}` "
                f"{'are' if shown != 1 else 'is'} kept as text for the model, not sampled",
                node.path.span,
                f"{len(reading.distributions)} distributions, {shown} text keys",
                notes=[
                    "distributions: "
                    + ", ".join(f"`{d.attribute}`" for d in reading.distributions),
                    "text: " + "; ".join(reading.text_keys),
                ],
            )
        )
    for name, full, path in reading.renamed:
        ctx.report(
            diag.note(
                codes.DISTRIBUTION_RENAMED,
                f"`{' > '.join(str(p) for p in path)}` is named `{full}`: an earlier key "
                f"of `{file.display}` is already `{name}`",
                node.path.span,
                f"`{full}` comes from this file",
                secondary=[Label(file.key_span((*base, *path)), f"named `{full}`")],
            )
        )
    ctx.demographics[declared.name] = m.Demographics(
        declared.name,
        title,
        description,
        str(data.get("source") or ""),
        tuple(reading.distributions),
        node.span,
        source_path=file.display,
    )


def _read(ctx: Context, loader: Loader, declared: Declared, path_node: ast.Str) -> JsonFile | None:
    target = declared.file.parent / path_node.value
    if not loader.paths.may_read(target):
        check_path_outside_root(ctx, path_node, "`from` path")
        return None
    if not is_file(target):
        check_file_not_found(ctx, path_node, [target], ".json")
        return None
    text = loader.read_text(target, path_node.span)
    if text is None:
        return None
    display = display_path(target)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        file = JsonFile(display, text, None, loader.sources)
        offset = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        ctx.report(
            diag.error(
                codes.INVALID_JSON,
                f"`{display}` is not valid JSON: {message}",
                file.source.span(offset, offset),
                message,
                secondary=[Label(path_node.span, "read from here")],
                help=["fix the JSON at this position; a JSON linter shows the details"],
            )
        )
        return None
    # The file is shown with the notes about it: a source of the check like a `.tts`.
    file = JsonFile(display, text, data, loader.sources)
    _ = file.source
    return file


def _walk(file: JsonFile, value: Any, base: JsonPath, path: JsonPath, reading: _Reading) -> Any:
    """Take the distributions out of `value`; return what is left of it as text (None:
    nothing). A map with no distribution inside is listed as one text key."""
    if isinstance(value, dict) and value and path:
        shares = _shares(value)
        if shares is not None:
            taken = _distribution(file, value, shares, base, path, reading)
            return None if taken is not None else value
    if isinstance(value, dict) and value:
        distributions, listed = len(reading.distributions), len(reading.text_keys)
        left: dict[str, Any] = {}
        for key, item in value.items():
            rest = _walk(file, item, base, (*path, key), reading)
            if rest is not None:
                left[key] = rest
        if path and len(reading.distributions) == distributions:
            del reading.text_keys[listed:]
            reading.text_keys.append(_shown(path))
        return left or None
    if path:
        reading.text_keys.append(_shown(path))
    return value


def _shown(path: JsonPath) -> str:
    return " > ".join(str(part) for part in path)


def _shares(value: dict[str, Any]) -> list[float] | None:
    """The shares of a map whose values are all shares, as percentages; else None."""
    raw: list[float] = []
    numbers = 0
    for item in value.values():
        if isinstance(item, str):
            match = _SHARE.fullmatch(item)
            if match is None:
                return None
            raw.append(float(match.group(1)))
        elif isinstance(item, int | float) and not isinstance(item, bool):
            raw.append(float(item))
            numbers += 1
        else:
            return None
    if any(share < 0 or not math.isfinite(share) for share in raw):
        return None
    # Plain numbers that add up to 1 are fractions; otherwise they are percentages.
    if numbers == len(raw) and abs(math.fsum(raw) - 1) <= TOLERANCE / 100:
        raw = [share * 100 for share in raw]
    return raw


def _distribution(
    file: JsonFile,
    value: dict[str, Any],
    shares: list[float],
    base: JsonPath,
    path: JsonPath,
    reading: _Reading,
) -> m.Distribution | None:
    """The distribution of a share map, or None (recorded as text, with why)."""
    total = math.fsum(shares)
    brackets = [_bracket(key) for key in value]
    numeric = all(bracket is not None for bracket in brackets)
    if total > 100 + TOLERANCE:
        why = f"shares add up to {total:g}%: several per person"
        reading.text_keys.append(f"{_shown(path)} ({why})")
        return None
    if numeric and total < 100 - TOLERANCE:
        reading.text_keys.append(
            f"{_shown(path)} (age-like brackets covering {total:g}%, not the whole population)"
        )
        return None
    # A table of one answer per person adds up to 100% but for the rounding of its
    # shares (half a point each). Well under that it is rates or a subgroup (labour
    # force participation and unemployment; the 6% who follow another religion), and
    # sampling it with `other` for the rest would give people an absurd attribute.
    if total < 100 - max(TOLERANCE, ROUNDING_PER_SHARE * len(shares)):
        reading.text_keys.append(
            f"{_shown(path)} (shares add up to {total:g}%: not one answer per person)"
        )
        return None
    if numeric and _overlapping([b for b in brackets if b is not None]):
        reading.text_keys.append(f"{_shown(path)} (brackets overlap)")
        return None
    name = _attribute_name(path)
    if name in reading.names or name in RESERVED_ATTRIBUTES or name in (GENERAL, OTHER):
        full = _full_name(path)
        reading.renamed.append((name, full, path))
        name = full
    reading.names.add(name)
    if numeric:
        outcomes = [
            m.Share(key, share / 100, float(b[0]), float(b[1]))
            for key, share, b in zip(value, shares, brackets, strict=True)
            if b is not None
        ]
    else:
        outcomes = [m.Share(key, share / 100) for key, share in zip(value, shares, strict=True)]
        if total < 100 - TOLERANCE:
            outcomes.append(m.Share(OTHER, (100 - total) / 100))
    span: Span = file.key_span((*base, *path))
    distribution = m.Distribution(name, tuple(outcomes), span)
    reading.distributions.append(distribution)
    return distribution


def _bracket(key: str) -> tuple[int, int] | None:
    closed = _BRACKET.fullmatch(key)
    if closed:
        low, high = int(closed.group(1)), int(closed.group(2))
        return (low, high) if low <= high else None
    opened = _OPEN_BRACKET.fullmatch(key)
    if opened:
        low = int(opened.group(1))
        return (low, max(low, UPPER_AGE))
    if key.strip().isdigit():
        return (int(key), int(key))
    return None


def _overlapping(brackets: list[tuple[int, int]]) -> bool:
    ordered = sorted(brackets)
    return any(b[0] <= a[1] for a, b in itertools.pairwise(ordered))


def snake(key: str) -> str:
    return _NOT_NAME.sub("_", key.casefold()).strip("_")


def _attribute_name(path: JsonPath) -> str:
    """`Age Distribution` -> `age`; `Household Income > Distribution` -> `household_income`."""
    parts = [str(p) for p in path]
    while len(parts) > 1 and snake(parts[-1]) == "distribution":
        parts.pop()
    name = snake(parts[-1])
    if name.endswith("_distribution"):
        name = name[: -len("_distribution")]
    return name if name and not name[0].isdigit() else f"a_{name}"


def _full_name(path: JsonPath) -> str:
    parts = [snake(str(p)) for p in path]
    parts = [p[: -len("_distribution")] if p.endswith("_distribution") else p for p in parts]
    return "_".join(p for p in parts if p and p != "distribution")


def describe(data: dict[str, Any], text: dict[str, Any]) -> str:
    """The demographics as the generation prompt shows them: the file's title and
    description, then every text key as an indented outline."""
    lines: list[str] = []
    for key in ("title", "description"):
        if isinstance(data.get(key), str) and data[key].strip():
            lines.append(data[key].strip())
    _outline(text, 0, lines)
    return "\n".join(lines)


def _outline(value: Any, depth: int, lines: list[str]) -> None:
    indent = "  " * depth
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(f"{indent}{key}:")
            _outline(item, depth + 1, lines)
        elif isinstance(item, list):
            lines.append(f"{indent}{key}: {', '.join(str(x) for x in item)}")
        else:
            lines.append(f"{indent}{key}: {item}")
