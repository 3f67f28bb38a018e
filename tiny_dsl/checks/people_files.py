"""People read from files: `persona NAME from "f" { ... }` and `population NAME from "path"`.

A population from files is a folder of TinyTroupe `.agent.json` files (sorted
by file name; a run's `personas/<population>/` is one), or one JSON file
holding a list of agent specifications (`{"type": "TinyPerson", "persona":
{...}}`), of persona objects, or of persona-database records (`{id, name,
role, description, personality {traits, goals, style}, model, temperature}`),
which are mapped onto TinyTroupe's persona fields.

Every member is validated and every problem of every file is reported in one
pass, each at the line and column of the offending value in its JSON file:
duplicate ids and names, bad ids, temperatures outside 0..2, missing
required fields, fields of another form than TinyTroupe's. Files are decoded
with `json` and only re-read with positions when something must be shown
(`located_json`), so a folder of 10,000 valid files costs 10,000 decodes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
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
    is_dir,
    is_file,
    json_depth,
)
from tiny_dsl.checks.located_json import JsonFile, JsonPath
from tiny_dsl.checks.personas import (
    AGENT_FILE_FORMS,
    _json_kind,
    resolve_fragments,
)
from tiny_dsl.checks.populations import GENERAL, MAX_POPULATION
from tiny_dsl.checks.specs import LocatedSpec, Origin, merge_fragment
from tiny_dsl.checks.values import (
    Props,
    check_out_of_range,
    check_unknown_property,
    entry_key,
)
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import SourceTooLarge, Span, read_source_text
from tiny_dsl.syntax import ast
from tiny_dsl.syntax.parser import MAX_NESTING_DEPTH

AGENT_SUFFIX = ".agent.json"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_ID_LENGTH = 64
MAX_TEMPERATURE = 2
LOADED_POPULATION_FIELDS = ("size", "context", "fragments", "model", "temperature")
# Keys no TinyTroupe persona has: a list item with any of them is a persona-database
# record, and so is every other item of its file (a record missing its `id` is one too).
DATABASE_KEYS = ("id", "role", "model", "temperature")
# What a population from files cannot have, and why (the help of the error).
NOT_FOR_LOADED = {
    "segment": "its members are read from files, not sampled into segments; declare "
    "another `population ... from` for each group of files",
    "vary": "its members are read from files and have no sampled attributes; `vary` "
    "is for generated populations",
}


# ------------------------------------------------------------- loaded populations


@dataclass
class _Record:
    """One member as read: where it is, and its persona before validation."""

    file: JsonFile
    path: JsonPath  # of the member's persona-bearing object in its file
    persona_path: JsonPath  # of its `persona` object (the record itself for bare personas)
    stem: str | None  # the file name without `.agent.json`, for a folder's files
    position: int  # 1-based, over the whole population
    data: dict[str, Any]
    database: bool


def check_loaded_population(ctx: Context, loader: Loader, declared: Declared) -> None:
    """`population NAME from "path" [{ size; context; fragments; model; temperature }]`."""
    node = declared.node
    if not isinstance(node, ast.Population) or node.path is None:
        return
    name = declared.name
    owner = f"population `{name}`"
    errors = ctx.error_count
    props = Props(
        ctx,
        node.body,
        owner,
        node.name.span,
        LOADED_POPULATION_FIELDS,
        named=("segment",),
    )
    for block in props.named["segment"]:
        check_not_for_loaded(ctx, "segment", block.kind.span, name)
    for entry in props.unknown:
        key = entry_key(entry)
        if key in NOT_FOR_LOADED:
            span = entry.kind.span if isinstance(entry, ast.NamedBlock) else entry.key.span
            check_not_for_loaded(ctx, key, span, name)
        else:
            check_unknown_property(ctx, entry, owner, LOADED_POPULATION_FIELDS)
    size = props.integer("size", 1, MAX_POPULATION)
    context = props.string("context") or ""
    model = props.string("model")
    temperature = props.number("temperature", 0, MAX_TEMPERATURE)
    fragment_refs, _complete = resolve_fragments(ctx, props.value("fragments"))
    before_reading = ctx.error_count
    records = _read_records(ctx, loader, declared.file, node.path)
    if records is None:
        return
    members = _validate(ctx, records, name)
    if not records:
        # Files that were all unreadable have been reported; an empty source has not.
        if ctx.error_count == before_reading:
            check_no_members(ctx, node.path, name)
        return
    size_node = props.value("size")
    if size is not None and size > len(records) and size_node is not None:
        check_size_exceeds_members(ctx, size_node.span, size, len(records), node.path.value)
    if ctx.error_count != errors:
        return
    merged_members: list[m.LoadedMember] = []
    for member in members:
        spec = LocatedSpec(Origin(node.path.span, None), member.spec)
        for ref, fragment in fragment_refs:
            into = f"member `{member.id}` of {owner}"
            for problem in merge_fragment(spec, fragment, ref.parts[0], into, ref.span):
                ctx.report(problem)
        merged_members.append(
            m.LoadedMember(
                member.id,
                spec.data,
                model if model is not None else member.model,
                temperature if temperature is not None else member.temperature,
            )
        )
    if ctx.error_count != errors:
        return
    fragment_names = tuple(ref.parts[0] for ref, _ in fragment_refs)
    chosen = size if size is not None else len(merged_members)
    ctx.populations[name] = m.Population(
        name,
        "",
        chosen,
        (m.Segment(GENERAL, chosen, (), "", fragment_names, node.span),),
        context,
        node.span,
        members=tuple(merged_members),
        # As written: the plan (whose hashes cover it) must not depend on the working directory.
        source_path=node.path.value,
    )


def _read_records(
    ctx: Context, loader: Loader, importer: Path, path_node: ast.Str
) -> list[_Record] | None:
    """Every member of a folder or a list file, in order; None if the path is unusable."""
    target = importer.parent / path_node.value
    if not loader.paths.may_read(target):
        check_path_outside_root(ctx, path_node, "`from` path")
        return None
    if is_dir(target):
        # The folder's display path once, not one resolution per file: 10,000 files
        # would spend seconds resolving the same directory.
        folder, directory = display_path(target), str(target)
        with os.scandir(target) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(AGENT_SUFFIX))
        records: list[_Record] = []
        for file_name in names:
            display = f"{folder}/{file_name}"
            file_path = os.path.join(directory, file_name)
            loaded = _decode(ctx, loader, file_path, path_node, display)
            if loaded is None:
                continue
            record = _agent_file_record(ctx, loaded, path_node, len(records) + 1)
            if record is not None:
                record.stem = file_name[: -len(AGENT_SUFFIX)]
                records.append(record)
        return records
    if not is_file(target):
        check_file_not_found(ctx, path_node, [target], ".json")
        return None
    loaded = _decode(ctx, loader, target, path_node, display_path(target))
    if loaded is None:
        return None
    if not isinstance(loaded.data, list):
        check_not_a_people_file(ctx, loaded, path_node)
        return None
    database = any(
        isinstance(item, dict) and any(key in item for key in DATABASE_KEYS) for item in loaded.data
    )
    records = []
    for index, item in enumerate(loaded.data):
        record = _list_record(ctx, loaded, index, item, database, len(records) + 1)
        if record is not None:
            records.append(record)
    return records


def _decode(
    ctx: Context, loader: Loader, path: Path | str, path_node: ast.Str, display: str
) -> JsonFile | None:
    try:
        text = read_source_text(path)
    except (OSError, ValueError, SourceTooLarge):
        # Read again by the loader, which reports why the file cannot be read.
        if loader.read_text(Path(path), path_node.span) is None:
            return None
        text = read_source_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        file = JsonFile(display, text, None, loader.sources)
        check_broken_json(ctx, file, exc, path_node)
        return None
    except RecursionError:
        check_too_deep(ctx, path_node, display)
        return None
    # Nesting needs an opening bracket per level: most files have too few to need a walk.
    shallow = text.count("{") + text.count("[") <= MAX_NESTING_DEPTH
    if not shallow and json_depth(data) > MAX_NESTING_DEPTH:
        check_too_deep(ctx, path_node, display)
        return None
    return JsonFile(display, text, data, loader.sources)


def _agent_file_record(
    ctx: Context, file: JsonFile, path_node: ast.Str, position: int
) -> _Record | None:
    """The member of one `.agent.json` file of a folder."""
    data = file.data
    if not isinstance(data, dict) or data.get("type") != "TinyPerson":
        check_not_an_agent(ctx, file, (), path_node)
        return None
    persona = data.get("persona")
    if not isinstance(persona, dict):
        check_not_an_agent(ctx, file, ("persona",) if "persona" in data else (), path_node)
        return None
    return _Record(file, (), ("persona",), None, position, persona, database=False)


def _list_record(
    ctx: Context, file: JsonFile, index: int, item: Any, database: bool, position: int
) -> _Record | None:
    """One item of a list file: an agent specification, a persona or a database record."""
    if not isinstance(item, dict):
        check_item_not_object(ctx, file, (index,), item)
        return None
    if "type" in item or "persona" in item:
        persona = item.get("persona")
        if item.get("type") != "TinyPerson" or not isinstance(persona, dict):
            check_item_not_agent(ctx, file, (index,), item)
            return None
        return _Record(file, (index,), (index, "persona"), None, position, persona, False)
    if database:
        return _Record(file, (index,), (index,), None, position, item, database=True)
    return _Record(file, (index,), (index,), None, position, item, database=False)


@dataclass(frozen=True)
class _Member:
    id: str
    spec: dict[str, Any]
    model: str | None
    temperature: float | None


def _validate(ctx: Context, records: list[_Record], population: str) -> list[_Member]:
    """Check every record and map it onto TinyTroupe's persona; all problems reported."""
    width = max(3, len(str(len(records))))
    members: list[_Member] = []
    ids: dict[str, _Record] = {}
    names: dict[str, _Record] = {}
    for record in records:
        data = record.data
        base = record.persona_path
        member_id = _member_id(ctx, record, width)
        if member_id is not None:
            if member_id in ids:
                check_duplicate_member(ctx, record, ids[member_id], "id", member_id, population)
            else:
                ids[member_id] = record
        person_name = data.get("name")
        if "name" not in data:
            check_missing_member_field(ctx, record, "name", '"name": "Ana Lima"')
        elif not isinstance(person_name, str) or not person_name.strip():
            check_member_field_type(ctx, record, (*base, "name"), "name", "a non-empty string")
        else:
            folded = person_name.strip().casefold()
            if folded in names:
                check_duplicate_member(ctx, record, names[folded], "name", person_name, population)
            else:
                names[folded] = record
        model = _model(ctx, record)
        temperature = _temperature(ctx, record)
        spec = _database_persona(data) if record.database else dict(data)
        _check_forms(ctx, record, spec)
        members.append(_Member(member_id or "", spec, model, temperature))
    return members


