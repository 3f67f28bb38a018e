"""Systems under test: the HTTP side of `agent NAME external { ... }`.

An external agent answers like a model, so it is a `Provider` and its calls go
through an `LLMClient` of its own: the same cache (a re-run and `--replay` need no
bot), the same retries with backoff, the per-attempt timeout (the agent's
`timeout`), and the rule that a reply is recorded before anyone acts on it.

A request's `messages` are the conversation as the bot sees it: the persona's
lines are `user` messages, the bot's own `assistant` ones. `openai_chat` posts
them to the chat-completions URL and reads `choices[0].message.content`;
`http_json` posts the agent's `request` template with `{message}` (the latest
user message), `{session}` (the conversation's id) and `{turn}` filled in, and
reads the reply at the dotted path `reply`.

`{env.NAME}` in the url, the headers and the request is read from the
environment when a call is sent, never earlier, so a secret is in no request
the cache records, no plan and no message: errors name the url as written, and
any value read from the environment is masked in text quoted from the bot.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx

from tiny_dsl.plan.model import ExternalAgentPlan
from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    ProviderConfigError,
    ProviderError,
)

__all__ = ["ENV_PLACEHOLDER", "ExternalAgentProvider", "fill_request", "reply_at"]

# 408/429/5xx: the bot may answer if asked again; any other error status will not.
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_QUOTED_CHARS = 300
ENV_PLACEHOLDER = re.compile(r"\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")
_REQUEST_PLACEHOLDER = re.compile(r"\{(session|message|turn)\}")


class ExternalAgentProvider:
    """One external agent, reached as its `protocol` says (see the module docstring)."""

    supports_json_schema = False

    def __init__(self, agent: ExternalAgentPlan, environ: Mapping[str, str] | None = None):
        self.agent = agent
        self.name = f"external:{agent.name}"
        self.model = agent.model or agent.name
        self._environ = os.environ if environ is None else environ
        self._secrets: list[str] = []
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(agent.timeout_s, connect=min(agent.timeout_s, 10.0))
        )

    @property
    def cache_identity(self) -> str:
        """Replies are keyed by the agent, its protocol and its url as written (with
        `{env.NAME}` unfilled): another bot, or the same one elsewhere, answers anew."""
        return f"{self.name}:{self.agent.protocol}@{self.agent.url}"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        url = self._fill_env(self.agent.url, "its url")
        headers = {
            name: self._fill_env(value, f"its header `{name}`")
            for name, value in self.agent.headers.items()
        }
        if self.agent.protocol == "openai_chat":
            payload: Any = {
                "model": self.model,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            }
        else:
            template = self._fill_env(self.agent.request or "", "its request")
            payload = json.loads(fill_request(template, request))
        started = time.perf_counter()
        body = await self._post(url, payload, headers)
        text = self._reply(body)
        usage = body.get("usage") if isinstance(body, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return ChatResponse(
            text=text,
            data=None,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            provider=self.name,
            model=self.model,
            latency_s=time.perf_counter() - started,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- one attempt -----------------------------------------------------------------

    def _fill_env(self, text: str, where: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            found = self._environ.get(name)
            if found is None:
                raise ProviderConfigError(
                    f"external agent `{self.agent.name}` needs the environment variable "
                    f"{name} ({where} uses `{{env.{name}}}`); set it and run again"
                )
            if found and found not in self._secrets:
                self._secrets.append(found)
            return found

        return ENV_PLACEHOLDER.sub(value, text)

    async def _post(self, url: str, payload: Any, headers: Mapping[str, str]) -> Any:
        where = f"external agent `{self.agent.name}` at {self.agent.url}"
        try:
            response = await self._http.post(url, json=payload, headers=dict(headers))
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"{where}: no reply within {self.agent.timeout_s:g} s ({type(exc).__name__})",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderError(
                f"{where}: connection failed: {self._mask(str(exc) or type(exc).__name__)}",
                retryable=True,
            ) from exc
        status = response.status_code
        if status >= 400:
            raise ProviderError(
                f"{where}: HTTP {status}: {self._mask(response.text[:_QUOTED_CHARS])}",
                retryable=status in _RETRYABLE_STATUS,
                status=status,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderError(
                f"{where}: HTTP {status} reply is not JSON: "
                f"{self._mask(response.text[:_QUOTED_CHARS])!r}",
                retryable=True,
                status=status,
            ) from exc

    def _reply(self, body: Any) -> str:
        where = f"external agent `{self.agent.name}` at {self.agent.url}"
        path = "choices.0.message.content" if self.agent.protocol == "openai_chat" else None
        found = reply_at(body, path or self.agent.reply or "reply")
        if not isinstance(found, str):
            shown = self._mask(json.dumps(body, ensure_ascii=False)[:_QUOTED_CHARS])
            raise ProviderError(
                f"{where}: the reply has no text at `{path or self.agent.reply}`: {shown}",
                retryable=True,
            )
        return found

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def fill_request(template: str, request: ChatRequest) -> str:
    """An `http_json` request: the template with `{message}` (the latest user message),
    `{session}` and `{turn}` (the number of user messages) filled in, JSON-escaped so
    that they may stand inside a JSON string."""
    users = [m for m in request.messages if m.role == "user"]
    values = {
        "message": users[-1].content if users else "",
        "session": request.session,
        "turn": str(len(users)),
    }
    return _REQUEST_PLACEHOLDER.sub(
        lambda match: json.dumps(values[match.group(1)], ensure_ascii=False)[1:-1], template
    )


def reply_at(body: Any, path: str) -> Any:
    """The value at a dotted path (`answer.text`, `choices.0.text`); None if absent."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value
