"""Provider-neutral request/response types, errors and JSON-output checking.

Everything the engine knows about a model call goes through these types, so the cache,
the client and every provider agree on one shape.  Requests carry no credentials: keys
live only inside provider objects, which is what lets requests be cached verbatim.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "InvalidOutput",
    "Message",
    "Provider",
    "ProviderConfigError",
    "ProviderError",
    "decode_structured",
    "validate_json",
]


@dataclass(frozen=True)
class Message:
    """One chat message; ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """Everything that determines a model answer, and nothing secret.

    ``replicate`` only distinguishes intentional repetitions of an identical call in the
    cache key (it is not sent to the model); ``purpose`` is a label for progress display
    and is deliberately not part of the cache key.
    """

    messages: tuple[Message, ...]
    temperature: float
    max_tokens: int
    json_schema: dict[str, Any] | None = None
    schema_name: str = "response"
    seed: int = 0
    replicate: int = 0
    purpose: str = ""
    # The model this call is for, when an agent has its own (`model "..."` in its
    # persona or population); None: the provider's configured model.
    model: str | None = None
    # The conversation a call to an external agent continues, for a bot that keeps
    # each session's history itself (`http_json`); "" for model calls.
    session: str = ""
    # OpenAI's frequency penalty: a token is the less likely the more often it is
    # already in the answer (0: decoding as the provider does by default).
    frequency_penalty: float = 0.0
    # Texts the answer should not copy runs of tokens from (a built-in turn's own prompt):
    # the embedded provider blocks such runs while decoding; others cannot, and ignore it.
    avoid_copying: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatResponse:
    """A model answer.  ``data`` holds the parsed, schema-valid JSON for structured calls."""

    text: str
    data: Any | None
    input_tokens: int
    output_tokens: int
    provider: str
    model: str
    cached: bool = False
    latency_s: float = 0.0


class Provider(Protocol):
    """What the client needs from a model backend.

    ``name`` and ``model`` identify the configured backend (they enter the cache key);
    the ``provider``/``model`` fields of a response say who actually answered, which can
    differ (e.g. an Azure deployment reports its underlying model).
    ``supports_json_schema`` is true when the backend enforces the schema natively
    rather than only being asked to follow it in the prompt.  A provider that can only
    work on a few calls at a time may also define ``max_parallel_calls: int``; the client
    then never has more calls in flight.  A provider whose model has a context window
    small enough to matter may define ``async answer_room(messages) -> int``: how many
    tokens that window leaves for the answer after ``messages``, so callers can ask for
    a shorter answer rather than be refused.
    """

    name: str
    model: str
    supports_json_schema: bool

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer one request; raise :class:`ProviderError` (or a subclass) on failure."""
        ...

    async def aclose(self) -> None:
        """Release network connections or other resources held by the provider."""
        ...


class ProviderError(Exception):
    """A failed model call.

    ``retryable`` tells the client whether sending the same request again can succeed
    (rate limits, overloaded servers, timeouts); ``retry_after`` is the server's own
    hint in seconds when it gave one.  Messages never contain API keys.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class ProviderConfigError(ProviderError):
    """The provider cannot be constructed from the given settings (missing key, bad name)."""


