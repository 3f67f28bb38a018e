"""Chat-completions providers for OpenAI, Azure OpenAI and OpenAI-compatible servers.

These talk HTTP through ``httpx`` directly rather than the ``openai`` SDK: the SDK has its
own retry loop and environment-variable lookups, and both would compete with the
client's retries, concurrency control and explicit configuration.

A provider makes exactly one logical attempt per ``complete`` call and classifies
failures (:class:`ProviderError` ``retryable``/``retry_after``, :class:`InvalidOutput`);
retrying is the client's job.  The one exception is structured output: servers that do
not understand ``response_format: json_schema`` are detected from their error response
and the provider permanently steps down to ``json_object`` and then to schema-in-the-
prompt, validating the answer itself in every mode.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlparse

import httpx

from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    ProviderError,
    decode_structured,
)
from tiny_dsl.runtime.providers.http_pools import PooledTransport

__all__ = ["AzureOpenAIProvider", "OpenAICompatibleProvider", "parse_retry_after"]

# 408/429/5xx mean "try again later"; every other error status will fail the same way again.
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MAX_ERROR_CHARS = 500

StructuredMode = Literal["json_schema", "json_object", "prompt"]
_NEXT_MODE: dict[StructuredMode, StructuredMode] = {
    "json_schema": "json_object",
    "json_object": "prompt",
}
TokenParam = Literal["max_tokens", "max_completion_tokens"]


class OpenAICompatibleProvider:
    """POSTs ``{base_url}/chat/completions`` with a bearer key.

    ``name`` is ``"openai"`` for api.openai.com and ``"openai-compatible"`` for anything
    else (llama.cpp's server, vLLM, Ollama, ...).  OpenAI's own API gets
    ``max_completion_tokens`` because its reasoning models reject ``max_tokens``; other
    servers get ``max_tokens``, which older llama.cpp builds require.
    """

    supports_json_schema: bool

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: str,
        name: str = "openai-compatible",
        token_param: TokenParam | None = None,
        timeout_s: float = 120.0,
        max_connections: int = 256,
    ) -> None:
        self.name = name
        self.model = model
        self.supports_json_schema = True
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._mode: StructuredMode = "json_schema"
        if token_param is None:
            is_openai = urlparse(self._base_url).hostname == "api.openai.com"
            token_param = "max_completion_tokens" if is_openai else "max_tokens"
        self._token_param: TokenParam = token_param
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=PooledTransport(self._base_url, max_connections),
        )

    @property
    def structured_mode(self) -> StructuredMode:
        """How structured output is currently requested (steps down on incompatible servers)."""
        return self._mode

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one chat completion and return the parsed (and, if asked, validated) answer."""
        mode = self._mode
        while True:
            started = time.perf_counter()
            try:
                body = await self._post(self._payload(request, mode))
            except ProviderError as exc:
                if request.json_schema is not None and _rejects_response_format(exc, mode):
                    mode = self._step_down(mode)
                    continue
                raise
            return self._parse(body, request, time.perf_counter() - started)

    async def aclose(self) -> None:
        """Close pooled HTTP connections."""
        await self._http.aclose()

    @property
    def cache_identity(self) -> str:
        """What the LLM cache keys answers by: a local server's URL matters.

        Servers such as llama.cpp answer under whatever model name they are sent,
        so two different local servers called with the same `--model` must not
        share cached answers.
        """
        if self.name == "openai-compatible":
            return f"{self.name}@{self._base_url}"
        return self.name

    def _url(self) -> str:
        return f"{self._base_url}/chat/completions"

    def _params(self) -> dict[str, str]:
        return {}

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def _step_down(self, failed: StructuredMode) -> StructuredMode:
        """Remember that the server rejected ``failed`` so later calls skip it."""
        following = _NEXT_MODE[failed]
        if self._mode == failed:
            self._mode = following
            self.supports_json_schema = False
        return following

    def _payload(self, request: ChatRequest, mode: StructuredMode) -> dict[str, Any]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        payload: dict[str, Any] = {
            "model": request.model or self.model,
            "temperature": request.temperature,
            self._token_param: request.max_tokens,
            "seed": request.seed,
        }
        if request.frequency_penalty:
            payload["frequency_penalty"] = request.frequency_penalty
        schema = request.json_schema
        if schema is not None and mode == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(request.schema_name),
                    "schema": schema,
                    "strict": False,
                },
            }
        elif schema is not None:
            messages = _with_schema_instructions(messages, schema)
            if mode == "json_object":
                # "schema" is llama-cpp-python's extension for grammar-constrained JSON;
                # a server that rejects the extra key steps down to prompt-only mode.
                payload["response_format"] = {"type": "json_object", "schema": schema}
        payload["messages"] = messages
        return payload

    async def _post(self, payload: dict[str, Any]) -> Any:
        try:
            response = await self._http.post(
                self._url(), json=payload, headers=self._headers(), params=self._params()
            )
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"{self.name}: request to {self._base_url} timed out ({type(exc).__name__})",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderError(
                f"{self.name}: cannot reach {self._base_url}: {self._redact(str(exc))}",
                retryable=True,
            ) from exc
        if response.status_code >= 400:
            status = response.status_code
            raise ProviderError(
                f"{self.name}: HTTP {status} from {self._base_url}: "
                f"{self._redact(_server_message(response))}",
                retryable=status in _RETRYABLE_STATUS,
                status=status,
                retry_after=parse_retry_after(response.headers),
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderError(
                f"{self.name}: HTTP {response.status_code} response is not JSON",
                retryable=True,
                status=response.status_code,
            ) from exc

    def _parse(self, body: Any, request: ChatRequest, latency_s: float) -> ChatResponse:
        try:
            message = body["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError(
                f"{self.name}: malformed response without choices[0].message", retryable=True
            ) from exc
        refusal = message.get("refusal")
        if refusal:
            raise ProviderError(f"{self.name}: the model refused: {self._redact(str(refusal))}")
        text = message.get("content") or ""
        usage = body.get("usage") or {}
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
        data = None
        if request.json_schema is not None:
            data = decode_structured(
                text, request.json_schema, input_tokens=input_tokens, output_tokens=output_tokens
            )
        return ChatResponse(
            text=text,
            data=data,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            provider=self.name,
            model=str(body.get("model") or self.model),
            latency_s=latency_s,
        )

    def _redact(self, message: str) -> str:
        """Servers sometimes echo credentials in error text; never pass them on."""
        if self._api_key:
            message = message.replace(self._api_key, "***")
        return message


class AzureOpenAIProvider(OpenAICompatibleProvider):
    """Azure OpenAI: deployment-scoped URL, ``api-version`` query parameter, ``api-key`` header.

    ``model`` names the model for the cache key and manifest; ``deployment`` (default:
    the model name) is what Azure routes on.
    """

    def __init__(
        self,
        *,
        model: str,
        endpoint: str,
        api_key: str,
        deployment: str | None = None,
        api_version: str = "2024-10-21",
        timeout_s: float = 120.0,
        max_connections: int = 256,
    ) -> None:
        super().__init__(
            model=model,
            base_url=endpoint,
            api_key=api_key,
            name="azure",
            token_param="max_tokens",
            timeout_s=timeout_s,
            max_connections=max_connections,
        )
        self._deployment = deployment or model
        self._api_version = api_version

    def _url(self) -> str:
        return f"{self._base_url}/openai/deployments/{self._deployment}/chat/completions"

    def _params(self) -> dict[str, str]:
        return {"api-version": self._api_version}

    def _headers(self) -> dict[str, str]:
        return {"api-key": self._api_key}


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be a number of seconds or an HTTP date; unparseable values are
    ignored (the client then falls back to its own backoff).
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _server_message(response: httpx.Response) -> str:
    """The human-readable part of an error body ({"error": {"message": ...}} and variants)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:_MAX_ERROR_CHARS] or response.reason_phrase
    message: Any = body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or error
        else:
            message = error
    return str(message)[:_MAX_ERROR_CHARS]


def _rejects_response_format(exc: ProviderError, mode: StructuredMode) -> bool:
    """Whether the server refused the structured-output mode itself.

    OpenAI-style servers answer 400 (422 for FastAPI validation), but llama-cpp-python's
    server reports its request-validation failure as HTTP 500, so a 500 naming
    ``response_format`` counts too; overload 5xx errors never mention it.
    """
    text = str(exc).lower()
    return (
        exc.status in (400, 422, 500)
        and mode != "prompt"
        and ("response_format" in text or "json_schema" in text)
    )


def _schema_name(name: str) -> str:
    # OpenAI requires ^[a-zA-Z0-9_-]{1,64}$ for json_schema.name.
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "response"


def _with_schema_instructions(
    messages: list[dict[str, str]], schema: dict[str, Any]
) -> list[dict[str, str]]:
    """Ask for schema-conforming JSON in the system message when the server cannot enforce it."""
    instructions = (
        "Reply with a single JSON value and nothing else (no prose, no code fences). "
        "It must conform to this JSON Schema:\n"
        + json.dumps(schema, ensure_ascii=False, sort_keys=True)
    )
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": messages[0]["content"] + "\n\n" + instructions}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]
