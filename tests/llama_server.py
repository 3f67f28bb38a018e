"""llama-cpp-python's OpenAI-compatible server on the embedded GGUF, on loopback.

    with embedded_model_server(n_ctx=2048, log_path=tmp / "server.log") as base_url:
        provider = OpenAICompatibleProvider(model="local", base_url=base_url, api_key="x")

Tests that need it skip, saying what to install, when the server's extra is absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tiny_dsl.runtime.providers.embedded import find_embedded_gguf

_SERVER_MODULES = (
    "llama_cpp.server",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "pydantic_settings",
    "starlette_context",
)
_READY_S = 60.0


def _missing_server_modules() -> list[str]:
    missing = []
    for name in _SERVER_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:  # the parent package itself is absent
            missing.append(name)
    return missing


@contextlib.contextmanager
def embedded_model_server(*, n_ctx: int, log_path: Path) -> Iterator[str]:
    """Start the server with a context of `n_ctx` tokens; yields its base URL."""
    missing = _missing_server_modules()
    if missing:
        pytest.skip(
            f"llama_cpp.server is unavailable (missing {', '.join(missing)}); "
            "pip install 'llama-cpp-python[server]'"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(find_embedded_gguf()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + _READY_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited early:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server not ready in {_READY_S:g} s:\n{log_path.read_text()[-2000:]}"
                )
            time.sleep(0.25)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
