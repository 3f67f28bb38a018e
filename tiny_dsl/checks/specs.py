"""TinyTroupe persona objects with their source locations, and the fragment merge.

A persona's `spec` is TinyTroupe's free-form `persona` JSON. Fragments are
merged into it the way `TinyPerson.include_persona_definitions` does
(`tinytroupe.utils.merge_dicts`): lists are concatenated and de-duplicated,
maps merged recursively, and two different single values, or two values of
different types, are an error. TinyTroupe raises on the first one at run
time; here every conflict is reported before anything runs, at both sites,
which is why each value remembers where it was written.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.diagnostics import Diagnostic, Label
from tiny_dsl.source import Span

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class Origin:
    """Where a value was written, and by whom: None for the persona itself, else a fragment."""

    span: Span
    owner: str | None


@dataclass
class LocatedSpec:
    """A persona object and the origin of its values, by key path."""

    fallback: Origin  # for values written in a JSON file: the `from "..."` path
    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[KeyPath, Origin] = field(default_factory=dict)

    def set(self, path: KeyPath, value: Any, span: Span) -> None:
        node = self.data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        self.origins[path] = Origin(span, self.fallback.owner)

    def origin(self, path: KeyPath) -> Origin:
        """Where the value at `path` (or its nearest located ancestor) was written."""
        for length in range(len(path), 0, -1):
            found = self.origins.get(path[:length])
            if found is not None:
                return found
        return self.fallback


def merge_fragment(
    target: LocatedSpec, fragment: LocatedSpec, fragment_name: str, into: str, via: Span
) -> list[Diagnostic]:
    """Merge `fragment` into `target` in place; return one diagnostic per conflict.

    `into` names the target in messages ("persona `lisa`"); `via` is where the
    fragment is listed, the line the author can change when two fragments clash.
    """
    problems: list[Diagnostic] = []
    _merge(target, target.data, fragment, fragment.data, (), fragment_name, into, via, problems)
    for path, origin in fragment.origins.items():
        target.origins.setdefault(path, origin)
    return problems


def _merge(
    target: LocatedSpec,
    current: dict[str, Any],
    fragment: LocatedSpec,
    additions: dict[str, Any],
    path: KeyPath,
    name: str,
    into: str,
    via: Span,
    problems: list[Diagnostic],
) -> None:
    for key, value in additions.items():
        here = (*path, key)
        if key not in current or current[key] is None:
            current[key] = copy.deepcopy(value)
        elif isinstance(current[key], dict) and isinstance(value, dict):
            _merge(target, current[key], fragment, value, here, name, into, via, problems)
        elif isinstance(current[key], list) and isinstance(value, list):
            current[key] = remove_duplicates(current[key] + copy.deepcopy(value))
        elif type(current[key]) is not type(value) or current[key] != value:
            problems.append(
                check_merge_conflict(
                    current[key],
                    target.origin(here),
                    value,
                    fragment.origin(here),
                    here,
                    name,
                    into,
                    via,
                )
            )


def check_merge_conflict(
    existing: Any,
    existing_origin: Origin,
    incoming: Any,
    incoming_origin: Origin,
    path: KeyPath,
    fragment: str,
    into: str,
    via: Span,
) -> Diagnostic:
    """Two values for one field that TinyTroupe's merge refuses, shown at both sites."""
    dotted = ".".join(path)
    same_type = type(existing) is type(incoming)
    if same_type:
        problem = f"`{dotted}` is {_show(existing)} in one and {_show(incoming)} in the other"
    else:
        problem = (
            f"`{dotted}` is {_type_name(existing)} in one and {_type_name(incoming)} in the other"
        )
    setter = (
        "set" if existing_origin.owner is None else f"set by fragment `{existing_origin.owner}`"
    )
    secondary = [Label(incoming_origin.span, f"fragment `{fragment}` sets it to {_show(incoming)}")]
    if existing_origin.owner is None:
        primary, label = existing_origin.span, f"{setter} to {_show(existing)} here"
        secondary.append(Label(via, f"fragment `{fragment}` is merged here"))
    else:
        primary, label = via, f"merging fragment `{fragment}` here conflicts"
        secondary.append(Label(existing_origin.span, f"{setter} to {_show(existing)} here"))
    return diag.error(
        codes.MERGE_CONFLICT,
        f"fragment `{fragment}` conflicts with {into}: {problem}",
        primary,
        label,
        secondary=secondary,
        help=[
            "TinyTroupe concatenates lists and merges blocks, but cannot choose between "
            f"two {'values' if same_type else 'types'}; remove one of them, "
            f"or do not merge fragment `{fragment}` here"
        ],
    )


def remove_duplicates(items: list[Any]) -> list[Any]:
    """Items in first-seen order without repeats (lists and maps compared as JSON)."""
    seen: set[Any] = set()
    result = []
    for item in items:
        key = (
            json.dumps(item, sort_keys=True, default=str) if isinstance(item, list | dict) else item
        )
        if key not in seen:
            seen.add(key)
            result.append(item)
    return result


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "a whole number", float: "a number", list: "a list"}
    return names.get(type(value), "a block")
