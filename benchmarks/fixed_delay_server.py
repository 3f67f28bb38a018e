"""A local OpenAI-compatible server that answers every call after a fixed delay.

    with FixedDelayServer(delay=0.2, answer=survey_answer) as base_url:
        provider = OpenAICompatibleProvider(model="fixed-delay", base_url=base_url, api_key="x")

`answer(payload)` turns the request body (a chat completion with a `json_schema`
response format) into the JSON object the "model" returns; it runs in the
server's process, so it must be a module-level function. The server is asyncio
with HTTP/1.1 keep-alive, in a process of its own, so it costs the benchmarked
client little and the measurement reflects the client side.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

Answer = Callable[[dict[str, Any]], dict[str, Any]]


class FixedDelayServer:
    """The server in a child process for the duration of a `with` block; yields its base URL."""

    def __init__(self, delay: float, answer: Answer) -> None:
        self.delay = delay
        self.answer = answer
        self._process: multiprocessing.Process | None = None

    def __enter__(self) -> str:
        parent, child = multiprocessing.Pipe()
        self._process = multiprocessing.Process(
            target=_serve, args=(self.delay, self.answer, child), daemon=True
        )
        self._process.start()
        port = parent.recv()
        return f"http://127.0.0.1:{port}/v1"

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join()
            self._process = None


def schema_name(payload: dict[str, Any]) -> str:
    """The name of the JSON schema a request asks the answer to follow."""
    return str(payload["response_format"]["json_schema"]["name"])


def _serve(delay: float, answer: Answer, connection: Connection) -> None:
    def response(payload: dict[str, Any]) -> bytes:
        body = json.dumps(
            {
                "model": "fixed-delay",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": json.dumps(answer(payload))},
                    }
                ],
                "usage": {"prompt_tokens": 200, "completion_tokens": 40},
            }
        ).encode()
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                payload: dict[str, Any] = json.loads(await reader.readexactly(length))
                await asyncio.sleep(delay)
                writer.write(response(payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its keep-alive connection
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
        connection.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(serve())