def _member_id(ctx: Context, record: _Record, width: int) -> str | None:
    """The `id` field, else the file stem, else the 1-based position, zero-padded."""
    data = record.data
    if "id" in data:
        value = data["id"]
        path = (*record.persona_path, "id")
        if isinstance(value, bool) or not isinstance(value, str | int):
            check_member_field_type(ctx, record, path, "id", "a string")
            return None
        text = str(value)
        if not _valid_id(text):
            check_bad_member_id(ctx, record.file.value_span(path), text, "`id`")
            return None
        return text
    if record.database:
        check_missing_member_field(ctx, record, "id", '"id": "ana-lima"')
        return None
    if record.stem is not None:
        if not _valid_id(record.stem):
            span = record.file.source.span(0, 0)
            check_bad_member_id(ctx, span, record.stem, "file name")
            return None
        return record.stem
    return f"{record.position:0{width}d}"


def _valid_id(text: str) -> bool:
    return len(text) <= MAX_ID_LENGTH and ID_PATTERN.fullmatch(text) is not None


def _model(ctx: Context, record: _Record) -> str | None:
    if "model" not in record.data:
        return None
    value = record.data["model"]
    if not isinstance(value, str) or not value.strip():
        path = (*record.persona_path, "model")
        check_member_field_type(ctx, record, path, "model", "a model name string")
        return None
    return value


def _temperature(ctx: Context, record: _Record) -> float | None:
    if "temperature" not in record.data:
        return None
    value = record.data["temperature"]
    path = (*record.persona_path, "temperature")
    if isinstance(value, bool) or not isinstance(value, int | float):
        check_member_field_type(ctx, record, path, "temperature", "a number from 0 to 2")
        return None
    if not 0 <= value <= MAX_TEMPERATURE:
        span = record.file.value_span(path)
        check_out_of_range(ctx, "temperature", span, json.dumps(value), 0, MAX_TEMPERATURE)
        return None
    return float(value)


def _database_persona(record: dict[str, Any]) -> dict[str, Any]:
    """A persona-database record as TinyTroupe's persona: role and description become
    the occupation, personality's goals and style TinyTroupe's own fields; `id`,
    `model` and `temperature` belong to the member, not the persona; the rest is kept."""
    persona: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("id", "model", "temperature"):
            continue
        if key == "role":
            occupation = persona.setdefault("occupation", {})
            if isinstance(occupation, dict):
                occupation["title"] = value
        elif key == "description":
            occupation = persona.setdefault("occupation", {})
            if isinstance(occupation, dict):
                occupation["description"] = value
        elif key == "personality" and isinstance(value, dict):
            kept = {k: v for k, v in value.items() if k not in ("goals", "style")}
            if kept:
                persona["personality"] = kept
            if "goals" in value:
                persona["long_term_goals"] = value["goals"]
            if "style" in value:
                persona["style"] = value["style"]
        else:
            persona[key] = value
    return persona


# Where a mapped persona field comes from in a persona-database record.
_DATABASE_SOURCE: dict[str, tuple[str, ...]] = {
    "long_term_goals": ("personality", "goals"),
    "style": ("personality", "style"),
}


def _check_forms(ctx: Context, record: _Record, spec: dict[str, Any]) -> None:
    """Usual persona fields whose value has another form than TinyTroupe's (W110);
    `name` is required to be a string and reported as an error already."""
    for key, value in spec.items():
        form = AGENT_FILE_FORMS.get(key)
        if (
            key == "name"
            or form is None
            or (isinstance(value, form[1]) and not isinstance(value, bool))
        ):
            continue
        origin = _DATABASE_SOURCE.get(key, (key,)) if record.database else (key,)
        span = record.file.value_span((*record.persona_path, *origin))
        ctx.report(
            diag.warning(
                codes.AGENT_FILE_FIELD_TYPE,
                f"`{key}` of member {record.position} is {_json_kind(value)}, where "
                f"TinyTroupe personas have {form[0]}",
                span,
                f"{_json_kind(value)}",
                help=[f"give `{key}` {form[0]}"],
            )
        )


# ------------------------------------------------------------------ the checks


def check_not_for_loaded(ctx: Context, what: str, span: Span, population: str) -> None:
    """`segment` or `vary` in a population read from files."""
    ctx.report(
        diag.error(
            codes.NOT_FOR_LOADED_POPULATION,
            f"population `{population}` is read from files and cannot have `{what}`",
            span,
            "not allowed here",
            help=[NOT_FOR_LOADED[what]],
        )
    )


def check_broken_json(
    ctx: Context, file: JsonFile, exc: json.JSONDecodeError, path_node: ast.Str
) -> None:
    """A people file that is not JSON, shown where the JSON broke."""
    offset = min(max(exc.pos, 0), len(file.text))
    ctx.report(
        diag.error(
            codes.INVALID_JSON,
            f"`{file.display}` is not valid JSON: {exc.msg}",
            file.source.span(offset, offset),
            exc.msg,
            secondary=[Label(path_node.span, "read from here")],
            help=["fix the JSON at this position; a JSON linter shows the details"],
        )
    )


def check_too_deep(ctx: Context, path_node: ast.Str, display: str) -> None:
    ctx.report(
        diag.error(
            "E107",
            f"`{display}` nests arrays and objects more than {MAX_NESTING_DEPTH} levels deep",
            path_node.span,
            "nested too deeply",
            help=["a persona needs a few levels at most; flatten the JSON or fix its generator"],
        )
    )


def check_not_a_people_file(ctx: Context, file: JsonFile, path_node: ast.Str) -> None:
    ctx.report(
        diag.error(
            codes.INVALID_TINYTROUPE_SPEC,
            f"`{file.display}` holds {_json_kind(file.data)}, not a list of people",
            file.start_span(()),
            "expected a JSON list `[...]`",
            secondary=[Label(path_node.span, "read from here")],
            help=[
                "give a folder of `.agent.json` files, or a JSON list of agent "
                'specifications (`{"type": "TinyPerson", "persona": {...}}`) or of persona '
                "objects; for one agent file use `persona NAME from ...`"
            ],
        )
    )


