"""Personas and fragments: TinyTroupe persona objects, built and merged.

An inline persona is written with TinyTroupe's persona fields and becomes the
`persona` object TinyTroupe expects (`interests`, `likes` and `dislikes` go
under `preferences`; a plain list of `behaviors` becomes `{"general": [...]}`,
the shape of TinyTroupe's own agents and fragments, so that fragments merge
into it). Unknown fields are kept, with a warning: TinyTroupe personas are
free-form, but an unknown field is usually a typo.
"""

from __future__ import annotations

import copy
from typing import Any

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context, Declared
from tiny_dsl.checks.loader import Loader
from tiny_dsl.checks.specs import LocatedSpec, Origin, merge_fragment
from tiny_dsl.checks.values import (
    Props,
    check_duplicate_property,
    check_missing_property,
    check_wrong_type,
    entry_key,
    read_int,
    read_items,
    read_string,
    read_string_list,
)
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

STRING_FIELDS = ("name", "gender", "nationality", "residence", "education", "style", "health")
LIST_FIELDS = ("beliefs", "skills", "other_facts", "long_term_goals")
PREFERENCE_FIELDS = ("interests", "likes", "dislikes")
OCCUPATION_FIELDS = ("title", "organization", "description")
PERSONALITY_FIELDS = ("traits", "big_five")
BIG_FIVE = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
PERSONA_FIELDS = (
    *STRING_FIELDS,
    "age",
    "occupation",
    "personality",
    *PREFERENCE_FIELDS,
    "preferences",
    *LIST_FIELDS,
    "behaviors",
    "relationships",
    "fragments",
)
MAX_AGE = 120
# Properties of a persona block that are not persona fields: what generates it, and
# the model settings of its calls.
AGENT_FIELDS = ("generate", "context", "model", "temperature")
MAX_TEMPERATURE = 2
# The JSON form of each usual field, as inline personas write them (and TinyTroupe's
# own agents have them): what the field should be, and the Python types that are.
AGENT_FILE_FORMS: dict[str, tuple[str, tuple[type, ...]]] = {
    **{key: ("a string", (str,)) for key in STRING_FIELDS},
    "age": ("a whole number", (int,)),
    "occupation": ("a string or an object", (str, dict)),
    "personality": ("an object", (dict,)),
    "preferences": ("an object", (dict,)),
    **{key: ("a list", (list,)) for key in (*LIST_FIELDS, "relationships")},
    "behaviors": ("an object or a list", (dict, list)),
}


def check_fragment(ctx: Context, loader: Loader, declared: Declared) -> None:
    """Build a fragment's spec (inline or from a `.fragment.json` file)."""
    node = declared.node
    name = declared.name
    errors = ctx.error_count
    if isinstance(node, ast.FragmentFile):
        loaded = loader.load_json_spec(declared.file, node.path, "Fragment")
        if loaded is None:
            return
        data, source_path = loaded
        spec = LocatedSpec(Origin(node.path.span, name), copy.deepcopy(data))
    elif isinstance(node, ast.FragmentInline):
        source_path = None
        spec = LocatedSpec(Origin(node.name.span, name))
        props = Props(ctx, node.body, f"fragment `{name}`", node.name.span, PERSONA_FIELDS)
        if "fragments" in props.entries:
            check_nested_fragments(ctx, props.entries["fragments"])
        _build_spec(ctx, props, spec)
    else:
        return
    if ctx.error_count == errors:
        ctx.fragments[name] = spec
        ctx.fragment_models[name] = m.Fragment(name, spec.data, source_path, node.span)


