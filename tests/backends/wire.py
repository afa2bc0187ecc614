"""A one-answer-at-a-time HTTP server, so the real SDK clients raise their real errors in unit tests.

    with Wire() as wire:
        wire.answer(503, {"error": "busy"})            # the next request gets this answer
        client = make_client(wire.url)                 # a boto3 / google / azure client at wire.url
        ...

Every request gets the oldest queued answer (the last one repeats), so a client's own retries see
the same fault again. ``wire.seen`` lists (method, path) of every request.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Wire:
    """A local HTTP server that answers each request with a queued (status, headers, body)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"wire": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Wire:
        """Queue an answer: ``body`` bytes as is, anything else as JSON."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        with self._lock:
            self.answers.append((status, hdrs, raw))
        return self

    def next_answer(self) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if not self.answers:
                return 500, {}, b"no answer queued"
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def __enter__(self) -> Wire:
        threading.Thread(target=self._server.serve_forever, name="wire", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wire: Wire

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.wire.seen.append((self.command, self.path))
        status, headers, body = self.wire.next_answer()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle
