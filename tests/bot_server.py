"""A small stateful chatbot over HTTP, the `http_json` system under test of the tests.

    with BotServer() as bot:
        ... agent helpdesk external { url "{bot.url}"; protocol http_json ... }
        bot.sessions  # session id -> every message received, in order

`POST /chat` takes `{"session": "...", "message": "..."}` and answers
`{"answer": {"text": "..."}}`. The reply names how many messages the session has
received and quotes the first, so a reply proves that the conversation's history
reached the bot (it keeps it per session, as real chatbots do).

Faults, for the tests of a failing bot: `bot.faults` is a list of what the next
requests get instead of an answer, consumed one per request: `"500"` (HTTP 500),
`"not_json"` (200 with an HTML body), `"hang"` (no answer for `hang_s`, then an
answer too late) and `"close"` (the connection is closed without a response).
A failed request is not recorded in its session.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["BotServer"]


class BotServer:
    def __init__(self, hang_s: float = 3.0) -> None:
        self.sessions: dict[str, list[str]] = {}
        self.faults: list[str] = []
        self.served = 0
        self.hang_s = hang_s
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/chat"

    def __enter__(self) -> BotServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """The fault to act out ("" for none) and the answer to send."""
        with self._lock:
            fault = self.faults.pop(0) if self.faults else ""
            if fault in ("500", "not_json", "close"):
                return fault, None
            session = str(body.get("session", ""))
            history = self.sessions.setdefault(session, [])
            history.append(str(body.get("message", "")))
            self.served += 1
            text = f"Message {len(history)} of this session; you began with: {history[0][:60]}"
            return fault, {"answer": {"text": text}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        bot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                fault, answer = bot._answer(body)
                if fault == "close":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "hang":
                    time.sleep(bot.hang_s)
                if fault == "500":
                    self._send(500, b'{"error": "internal error"}')
                elif fault == "not_json":
                    self._send(200, b"<html>Service Unavailable</html>", "text/html")
                else:
                    self._send(200, json.dumps(answer).encode())

            def _send(self, status: int, data: bytes, kind: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the `hang` fault)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read the counters instead."""

        return Handler