def check_persona(ctx: Context, loader: Loader, declared: Declared) -> None:
    """Build a persona's spec and merge its fragments into it."""
    node = declared.node
    name = declared.name
    errors = ctx.error_count
    if isinstance(node, ast.PersonaFile):
        loaded = loader.load_json_spec(declared.file, node.path, "TinyPerson")
        if loaded is not None:
            data, source_path = loaded
            check_agent_file_field_types(ctx, data, source_path, node.path)
            fragments_merged: tuple[str, ...] = ()
            if node.body is not None:
                overridden = apply_overrides(ctx, node, name, data)
                if overridden is None:
                    return
                data, fragments_merged = overridden
            ctx.personas[name] = m.Persona(name, data, fragments_merged, source_path, node.span)
        return
    if not isinstance(node, ast.PersonaInline):
        return
    spec = LocatedSpec(Origin(node.name.span, None))
    props = Props(
        ctx, node.body, f"persona `{name}`", node.name.span, (*PERSONA_FIELDS, *AGENT_FIELDS)
    )
    generate = _generate_description(ctx, props)
    generate_context = props.string("context")
    if generate is None and "context" in props.entries:
        check_context_without_generate(ctx, props.entries["context"], name)
    if "name" not in props.entries and "generate" not in props.entries:
        check_missing_property(ctx, "name", props.owner, node.name.span, '"Full Name"')
    llm = read_agent_model(ctx, props)
    _build_spec(ctx, props, spec)
    # A generated persona's fragments merge after generation; merging them into a copy
    # of the fields written still reports, here, every conflict with those fields.
    merged = spec
    if generate is not None:
        merged = LocatedSpec(spec.fallback, copy.deepcopy(spec.data), dict(spec.origins))
    fragments: list[str] = []
    listed = props.value("fragments")
    resolved, complete = resolve_fragments(ctx, listed)
    if not complete:
        ctx.missing_fragments.add(name)
    for ref, fragment in resolved:
        fragments.append(ref.parts[0])
        for problem in merge_fragment(
            merged, fragment, ref.parts[0], f"persona `{name}`", ref.span
        ):
            ctx.report(problem)
    if ctx.error_count == errors:
        ctx.personas[name] = m.Persona(
            name,
            spec.data,
            tuple(fragments),
            None,
            node.span,
            generate=generate,
            generate_context=generate_context or "",
            llm=llm,
        )


def _generate_description(ctx: Context, props: Props) -> str | None:
    """`generate "description"`: a non-empty text (None when absent or invalid)."""
    node = props.value("generate")
    if node is None:
        return None
    description = read_string(ctx, "generate", node)
    if description is not None and not description.strip():
        check_wrong_type(
            ctx, "generate", node, "a description of the person", '"A nurse in Lisbon, 40"'
        )
        return None
    return description


def read_agent_model(ctx: Context, props: Props) -> m.AgentModel | None:
    """`model "..."` and `temperature x` (0..2) of a persona or population block."""
    model_node = props.value("model")
    model = props.string("model")
    if model is not None and not model.strip():
        assert model_node is not None
        check_wrong_type(ctx, "model", model_node, "a model name", '"gpt-4o-mini"')
        model = None
    temperature = props.number("temperature", 0, MAX_TEMPERATURE)
    if model is None and temperature is None:
        return None
    where = props.entries["model" if model is not None else "temperature"]
    return m.AgentModel(model, temperature, where.span)


def check_context_without_generate(
    ctx: Context, entry: ast.Property | ast.SubBlock, persona: str
) -> None:
    """`context` is the generation's context: without `generate` nothing would read it."""
    ctx.report(
        diag.error(
            codes.CONTEXT_WITHOUT_GENERATE,
            f"persona `{persona}` has a `context` but no `generate`",
            entry.key.span,
            "only a generated persona has a context",
            help=[
                'add `generate "a description of the person"` to have the model write it, '
                "or move the text into a persona field such as `other_facts`"
            ],
        )
    )


