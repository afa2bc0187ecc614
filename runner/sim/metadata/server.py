"""The simulator's HTTP server: namespaces, faults, the control API; each cloud's answers elsewhere."""

from __future__ import annotations

import json
import logging
import math
import select
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from runner.sim.metadata import aws, azure, gcp
from runner.sim.metadata.state import DEFAULT_NOTICE, Fault, Namespace, check_cloud

log = logging.getLogger("runner.sim")

HANG_SECONDS = 55.0  # the longest a GCP hanging GET is held (the real server gives up after about a minute)
HOLD_LIMIT = 120.0  # the longest an unanswered token PUT (hop limit 1) keeps its connection
CONTROLS = ("preempt", "clear", "configure", "rebalance", "fault", "state")


class MetadataSimulator:
    """Serve simulated AWS, GCP and Azure metadata endpoints on one port, one state per namespace."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, cloud: str = "aws") -> None:
        self.host = host
        self.port = port
        self.default_cloud = check_cloud(cloud)
        self.hang_seconds = HANG_SECONDS
        self._cond = threading.Condition()
        self._spaces: dict[str, Namespace] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def url(self) -> str:
        """Return ``http://host:port`` with the bound port (127.0.0.1 for a wildcard host)."""
        if self._server is None:
            raise RuntimeError("the metadata simulator is not started: call start() first")
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def start(self) -> MetadataSimulator:
        """Bind the port (the same one again after a ``stop()``) and serve from a daemon thread."""
        if self._server is not None:
            return self
        self._closing = False
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sim = self
        self.port = int(self._server.server_address[1])  # a restart binds the same port: an outage, then back
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="metadata-simulator", daemon=True)
        self._thread.start()
        log.debug("metadata simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving (connections are refused until ``start()``); hanging requests end at once."""
        if self._server is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> MetadataSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what the namespaces know ---------------------------------------------------------

    def configure(self, namespace: str = "", cloud: str | None = None, **options: Any) -> None:
        """Make a namespace imitate ``cloud`` (unchanged when None) and set its knobs (``Namespace.configure``)."""
        with self._cond:
            space = self._space(namespace)
            if cloud is not None:
                space.cloud = check_cloud(cloud)
            space.configure(**options)
            self._cond.notify_all()

    def preempt(self, cloud: str, notice_seconds: float, namespace: str = "", **how: Any) -> None:
        """Announce, as ``cloud`` would, that the machine goes away in ``notice_seconds``.

        ``how``: ``action`` (AWS: terminate, stop, hibernate); ``kind`` (GCP: preempted or
        maintenance, with ``maintenance`` TERMINATE_/MIGRATE_ON_HOST_MAINTENANCE); ``event_type``,
        ``resources`` and ``status`` (Azure: Preempt, Terminate, Reboot, Redeploy or Freeze, for
        the VMs named, Scheduled or Started).
        """
        with self._cond:
            self._space(namespace).announce(cloud, notice_seconds, **how)
            self._cond.notify_all()

    def rebalance(self, namespace: str = "") -> None:
        """Post an AWS rebalance recommendation (a hint that a notice may follow)."""
        with self._cond:
            self._space(namespace).rebalance = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def fault(self, namespace: str = "", kind: str = "outage", seconds: float = math.inf, *,
              answer: str = "reset", delay: float = 0.0) -> None:
        """Play a fault for ``seconds``: ``outage`` (every request hung up on, or answered ``answer``
        such as "503"/"429"), ``slow`` (each answer ``delay`` seconds late, never later than the end
        of the slow period) or ``name`` (Azure's name lookup fails as ``answer``)."""
        until = time.monotonic() + seconds
        with self._cond:
            space = self._space(namespace)
            if kind == "outage":
                space.outage = Fault(until, str(answer))
            elif kind == "slow":
                space.slow = Fault(until, delay=float(delay))
            elif kind == "name":
                space.name_fault = Fault(until, str(answer))
            else:
                raise ValueError(f"unknown fault {kind!r}: use outage, slow, name")
            self._cond.notify_all()

    def clear(self, namespace: str = "") -> None:
        """Withdraw any pending notice, hint and fault, and forget acknowledgements."""
        with self._cond:
            self._space(namespace).clear()
            self._cond.notify_all()

    def expire_tokens(self, namespace: str = "") -> None:
        """Invalidate every AWS token handed out, as after the TTL (tests token renewal)."""
        with self._cond:
            self._space(namespace).tokens.clear()

    def acknowledged(self, namespace: str = "") -> list[str]:
        """Return the Azure EventIds acknowledged with StartRequests."""
        with self._cond:
            return list(self._space(namespace).acknowledged)

    def requests(self, namespace: str = "") -> list[tuple[str, str]]:
        """Return the (method, path with query, without the ``/ns/<name>`` prefix) log."""
        with self._cond:
            return list(self._space(namespace).log)

    def state(self, namespace: str = "") -> dict[str, Any]:
        """Return what ``GET /_sim/state`` answers."""
        with self._cond:
            return self._space(namespace).state(namespace)

    def _space(self, namespace: str) -> Namespace:
        space = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = Namespace(self.default_cloud)
        return space


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # one server answers many task containers, all starting at once
    sim: MetadataSimulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metadata simulator: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "MetadataSimulator/1"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    @property
    def sim(self) -> MetadataSimulator:
        return self.server.sim

    def _dispatch(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        path, namespace = split.path, ""
        if path.startswith("/ns/"):
            namespace, _, rest = path[4:].partition("/")
            path = "/" + rest
        query = dict(urllib.parse.parse_qsl(split.query))
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length > 0 else b""
        if path.startswith("/_sim/"):
            self._control(path[len("/_sim/"):], query.get("ns", namespace), query)
            return
        with self.sim._cond:
            space = self.sim._space(namespace)
            space.log.append((self.command, path + (f"?{split.query}" if split.query else "")))
        self.space = space
        self.late()
        if self.outage():
            return
        handler = {"aws": aws.handle, "gcp": gcp.handle, "azure": azure.handle}[space.cloud]
        handler(self, space, path, query)

    # -- faults: applied when a request arrives, and again to an answer held since before ---

    space: Namespace | None = None
    delayed = False

    def late(self) -> None:
        """A slow service: wait before answering (once per request, never past the slow period)."""
        slow = self.space.slow if self.space is not None else None
        if slow is not None and not self.delayed and slow.active():
            self.delayed = True
            self.wait(min(slow.delay, slow.until - time.monotonic()))

    def outage(self) -> bool:
        """During an outage: hang up, or answer its status (with the cloud's usual headers); True if so."""
        fault = self.space.outage if self.space is not None else None
        if fault is None or not fault.active():
            return False
        if fault.answer.isdigit():
            headers = gcp.FLAVOR if self.space is not None and self.space.cloud == "gcp" else None
            self.send(int(fault.answer), "Service Unavailable (simulated outage)", headers=headers)
        else:
            self.hang_up()
        return True

    # -- answers --------------------------------------------------------------------------

    def reply(self, status: int, body: str | bytes = b"", content_type: str = "text/plain",
              headers: dict[str, str] | None = None) -> None:
        """Answer, unless a fault that began while the request was held says otherwise."""
        self.late()
        if self.outage():
            return
        self.send(status, body, content_type, headers)

    def send(self, status: int, body: str | bytes = b"", content_type: str = "text/plain",
             headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client gave up (a hanging GET that timed out)
            pass

    def json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(doc), "application/json", headers)

    def hang_up(self) -> None:
        """End the connection without an answer (the client sees a reset or an empty reply)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def hold_unanswered(self) -> None:
        """Never answer, like a reply lost on the way (hop limit 1); let go when the client does."""
        self.close_connection = True
        deadline = time.monotonic() + HOLD_LIMIT
        while not self.sim._closing and time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([self.connection], [], [], 0.2)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return  # the client closed its end
            except (OSError, ValueError):
                return
        self.hang_up()

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` (a slow service); a stopping simulator ends it at once."""
        with self.sim._cond:
            self.sim._cond.wait_for(lambda: self.sim._closing, max(0.0, seconds))

    # -- control API ----------------------------------------------------------------------

    def _control(self, action: str, namespace: str, query: dict[str, str]) -> None:
        sim = self.sim
        if action == "state" and self.command == "GET":
            self.json(200, sim.state(namespace))
            return
        if action not in CONTROLS:
            self.json(404, {"error": f"unknown control {action!r}: use {', '.join(CONTROLS)}"})
            return
        if self.command != "POST":
            self.json(405, {"error": f"use POST /_sim/{action}"})
            return
        try:
            if action == "clear":
                sim.clear(namespace)
            elif action == "configure":
                options = {k: _value(v) for k, v in query.items() if k not in ("ns", "cloud")}
                sim.configure(namespace, query.get("cloud") or None, **options)
            elif action == "rebalance":
                sim.rebalance(namespace)
            elif action == "fault":
                sim.fault(namespace, query.get("kind", "outage"), float(query.get("seconds") or math.inf),
                          answer=query.get("answer", "reset"), delay=float(query.get("delay") or 0))
            else:
                cloud = query.get("cloud") or sim.state(namespace)["cloud"]
                notice = float(query.get("notice") or DEFAULT_NOTICE.get(cloud, 30.0))
                how: dict[str, Any] = {k: query[k] for k in ("action", "kind", "maintenance", "status") if k in query}
                if "type" in query:
                    how["event_type"] = query["type"]
                if "resources" in query:
                    how["resources"] = [r for r in query["resources"].split(",") if r]
                sim.preempt(cloud, notice, namespace, **how)
        except (ValueError, TypeError) as exc:
            self.json(400, {"error": str(exc)})
            return
        self.json(200, sim.state(namespace))


def _value(text: str) -> Any:
    """Query-string values: true/false as booleans, the rest as text."""
    return {"true": True, "false": False}.get(text.lower(), text)
