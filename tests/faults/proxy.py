"""A small threaded reverse proxy that forwards to an emulator and injects faults by a seeded schedule.

    with FaultProxy("http://127.0.0.1:9000", seed=7, rate=0.3) as proxy:
        env = servers.env_for("s3", proxy.url)      # the SDK talks to the proxy
        ...
        proxy.injected                              # Counter: fault kind -> how many

Per request, the schedule (``random.Random(seed)``) picks "pass" or one fault:

- ``500``, ``502``, ``503``: an error answer, the request never reaches the emulator;
- ``429``: too many requests (with ``Retry-After: 0``);
- ``slowdown``: S3's ``503 SlowDown`` XML;
- ``reset``: the connection is closed without an answer (an RST, SO_LINGER 0);
- ``truncated``: the request is forwarded and done, but the answer carries its full
  ``Content-Length`` and only half the body, then the connection closes;
- ``late-500``: the request is forwarded and done, and the client gets a 500 (its retry must
  be idempotent).

At most ``max_in_row`` faults come in a row, so a client retrying a few times always gets
through; ``fault_match`` (method, path) limits the faults to some requests, and
``answer_kept`` (method, path) names requests whose answer must not be lost after they were done
(``late-500`` and ``truncated`` become a ``503`` before the emulator there). ``delay`` (seconds,
with a ``delay_match`` predicate on method and path, and ``delay_min_bytes``: only requests whose
body is at least that long, such as a checkpoint upload on any store) holds the matching requests
before they are forwarded; ``held`` is set whenever one is being held. ``on_request`` sees every
request first.
Host headers are forwarded unchanged, so URLs the emulator builds (resumable upload sessions)
point back at the proxy. No TLS.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

FAULTS = ("500", "502", "503", "429", "slowdown", "reset", "truncated", "late-500")
#: Faults that lose the answer of a request the emulator carried out.
LOST_ANSWER = ("truncated", "late-500")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "content-length", "expect"}
_SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message><RequestId>fault</RequestId></Error>")


class FaultProxy:
    """Forward HTTP to ``upstream``; inject faults at ``rate`` per request."""

    def __init__(self, upstream: str, seed: int = 0, rate: float = 0.0, faults: tuple[str, ...] = FAULTS,
                 max_in_row: int = 2, delay: float = 0.0,
                 delay_match: Callable[[str, str], bool] | None = None,
                 on_request: Callable[[str, str], None] | None = None,
                 fault_match: Callable[[str, str], bool] | None = None, delay_min_bytes: int = 0,
                 answer_kept: Callable[[str, str], bool] | None = None) -> None:
        parsed = urlparse(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.rate, self.faults, self.max_in_row = rate, faults, max_in_row
        self.delay, self.delay_match, self.on_request = delay, delay_match, on_request
        self.fault_match = fault_match
        self.delay_min_bytes = delay_min_bytes
        self.answer_kept = answer_kept
        self.held = threading.Event()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._rng = random.Random(seed)
        self._in_row = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def set(self, rate: float | None = None, delay: float | None = None) -> None:
        """Change the fault rate or the delay while it runs."""
        with self._lock:
            if rate is not None:
                self.rate = rate
            if delay is not None:
                self.delay = delay

    def choose(self, method: str = "GET", path: str = "/") -> str:
        """Return the next request's fate: "pass" or a fault kind."""
        with self._lock:
            self.requests += 1
            if self.fault_match is not None and not self.fault_match(method, path):
                return "pass"
            if self._in_row < self.max_in_row and self._rng.random() < self.rate:
                self._in_row += 1
                fault = self._rng.choice(self.faults)
                if fault in LOST_ANSWER and self.answer_kept is not None and self.answer_kept(method, path):
                    fault = "503"
                self.injected[fault] += 1
                return fault
            self._in_row = 0
            return "pass"

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.injected.items())) or "none"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        if proxy.on_request is not None:
            proxy.on_request(self.command, self.path)
        fault = proxy.choose(self.command, self.path)
        if fault == "reset":
            self._reset()
            return
        if fault in ("500", "502", "503", "429", "slowdown"):
            self._error(fault)
            return
        if proxy.delay and (proxy.delay_match is None or proxy.delay_match(self.command, self.path)) \
                and len(body) >= proxy.delay_min_bytes:
            proxy.held.set()
            time.sleep(proxy.delay)
        try:
            status, reason, headers, payload = self._forward(body)
        except OSError:
            self._error("502")
            return
        if fault == "late-500":
            self._error("500")
            return
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            length = dict((k.lower(), v) for k, v in headers).get("content-length")
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(payload)))
        if fault == "truncated" and len(payload) >= 2:
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        proxy = self.server.proxy
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                         headers=headers)
            response = conn.getresponse()
            payload = response.read()
            return response.status, response.reason, list(response.getheaders()), payload
        finally:
            conn.close()

    def _error(self, fault: str) -> None:
        status = 503 if fault == "slowdown" else int(fault)
        body = _SLOWDOWN if fault == "slowdown" else f"injected fault: HTTP {status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml" if fault == "slowdown" else "text/plain")
        if status in (429, 503):
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