class InvalidOutput(ProviderError):
    """The model answered, but not with JSON matching the requested schema.

    Sending the identical request again rarely helps, so this is not ``retryable``;
    instead the client re-asks with the validation errors quoted (bounded repair).
    The token counts are kept because the failed answer still cost money.
    """

    def __init__(
        self,
        message: str,
        *,
        text: str,
        errors: list[str],
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        super().__init__(message, retryable=False)
        self.text = text
        self.errors = errors
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


def decode_structured(
    text: str, schema: dict[str, Any], *, input_tokens: int, output_tokens: int
) -> Any:
    """Parse a model's JSON answer and check it against ``schema``.

    Models wrapped by chat templates often fence JSON in Markdown (```json ... ```), so
    one surrounding fence is stripped.  Raw control characters inside strings are
    accepted (``strict=False``) because llama-cpp-python's schema grammars allow them and
    their meaning is unambiguous.  Anything else that is not valid JSON, or JSON that
    violates the schema, raises :class:`InvalidOutput` for the repair loop.
    """
    body = _strip_fence(text)
    try:
        data = json.loads(body, strict=False)
    except json.JSONDecodeError as exc:
        errors = [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
    else:
        errors = validate_json(data, schema)
        if not errors:
            return data
    raise InvalidOutput(
        "model output does not match the JSON schema: " + "; ".join(errors[:5]),
        text=text,
        errors=errors,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def _strip_fence(text: str) -> str:
    body = text.strip()
    if body.startswith("```") and body.endswith("```") and len(body) >= 6:
        body = body[3:-3]
        first_line, _, rest = body.partition("\n")
        # The opening fence may carry a language tag ("```json").
        body = rest if first_line.strip().isalpha() or not first_line.strip() else body
    return body.strip()


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
}


def validate_json(data: Any, schema: dict[str, Any]) -> list[str]:
    """Return human-readable violations of ``schema`` by ``data`` (empty when valid).

    Covers exactly the JSON Schema subset the DSL emits: ``type`` (single or list),
    ``properties``, ``required``, ``additionalProperties`` (false or a schema), ``items``,
    ``enum``, ``const``, ``minimum``/``maximum``, ``minLength``/``maxLength``,
    ``minItems``/``maxItems``, ``uniqueItems`` and ``anyOf``.  The errors are phrased for
    the model to read in a repair prompt, each prefixed with a JSON path like
    ``$.actions[0].type``.
    """
    errors: list[str] = []
    _check(data, schema, "$", errors)
    return errors


def _type_matches(data: Any, type_name: str) -> bool:
    if type_name == "integer":
        if isinstance(data, bool):
            return False
        return isinstance(data, int) or (isinstance(data, float) and data.is_integer())
    if type_name == "number":
        if isinstance(data, bool) or not isinstance(data, int | float):
            return False
        return math.isfinite(data)
    allowed = _JSON_TYPES.get(type_name)
    if allowed is None:
        raise ValueError(f"unsupported JSON Schema type {type_name!r}")
    return isinstance(data, allowed)


def _json_equal(a: Any, b: Any) -> bool:
    # In Python True == 1, but JSON keeps booleans and numbers apart.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _check(data: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if "anyOf" in schema:
        branches: list[dict[str, Any]] = schema["anyOf"]
        if not any(not validate_json(data, branch) for branch in branches):
            errors.append(f"{path}: {_short(data)} matches none of the allowed alternatives")
            return

    declared = schema.get("type")
    if declared is not None:
        names = [declared] if isinstance(declared, str) else list(declared)
        if not any(_type_matches(data, name) for name in names):
            errors.append(f"{path}: expected {' or '.join(names)}, got {_short(data)}")
            return

    if "enum" in schema and not any(_json_equal(data, v) for v in schema["enum"]):
        errors.append(f"{path}: {_short(data)} is not one of {json.dumps(schema['enum'])}")
    if "const" in schema and not _json_equal(data, schema["const"]):
        errors.append(f"{path}: must be {json.dumps(schema['const'])}")

    if isinstance(data, int | float) and not isinstance(data, bool):
        if "minimum" in schema and data < schema["minimum"]:
            errors.append(f"{path}: {data} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and data > schema["maximum"]:
            errors.append(f"{path}: {data} is greater than the maximum {schema['maximum']}")
    elif isinstance(data, str):
        if "minLength" in schema and len(data) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(data) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    elif isinstance(data, list):
        if "minItems" in schema and len(data) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(data) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if schema.get("uniqueItems"):
            repeated = sorted({_short(item) for item in data if data.count(item) > 1})
            if repeated:
                errors.append(f"{path}: items must be distinct; repeated: {', '.join(repeated)}")
        if "items" in schema:
            for index, item in enumerate(data):
                _check(item, schema["items"], f"{path}[{index}]", errors)
    elif isinstance(data, dict):
        _check_object(data, schema, path, errors)


def _check_object(
    data: dict[str, Any], schema: dict[str, Any], path: str, errors: list[str]
) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in data:
            errors.append(f"{path}: missing required property {name!r}")
    extra = schema.get("additionalProperties", True)
    for name, value in data.items():
        child = f"{path}.{name}"
        if name in properties:
            _check(value, properties[name], child, errors)
        elif extra is False:
            errors.append(f"{path}: unexpected property {name!r}")
        elif isinstance(extra, dict):
            _check(value, extra, child, errors)


def _short(data: Any) -> str:
    rendered = json.dumps(data, ensure_ascii=False)
    return rendered if len(rendered) <= 60 else rendered[:57] + "..."