def check_not_an_agent(ctx: Context, file: JsonFile, path: JsonPath, path_node: ast.Str) -> None:
    ctx.report(
        diag.error(
            codes.INVALID_TINYTROUPE_SPEC,
            f"`{file.display}` is not a TinyTroupe agent specification",
            file.start_span(path),
            'expected `{"type": "TinyPerson", "persona": {...}}`',
            secondary=[Label(path_node.span, "in this folder")],
            help=["fix the file, or move it out of the folder"],
        )
    )


def check_item_not_object(ctx: Context, file: JsonFile, path: JsonPath, item: Any) -> None:
    ctx.report(
        diag.error(
            codes.WRONG_TYPE,
            f"item {int(path[0]) + 1} of `{file.display}` is {_json_kind(item)}, not a person",
            file.value_span(path),
            "expected an object",
            help=['each item is a persona object such as `{"name": "Ana Lima", ...}`'],
        )
    )


def check_item_not_agent(ctx: Context, file: JsonFile, path: JsonPath, item: Any) -> None:
    kind = item.get("type")
    found = f'`"type": {json.dumps(kind)}`' if "type" in item else 'no `"type"`'
    ctx.report(
        diag.error(
            codes.INVALID_TINYTROUPE_SPEC,
            f"item {int(path[0]) + 1} of `{file.display}` is not a TinyTroupe agent "
            f"specification: it has {found} and "
            f'{"a" if isinstance(item.get("persona"), dict) else "no"} `"persona"` object',
            file.start_span(path),
            'expected `{"type": "TinyPerson", "persona": {...}}`',
            help=['give it `"type": "TinyPerson"` and a `"persona"` object'],
        )
    )


def check_missing_member_field(ctx: Context, record: _Record, key: str, example: str) -> None:
    ctx.report(
        diag.error(
            codes.MISSING_PROPERTY,
            f"member {record.position} in `{record.file.display}` has no `{key}`",
            record.file.start_span(record.persona_path),
            f"`{key}` is required",
            help=[f"add `{example}` to this object"],
        )
    )


def check_member_field_type(
    ctx: Context, record: _Record, path: JsonPath, key: str, expected: str
) -> None:
    value: Any = record.file.data
    for part in path:
        value = value[part]
    ctx.report(
        diag.error(
            codes.WRONG_TYPE,
            f"`{key}` of member {record.position} is {_json_kind(value)}, expected {expected}",
            record.file.value_span(path),
            f"expected {expected}",
            help=[f"give `{key}` {expected}"],
        )
    )


def check_bad_member_id(ctx: Context, span: Span, text: str, what: str) -> None:
    why = (
        f"it is {len(text)} characters long, more than {MAX_ID_LENGTH}"
        if len(text) > MAX_ID_LENGTH
        else "it must start with a letter or digit and hold only letters, digits, `_`, `.`, `-`"
    )
    ctx.report(
        diag.error(
            codes.BAD_MEMBER_ID,
            f"{json.dumps(text)} is not a valid member id: {why}",
            span,
            "invalid id",
            help=[
                f"change the {what} to one like `ana-lima` or `007`; ids name agents "
                "(`population/ID`) and their files"
            ],
        )
    )


def check_duplicate_member(
    ctx: Context, record: _Record, first: _Record, what: str, value: str, population: str
) -> None:
    path = (*record.persona_path, what)
    ctx.report(
        diag.error(
            codes.DUPLICATE_MEMBER,
            f"two members of population `{population}` have the {what} {json.dumps(value)}",
            record.file.value_span(path),
            f"{what} used again here",
            secondary=[
                Label(first.file.value_span((*first.persona_path, what)), "first used here")
            ],
            help=[
                "give each member its own id"
                if what == "id"
                else "give each member its own name (agents address each other by name; "
                "names are compared without case)"
            ],
        )
    )


def check_no_members(ctx: Context, path_node: ast.Str, population: str) -> None:
    ctx.report(
        diag.error(
            codes.NO_MEMBERS,
            f"population `{population}` has no members: `{path_node.value}` holds no person",
            path_node.span,
            "no `.agent.json` file or list item here",
            help=["point `from` at a folder of `.agent.json` files or a JSON list of people"],
        )
    )


def check_size_exceeds_members(
    ctx: Context, span: Span, size: int, available: int, path: str
) -> None:
    ctx.report(
        diag.error(
            codes.OUT_OF_RANGE,
            f"`size` is {size}, but `{path}` holds {available} people",
            span,
            f"at most {available}",
            help=[f"lower `size` to {available} or less, or remove it to take everyone"],
        )
    )
