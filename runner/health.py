"""A watcher's health, for a service manager: ``GET /healthz`` on 127.0.0.1 and a status file.

:class:`HealthServer` serves :meth:`runner.watcher.Watcher.health` as JSON (503 when the last
pass is stale); :func:`write_status` writes the same JSON to a file, replaced atomically.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import RunnerError

if TYPE_CHECKING:
    from runner.watcher import Watcher


class HealthServer:
    """Serve ``GET /healthz`` on 127.0.0.1: :meth:`Watcher.health` as JSON, 503 when not ok."""

    def __init__(self, watcher: Watcher, port: int, interval: float = 2.0, host: str = "127.0.0.1") -> None:
        handler = type("HealthHandler", (_HealthHandler,), {"watcher": watcher, "interval": interval})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise RunnerError(f"cannot serve the health endpoint on {host}:{port}: {exc.strerror or exc}; "
                              "pick another --health-port") from exc
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/healthz"
        self._thread = threading.Thread(target=self._server.serve_forever, name="watch-health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _HealthHandler(BaseHTTPRequestHandler):
    watcher: Watcher
    interval: float

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.split("?", 1)[0] not in ("/healthz", "/"):
            code, body = 404, {"error": f"no {self.path}; try GET /healthz"}
        else:
            body = self.watcher.health(self.interval)
            code = 200 if body["ok"] else 503
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: probes every few seconds
        return


def write_status(path: str | Path, health: dict[str, Any]) -> None:
    """Write ``health`` as JSON to ``path`` atomically (a temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(health, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
