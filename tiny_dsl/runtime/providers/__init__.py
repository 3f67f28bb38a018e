"""Model providers and the factory that builds one from CLI options and the environment.

Configuration is read from an explicit ``env`` mapping (default ``os.environ``) so that
tests and the run manifest see exactly which variables were consulted; only variable
*names* ever leave this module (:func:`env_vars_used`), never their values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    InvalidOutput,
    Message,
    Provider,
    ProviderConfigError,
    ProviderError,
    validate_json,
)
from tiny_dsl.runtime.providers.embedded import EMBEDDED_MODEL, EmbeddedProvider
from tiny_dsl.runtime.providers.openai_compat import AzureOpenAIProvider, OpenAICompatibleProvider

__all__ = [
    "DEFAULT_AZURE_API_VERSION",
    "DEFAULT_LOCAL_MODEL",
    "DEFAULT_OPENAI_BASE_URL",
    "DEFAULT_OPENAI_MODEL",
    "EMBEDDED_MODEL",
    "PROVIDER_NAMES",
    "AzureOpenAIProvider",
    "ChatRequest",
    "ChatResponse",
    "EmbeddedProvider",
    "InvalidOutput",
    "Message",
    "OpenAICompatibleProvider",
    "Provider",
    "ProviderConfigError",
    "ProviderError",
    "env_vars_used",
    "make_provider",
    "validate_json",
]

PROVIDER_NAMES = ("embedded", "openai", "openai-compatible", "azure")
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
# llama.cpp's server answers with whatever model it loaded, whatever name is sent.
DEFAULT_LOCAL_MODEL = "local"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
_LOCAL_KEY = "sk-local"
_OFFLINE_HINT = "or run offline with --provider embedded"

# Variables each provider consults, in the order they are looked up.
_ENV_VARS: dict[str, tuple[str, ...]] = {
    "embedded": (),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "openai-compatible": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "azure": (
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_VERSION",
        "AZURE_OPENAI_DEPLOYMENT",
    ),
}
_BASE_URL_VARS = frozenset({"OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT"})


def make_provider(
    name: str | None,
    model: str | None,
    base_url: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> Provider:
    """Build the provider selected by ``--provider``/``--model``/``--base-url``.

    ``None`` selects the embedded model, so a scenario runs with no setup at all.  Missing
    settings raise :class:`ProviderConfigError` naming the variable to set.
    """
    selected = name or "embedded"
    if selected == "embedded":
        if model not in (None, EMBEDDED_MODEL):
            raise ProviderConfigError(
                f"the embedded provider only runs {EMBEDDED_MODEL}, not {model!r}; "
                "use --provider openai-compatible --base-url ... to serve other models"
            )
        if base_url is not None:
            raise ProviderConfigError(
                "--base-url has no effect with the embedded provider; "
                "did you mean --provider openai-compatible?"
            )
        return EmbeddedProvider()
    if selected == "openai":
        key = _get(env, "OPENAI_API_KEY")
        if key is None:
            raise ProviderConfigError(
                "provider 'openai' needs the OPENAI_API_KEY environment variable, which is not "
                f"set; export it, {_OFFLINE_HINT}"
            )
        return OpenAICompatibleProvider(
            name="openai",
            model=model or DEFAULT_OPENAI_MODEL,
            base_url=base_url or _get(env, "OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL,
            api_key=key,
        )
    if selected == "openai-compatible":
        url = base_url or _get(env, "OPENAI_BASE_URL")
        if url is None:
            raise ProviderConfigError(
                "provider 'openai-compatible' needs the server URL: pass --base-url or set "
                "OPENAI_BASE_URL (e.g. http://127.0.0.1:8080/v1 for llama.cpp's server), "
                f"{_OFFLINE_HINT}"
            )
        return OpenAICompatibleProvider(
            name="openai-compatible",
            model=model or DEFAULT_LOCAL_MODEL,
            base_url=url,
            api_key=_get(env, "OPENAI_API_KEY") or _LOCAL_KEY,
        )
    if selected == "azure":
        return _make_azure(model, base_url, env)
    raise ProviderConfigError(
        f"unknown provider {selected!r}; choose one of: {', '.join(PROVIDER_NAMES)}"
    )


def env_vars_used(
    name: str | None, base_url: str | None = None, env: Mapping[str, str] = os.environ
) -> tuple[str, ...]:
    """Names (never values) of the environment variables that configure this provider.

    Only variables that are set count, and a base-URL variable does not count when
    ``base_url`` was given explicitly, because it is then ignored.
    """
    names = _ENV_VARS.get(name or "embedded", ())
    return tuple(
        var
        for var in names
        if _get(env, var) is not None and not (base_url is not None and var in _BASE_URL_VARS)
    )


def _make_azure(model: str | None, base_url: str | None, env: Mapping[str, str]) -> Provider:
    key = _get(env, "AZURE_OPENAI_API_KEY")
    endpoint = base_url or _get(env, "AZURE_OPENAI_ENDPOINT")
    deployment = _get(env, "AZURE_OPENAI_DEPLOYMENT")
    if key is None or endpoint is None:
        missing = [
            var
            for var, value in (("AZURE_OPENAI_API_KEY", key), ("AZURE_OPENAI_ENDPOINT", endpoint))
            if value is None
        ]
        raise ProviderConfigError(
            f"provider 'azure' needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not set; export "
            f"{'it' if len(missing) == 1 else 'them'}, {_OFFLINE_HINT}"
        )
    resolved_model = model or deployment
    if resolved_model is None:
        raise ProviderConfigError(
            "provider 'azure' needs a model: pass --model or set AZURE_OPENAI_DEPLOYMENT"
        )
    return AzureOpenAIProvider(
        model=resolved_model,
        endpoint=endpoint,
        api_key=key,
        deployment=deployment or resolved_model,
        api_version=_get(env, "AZURE_OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION,
    )


def _get(env: Mapping[str, str], var: str) -> str | None:
    """An environment value, treating empty strings as unset (``export X=`` is common)."""
    return env.get(var) or None
