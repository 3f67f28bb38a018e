"""JSON schemas for `extract` fields, and the Python re-validation of every answer.

The schema tells the model (and, on providers with constrained decoding, forces
it) what shape to answer in. It is not trusted: some providers only read the
schema as a hint, and a repaired answer may still bend the rules. So every value
is checked again here against its declared type, and a value that does not pass
is recorded as missing with the reason. Nothing is ever guessed or clamped into
range: a 12 on a 1..10 scale is missing, not 10.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from tiny_dsl.plan.model import FieldPlan

__all__ = [
    "LIST_ITEM_MAX_CHARS",
    "LIST_MAX_ITEMS",
    "TEXT_MAX_CHARS",
    "extraction_schema",
    "field_schema",
    "max_answer_tokens",
    "validate_answer",
    "validate_value",
]

# Bounds on free text. Small models under grammar-constrained decoding keep writing
# until a string's limit, so every string needs one; these fit a short phrase or two.
TEXT_MAX_CHARS = 300
LIST_MAX_ITEMS = 8
LIST_ITEM_MAX_CHARS = 120

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def field_schema(field: FieldPlan) -> dict[str, Any]:
    """The JSON schema of one field's value; `null` is always allowed.

    Null is how the model says the transcript does not tell. It is an `anyOf`
    branch rather than a `["integer", "null"]` type list so that range and enum
    constraints stay on a single-typed schema, which grammar-based decoders
    (llama.cpp) can enforce.
    """
    value: dict[str, Any]
    if field.kind in ("int", "float"):
        value = {"type": "integer" if field.kind == "int" else "number"}
        if field.low is not None:
            value["minimum"] = int(field.low) if field.kind == "int" else field.low
        if field.high is not None:
            value["maximum"] = int(field.high) if field.kind == "int" else field.high
    elif field.kind == "bool":
        value = {"type": "boolean"}
    elif field.kind == "enum":
        value = {"type": "string", "enum": list(field.members)}
    elif field.kind == "list":
        value = {
            "type": "array",
            "items": {"type": "string", "maxLength": LIST_ITEM_MAX_CHARS},
            "maxItems": LIST_MAX_ITEMS,
        }
    elif field.kind == "rank":
        # Every member exactly once: as many items as members, distinct, each a member.
        value = {
            "type": "array",
            "items": {"type": "string", "enum": list(field.members)},
            "minItems": len(field.members),
            "maxItems": len(field.members),
            "uniqueItems": True,
        }
    else:
        value = {"type": "string", "maxLength": TEXT_MAX_CHARS}
    schema: dict[str, Any] = {"anyOf": [value, {"type": "null"}]}
    if field.description:
        schema["description"] = field.description
    return schema


def extraction_schema(fields: list[FieldPlan]) -> dict[str, Any]:
    """One object with every field required (possibly null) and nothing else."""
    return {
        "type": "object",
        "properties": {field.name: field_schema(field) for field in fields},
        "required": [field.name for field in fields],
        "additionalProperties": False,
    }


def max_answer_tokens(fields: list[FieldPlan]) -> int:
    """A `max_tokens` that always leaves room for the longest schema-valid answer.

    A cut-off answer is invalid JSON, so the limit is the worst case (about two
    characters per token for the text a small model writes when it rambles up to a
    string's limit), not the typical one.
    """
    chars = 16
    for field in fields:
        chars += len(field.name) + 8
        if field.kind == "text":
            chars += TEXT_MAX_CHARS
        elif field.kind == "list":
            chars += LIST_MAX_ITEMS * (LIST_ITEM_MAX_CHARS + 4)
        elif field.kind == "enum":
            chars += max((len(m) for m in field.members), default=0) + 2
        elif field.kind == "rank":
            chars += sum(len(m) + 4 for m in field.members)
        else:
            chars += 24
    return chars // 2 + 32


def validate_answer(fields: list[FieldPlan], data: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Values per field (None when missing) and the reason for every missing one."""
    values: dict[str, Any] = {}
    missing: dict[str, str] = {}
    if not isinstance(data, dict):
        for field in fields:
            values[field.name] = None
            missing[field.name] = f"the answer is not a JSON object: {_short(data)}"
        return values, missing
    for field in fields:
        value: Any = None
        problem: str | None = "the answer does not contain this field"
        if field.name in data:
            value, problem = validate_value(field, data[field.name])
        values[field.name] = value
        if problem is not None:
            missing[field.name] = problem
    return values, missing


def validate_value(field: FieldPlan, value: Any) -> tuple[Any, str | None]:
    """`(value, None)` when `value` is valid for `field`, else `(None, reason)`.

    Conversions are exact only: `"7"` and `7.0` are the integer 7, `"true"` is
    true; `"7.5"` is not an integer, `1` is not a boolean, `"Positive"` is not
    the enum member `positive`.
    """
    if value is None:
        return None, "the model answered null: the transcript does not tell"
    try:
        return _checked(field, value), None
    except _Invalid as exc:
        return None, str(exc)


class _Invalid(ValueError):
    """A value that does not fit its field; the message is the recorded reason."""


def _checked(field: FieldPlan, value: Any) -> Any:
    if field.kind in ("int", "float"):
        number = _as_int(value) if field.kind == "int" else _as_float(value)
        if (field.low is not None and number < field.low) or (
            field.high is not None and number > field.high
        ):
            raise _Invalid(f"{number} is outside the declared range {_range(field)}")
        return number
    if field.kind == "bool":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise _Invalid(f"expected true or false, got {_short(value)}")
    if field.kind == "enum":
        if isinstance(value, str) and value in field.members:
            return value
        raise _Invalid(f"{_short(value)} is not one of {', '.join(field.members)}")
    if field.kind == "list":
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _Invalid(f"expected a list of strings, got {_short(value)}")
        return [item.strip() for item in value if item.strip()]
    if field.kind == "rank":
        return _ranking(field, value)
    if not isinstance(value, str):
        raise _Invalid(f"expected text, got {_short(value)}")
    if not value.strip():
        raise _Invalid("the model answered with empty text")
    return value.strip()


def _ranking(field: FieldPlan, value: Any) -> list[str]:
    """A full ranking: every member exactly once, best first (a partial one is missing)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid(f"expected a ranking (a list of members), got {_short(value)}")
    unknown = [item for item in value if item not in field.members]
    if unknown:
        raise _Invalid(f"{_short(unknown[0])} is not one of {', '.join(field.members)}")
    if sorted(value) != sorted(field.members):
        left_out = [member for member in field.members if member not in value]
        problem = f"leaves out {', '.join(left_out)}" if left_out else "repeats a member"
        raise _Invalid(f"not a ranking of all of {', '.join(field.members)}: it {problem}")
    return list(value)


def _as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    raise _Invalid(f"expected an integer, got {_short(value)}")


def _as_float(value: Any) -> float:
    exact_text = isinstance(value, str) and _FLOAT_TEXT.fullmatch(value) is not None
    if not exact_text and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise _Invalid(f"expected a number, got {_short(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _Invalid(f"expected a finite number, got {_short(value)}")
    return number


def _range(field: FieldPlan) -> str:
    def bound(number: float | None) -> str:
        if number is None:
            return ""
        return str(int(number)) if number.is_integer() else str(number)

    return f"{bound(field.low)}..{bound(field.high)}"


def _short(value: Any) -> str:
    rendered = json.dumps(value, ensure_ascii=False)
    return rendered if len(rendered) <= 60 else rendered[:57] + "..."