def apply_overrides(
    ctx: Context, node: ast.PersonaFile, name: str, data: dict[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """A file persona with the fields of its `{ ... }` block written over the file's.

    A field written replaces the file's top-level field of that name whole (objects
    too: no deep merge); `interests`, `likes` and `dislikes`, which live under
    `preferences`, replace that entry of the file's `preferences`. The fragments
    listed then merge into the result with their conflicts located. Other fields
    that mention the old name are kept, as TinyTroupe's `new_agent_name` does.
    None when the block has errors.
    """
    assert node.body is not None
    errors = ctx.error_count
    spec = LocatedSpec(Origin(node.path.span, None))
    props = Props(ctx, node.body, f"persona `{name}`", node.name.span, PERSONA_FIELDS)
    written = LocatedSpec(Origin(node.name.span, None))
    _build_spec(ctx, props, written)
    spec.data = copy.deepcopy(data)
    for path in written.origins:
        if len(path) == 1:
            spec.data[path[0]] = written.data[path[0]]
        else:
            preferences = spec.data.get("preferences")
            if not isinstance(preferences, dict):
                preferences = spec.data["preferences"] = {}
            preferences[path[1]] = written.data[path[0]][path[1]]
    spec.origins.update(written.origins)
    resolved, complete = resolve_fragments(ctx, props.value("fragments"))
    if not complete:
        ctx.missing_fragments.add(name)
    fragments: list[str] = []
    for ref, fragment in resolved:
        fragments.append(ref.parts[0])
        for problem in merge_fragment(spec, fragment, ref.parts[0], f"persona `{name}`", ref.span):
            ctx.report(problem)
    if ctx.error_count != errors:
        return None
    return spec.data, tuple(fragments)


def check_agent_file_field_types(
    ctx: Context, persona: dict[str, Any], source_path: str, path_node: ast.Str
) -> None:
    """Usual persona fields of an agent file whose value has another form than TinyTroupe's.

    The file is used as is, so these are warnings (W110), shown at the `from` path.
    """
    for key, value in persona.items():
        form = AGENT_FILE_FORMS.get(key)
        # JSON true/false arrive as Python bools, which are ints: never a whole number here.
        if form is None or (isinstance(value, form[1]) and not isinstance(value, bool)):
            continue
        ctx.report(
            diag.warning(
                codes.AGENT_FILE_FIELD_TYPE,
                f"`{key}` in `{source_path}` is {_json_kind(value)}, where TinyTroupe "
                f"personas have {form[0]}",
                path_node.span,
                f"`{key}` is {_json_kind(value)} in this file",
                help=[f"give `{key}` {form[0]} in the file"],
            )
        )


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {str: "a string", int: "a number", float: "a number", list: "a list"}
    return kinds.get(type(value), "an object")


def resolve_fragments(
    ctx: Context, listed: ast.Value | ast.Block | None
) -> tuple[list[tuple[ast.Ref, LocatedSpec]], bool]:
    """The fragments a `fragments [...]` list names, in order, each once, and
    whether every fragment listed is among them.

    A fragment that is declared but has errors of its own resolves (no second
    error) but is left out of the result, so nothing is merged from it; nor is
    anything from one that is unknown or misnamed. Either way an error was
    reported, and what is built without the fragment is incomplete.
    """
    if listed is None:
        return [], True
    items = read_items(ctx, "fragments", listed, "[fragment_name, ...]")
    if items is None:
        return [], False
    result: list[tuple[ast.Ref, LocatedSpec]] = []
    complete = True
    seen: dict[str, ast.Ref] = {}
    for item in items:
        if not isinstance(item, ast.Ref) or len(item.parts) != 1:
            check_wrong_type(ctx, "fragments", item, "a fragment name", "[health_conscious]")
            complete = False
            continue
        name = item.parts[0]
        if name in seen:
            ctx.report(
                diag.error(
                    codes.DUPLICATE_NAME,
                    f"fragment `{name}` is listed twice",
                    item.span,
                    "listed again here",
                    secondary=[Label(seen[name].span, "first listed here")],
                    help=["remove one of them"],
                )
            )
            continue
        seen[name] = item
        if ctx.resolve(name, item.span, ("fragment",), "`fragments`") is None:
            complete = False
            continue
        fragment = ctx.fragments.get(name)
        if fragment is None:
            complete = False
        else:
            result.append((item, fragment))
    return result, complete


def check_nested_fragments(ctx: Context, entry: ast.Property | ast.SubBlock) -> None:
    """Fragments are flat: nesting them would make merge order (and cycles) opaque."""
    ctx.report(
        diag.error(
            codes.UNKNOWN_PROPERTY,
            "a fragment cannot include other fragments",
            entry.key.span,
            "not allowed in a fragment",
            help=["list all the fragments in the persona (or segment) that uses them"],
        )
    )


# ------------------------------------------------------------- building specs


def _build_spec(ctx: Context, props: Props, spec: LocatedSpec) -> None:
    """Fill `spec` from a persona or fragment body, in the order it was written."""
    for key, entry in props.entries.items():
        node: ast.Value | ast.Block = entry.value if isinstance(entry, ast.Property) else entry.body
        if key in STRING_FIELDS:
            _set(ctx, spec, (key,), read_string(ctx, key, node), node.span)
        elif key == "age":
            _set(ctx, spec, (key,), read_int(ctx, key, node, 0, MAX_AGE, "38"), node.span)
        elif key == "occupation":
            _set(ctx, spec, (key,), _occupation(ctx, node), node.span)
        elif key == "personality":
            _set(ctx, spec, (key,), _personality(ctx, node), node.span)
        elif key in PREFERENCE_FIELDS:
            _set(ctx, spec, ("preferences", key), read_string_list(ctx, key, node), node.span)
        elif key == "preferences":
            _preferences(ctx, node, spec)
        elif key in LIST_FIELDS:
            _set(ctx, spec, (key,), read_string_list(ctx, key, node), node.span)
        elif key == "behaviors":
            _set(ctx, spec, (key,), _behaviors(ctx, node), node.span)
        elif key == "relationships":
            _set(ctx, spec, (key,), _relationships(ctx, node), node.span)
    props.report_unknown(warning=True)
    for unusual in props.unknown:
        _set(ctx, spec, (entry_key(unusual),), to_json(unusual), unusual.span)


def _set(ctx: Context, spec: LocatedSpec, path: tuple[str, ...], value: Any, span: Span) -> None:
    """Set a field once; `interests` and `preferences { interests }` are the same field."""
    if value is None:
        return
    if path in spec.origins:
        check_duplicate_property(ctx, ".".join(path), span, spec.origins[path].span)
        return
    spec.set(path, value, span)


def _block_props(
    ctx: Context, node: ast.Value | ast.Block, key: str, known: tuple[str, ...], example: str
) -> Props | None:
    if not isinstance(node, ast.Block):
        check_wrong_type(ctx, key, node, "a block", example)
        return None
    return Props(ctx, node, f"`{key}`", node.span, known)


def _occupation(ctx: Context, node: ast.Value | ast.Block) -> str | dict[str, Any] | None:
    """`occupation "Nurse"`, or `occupation { title "..." organization "..." }`."""
    if isinstance(node, ast.Str):
        return node.value
    props = _block_props(ctx, node, "occupation", OCCUPATION_FIELDS, '{ title "Nurse" }')
    if props is None:
        return None
    result: dict[str, Any] = {}
    for key in props.entries:
        value = props.string(key)
        if value is not None:
            result[key] = value
    return _with_unknown(props, result)


def _personality(ctx: Context, node: ast.Value | ast.Block) -> dict[str, Any] | None:
    props = _block_props(ctx, node, "personality", PERSONALITY_FIELDS, '{ traits ["curious"] }')
    if props is None:
        return None
    result: dict[str, Any] = {}
    traits = props.value("traits")
    if traits is not None:
        listed = read_string_list(ctx, "traits", traits)
        if listed is not None:
            result["traits"] = listed
    big_five = props.value("big_five")
    if big_five is not None:
        inner = _block_props(ctx, big_five, "big_five", BIG_FIVE, '{ openness "High." }')
        if inner is not None:
            scores = {k: v for k in inner.entries if (v := inner.string(k)) is not None}
            result["big_five"] = _with_unknown(inner, scores)
    return _with_unknown(props, result)


def _preferences(ctx: Context, node: ast.Value | ast.Block, spec: LocatedSpec) -> None:
    props = _block_props(ctx, node, "preferences", PREFERENCE_FIELDS, '{ likes ["..."] }')
    if props is None:
        return
    for key in props.entries:
        value = props.value(key)
        if value is not None:
            _set(ctx, spec, ("preferences", key), read_string_list(ctx, key, value), value.span)
    props.report_unknown(warning=True)
    for entry in props.unknown:
        _set(ctx, spec, ("preferences", entry_key(entry)), to_json(entry), entry.span)


def _behaviors(ctx: Context, node: ast.Value | ast.Block) -> dict[str, Any] | None:
    """A list (`general` behaviors) or a block of lists and blocks, as TinyTroupe writes them."""
    if not isinstance(node, ast.Block):
        listed = read_string_list(ctx, "behaviors", node)
        return None if listed is None else {"general": listed}
    result: dict[str, Any] = {}
    props = Props(ctx, node, "`behaviors`", node.span, ())
    for entry in props.unknown:
        key = entry_key(entry)
        if isinstance(entry, ast.SubBlock):
            inner = _behaviors(ctx, entry.body)
            if inner is not None:
                result[key] = inner
        elif isinstance(entry, ast.Property):
            listed = read_string_list(ctx, key, entry.value)
            if listed is not None:
                result[key] = listed
        else:
            check_wrong_type(ctx, key, entry.body, "a list or a block", '["..."]')
    return result


def _relationships(ctx: Context, node: ast.Value | ast.Block) -> list[Any] | None:
    """A list of strings, or a block `NAME "description"` -> [{"name", "description"}]."""
    if not isinstance(node, ast.Block):
        return read_string_list(ctx, "relationships", node)
    result: list[Any] = []
    props = Props(ctx, node, "`relationships`", node.span, ())
    for entry in props.unknown:
        key = entry_key(entry)
        value: ast.Value | ast.Block = (
            entry.value if isinstance(entry, ast.Property) else entry.body
        )
        description = read_string(ctx, key, value)
        if description is not None:
            result.append({"name": key, "description": description})
    return result


def _with_unknown(props: Props, known: dict[str, Any]) -> dict[str, Any]:
    """Add a sub-block's unusual fields (kept as written) after warning about them."""
    props.report_unknown(warning=True)
    for entry in props.unknown:
        known[entry_key(entry)] = to_json(entry)
    return known


def to_json(node: ast.Value | ast.Block | ast.Entry) -> Any:
    """A value written in a free-form persona field, as the JSON TinyTroupe will read."""
    if isinstance(node, ast.Property):
        return to_json(node.value)
    if isinstance(node, ast.SubBlock):
        return to_json(node.body)
    if isinstance(node, ast.NamedBlock):
        return {node.name.name: to_json(node.body)}
    if isinstance(node, ast.Block):
        return {entry_key(entry): to_json(entry) for entry in node.entries}
    if isinstance(node, ast.Str | ast.Number):
        return node.value
    if isinstance(node, ast.ListValue | ast.Seq):
        return [to_json(item) for item in node.items]
    if isinstance(node, ast.Ref):
        return {"true": True, "false": False}.get(node.dotted, node.dotted)
    if isinstance(node, ast.Phrase):
        return " ".join(str(to_json(item)) for item in node.items)
    if isinstance(node, ast.Percent):
        return node.raw or f"{node.value}%"
    if isinstance(node, ast.Range):
        return f"{to_json(node.low)}..{to_json(node.high)}"
    if isinstance(node, ast.Money):
        return f"{node.amount.raw or node.amount.value} {node.currency}"
    return f"{node.amount.raw or node.amount.value} {node.unit}"
