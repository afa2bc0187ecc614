"""Simulate the AWS, GCP and Azure instance-metadata services over real HTTP.

One server serves many task containers: a path prefix ``/ns/<name>`` selects an independent
namespace (no prefix: namespace ``""``). Each namespace imitates one cloud and answers only
that cloud's endpoints, exactly as ``shared/reference/cloud-facts.md`` describes them, so a
``NoticeWatcher`` in ``auto`` mode detects that cloud. Other processes drive it through a small
control API::

    POST /_sim/preempt?cloud=aws&notice=5&ns=NAME    announce a preemption in NOTICE seconds
    POST /_sim/clear?ns=NAME                         withdraw it (and forget acknowledgements)
    POST /_sim/configure?cloud=gcp&ns=NAME           choose the cloud a namespace imitates
    GET  /_sim/state?ns=NAME                         {"namespace", "cloud", "pending", ...}

Run it alone with ``python -m runner.sim.metadata --host 0.0.0.0 --port 8080 --cloud aws``.
"""

from __future__ import annotations

import argparse
import collections
import email.utils
import json
import logging
import secrets
import signal
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger("runner.sim")

CLOUDS = ("aws", "gcp", "azure")
DEFAULT_NOTICE = {"aws": 120.0, "gcp": 30.0, "azure": 30.0}
HANG_SECONDS = 55.0
MAX_TOKEN_TTL = 21600
AZURE_VM_NAME = "vm0"
REQUEST_LOG_LIMIT = 10_000


@dataclass
class _Namespace:
    """What one simulated machine's metadata service knows."""

    cloud: str
    deadline: float | None = None  # wall-clock seconds; set while an AWS/GCP notice is pending
    tokens: dict[str, float] = field(default_factory=dict)  # AWS token -> monotonic expiry
    etag: str = field(default_factory=lambda: secrets.token_hex(8))  # GCP value version
    incarnation: int = 1  # Azure DocumentIncarnation
    events: list[dict[str, Any]] = field(default_factory=list)  # Azure scheduled events
    acknowledged: list[str] = field(default_factory=list)
    log: collections.deque[tuple[str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=REQUEST_LOG_LIMIT))

    @property
    def pending(self) -> bool:
        return bool(self.events) if self.cloud == "azure" else self.deadline is not None

    def state(self, name: str) -> dict[str, Any]:
        return {"namespace": name, "cloud": self.cloud, "pending": self.pending,
                "deadline": self.deadline if self.pending else None,
                "acknowledged": list(self.acknowledged)}


def _check_cloud(cloud: str) -> str:
    if cloud not in CLOUDS:
        raise ValueError(f"unknown cloud {cloud!r}: use one of {', '.join(CLOUDS)}")
    return cloud


class MetadataSimulator:
    """Serve simulated AWS, GCP and Azure metadata endpoints on one port, one state per namespace."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, cloud: str = "aws") -> None:
        self.host = host
        self.port = port
        self.default_cloud = _check_cloud(cloud)
        self.hang_seconds = HANG_SECONDS
        self._cond = threading.Condition()
        self._spaces: dict[str, _Namespace] = {}
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
        """Bind the port and serve from a daemon thread."""
        if self._server is not None:
            return self
        self._closing = False
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sim = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="metadata-simulator", daemon=True)
        self._thread.start()
        log.debug("metadata simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving; hanging GETs return at once."""
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

    def configure(self, namespace: str = "", cloud: str = "aws") -> None:
        """Make a namespace imitate ``cloud``."""
        with self._cond:
            self._space(namespace).cloud = _check_cloud(cloud)

    def preempt(self, cloud: str, notice_seconds: float, namespace: str = "") -> None:
        """Announce, as ``cloud`` would, that the machine goes away in ``notice_seconds``."""
        _check_cloud(cloud)
        with self._cond:
            space = self._space(namespace)
            space.cloud = cloud
            space.deadline = time.time() + notice_seconds
            space.etag = secrets.token_hex(8)
            if cloud == "azure":
                space.events.append({
                    "EventId": str(uuid.uuid4()), "EventType": "Preempt",
                    "ResourceType": "VirtualMachine", "Resources": [AZURE_VM_NAME],
                    "EventStatus": "Scheduled",
                    "NotBefore": email.utils.formatdate(space.deadline, usegmt=True),
                    "Description": "", "EventSource": "Platform", "DurationInSeconds": -1})
                space.incarnation += 1
            self._cond.notify_all()

    def clear(self, namespace: str = "") -> None:
        """Withdraw any pending notice and forget acknowledgements."""
        with self._cond:
            space = self._space(namespace)
            if space.deadline is not None:
                space.etag = secrets.token_hex(8)
            if space.events:
                space.incarnation += 1
            space.deadline = None
            space.events.clear()
            space.acknowledged.clear()
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

    def _space(self, namespace: str) -> _Namespace:
        space = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = _Namespace(self.default_cloud)
        return space


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    sim: MetadataSimulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metadata simulator: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "MetadataSimulator/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- plumbing -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        sim = self.server.sim
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
        with sim._cond:
            space = sim._space(namespace)
            space.log.append((self.command, path + (f"?{split.query}" if split.query else "")))
            cloud = space.cloud
        handler = {"aws": self._aws, "gcp": self._gcp, "azure": self._azure}[cloud]
        handler(space, path, query)

    def _reply(self, status: int, body: str | bytes = b"", content_type: str = "text/plain",
               headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (a hanging GET that timed out)
            pass

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._reply(status, json.dumps(doc), "application/json", headers)

    # -- control API ----------------------------------------------------------------------

    def _control(self, action: str, namespace: str, query: dict[str, str]) -> None:
        sim = self.server.sim
        if action == "state" and self.command == "GET":
            self._json(200, sim.state(namespace))
            return
        if action not in ("preempt", "clear", "configure"):
            self._json(404, {"error": f"unknown control {action!r}: use preempt, clear, configure, state"})
            return
        if self.command != "POST":
            self._json(405, {"error": f"use POST /_sim/{action}"})
            return
        try:
            if action == "clear":
                sim.clear(namespace)
            elif action == "configure":
                sim.configure(namespace, query.get("cloud", ""))
            else:
                cloud = query.get("cloud") or sim.state(namespace)["cloud"]
                notice = float(query.get("notice") or DEFAULT_NOTICE.get(cloud, 30.0))
                sim.preempt(cloud, notice, namespace)
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, sim.state(namespace))

    # -- AWS IMDSv2 -----------------------------------------------------------------------

    def _aws(self, space: _Namespace, path: str, query: dict[str, str]) -> None:
        sim = self.server.sim
        if self.command == "PUT" and path == "/latest/api/token":
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.strip().isdigit() or not 1 <= int(ttl) <= MAX_TOKEN_TTL:
                self._reply(400, "Bad Request: X-aws-ec2-metadata-token-ttl-seconds must be 1..21600")
                return
            token = secrets.token_urlsafe(42)
            with sim._cond:
                space.tokens[token] = time.monotonic() + int(ttl)
            self._reply(200, token, headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl.strip()})
            return
        if self.command != "GET" or not path.startswith("/latest/"):
            self._reply(404, "Not Found")
            return
        token = self.headers.get("X-aws-ec2-metadata-token", "")
        with sim._cond:
            valid = space.tokens.get(token, 0.0) > time.monotonic()
            deadline = space.deadline
        if not valid:
            self._reply(401, "Unauthorized")
        elif path == "/latest/meta-data/spot/instance-action" and deadline is not None:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline))
            self._json(200, {"action": "terminate", "time": when})
        else:
            self._reply(404, "Not Found")

    # -- GCP ------------------------------------------------------------------------------

    def _gcp(self, space: _Namespace, path: str, query: dict[str, str]) -> None:
        sim = self.server.sim
        flavor = {"Metadata-Flavor": "Google"}
        if not path.startswith("/computeMetadata/v1/") or self.command != "GET":
            self._reply(404, "Not Found", headers=flavor)
            return
        if self.headers.get("Metadata-Flavor") != "Google":
            self._reply(403, "Missing Metadata-Flavor:Google header.", headers=flavor)
            return
        if path == "/computeMetadata/v1/instance/maintenance-event":
            self._reply(200, "NONE", "application/text", headers=flavor)
            return
        if path != "/computeMetadata/v1/instance/preempted":
            self._reply(404, "Not Found", headers=flavor)
            return
        with sim._cond:
            if query.get("wait_for_change", "").lower() == "true":
                start_etag = query.get("last_etag") or space.etag
                try:
                    timeout = float(query.get("timeout_sec") or sim.hang_seconds)
                except ValueError:
                    timeout = sim.hang_seconds
                sim._cond.wait_for(lambda: space.etag != start_etag or sim._closing,
                                   min(timeout, sim.hang_seconds))
            value, etag = ("TRUE" if space.deadline is not None else "FALSE"), space.etag
        self._reply(200, value, "application/text", headers={**flavor, "ETag": etag})

    # -- Azure ----------------------------------------------------------------------------

    def _azure(self, space: _Namespace, path: str, query: dict[str, str]) -> None:
        sim = self.server.sim
        if path not in ("/metadata/scheduledevents", "/metadata/instance/compute/name"):
            self._reply(404, "Not Found")
            return
        if self.headers.get("Metadata", "").lower() != "true":
            self._json(400, {"error": "Bad request. Required metadata header not specified"})
            return
        if not query.get("api-version"):
            self._json(400, {"error": "Bad request. api-version was not specified in the request."})
            return
        if path == "/metadata/instance/compute/name":
            self._reply(200 if self.command == "GET" else 405, AZURE_VM_NAME)
            return
        if self.command == "GET":
            with sim._cond:
                doc = {"DocumentIncarnation": space.incarnation, "Events": list(space.events)}
            self._json(200, doc)
            return
        if self.command != "POST":
            self._reply(405, "Method Not Allowed")
            return
        try:
            requests = json.loads(self.body)["StartRequests"]
            ids = [str(item["EventId"]) for item in requests]
        except (ValueError, TypeError, KeyError):
            self._json(400, {"error": 'Bad request. Expected {"StartRequests": [{"EventId": "..."}]}'})
            return
        with sim._cond:
            known = {event["EventId"] for event in space.events}
            started = [event_id for event_id in ids if event_id in known]
            if started:
                space.acknowledged.extend(started)
                space.events = [e for e in space.events if e["EventId"] not in started]
                space.incarnation += 1
                sim._cond.notify_all()
        self._reply(200)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m runner.sim.metadata",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (0 for any free one)")
    parser.add_argument("--cloud", default="aws", choices=CLOUDS, help="cloud a new namespace imitates")
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with MetadataSimulator(args.host, args.port, args.cloud) as sim:
        print(f"metadata simulator ({args.cloud}) listening on {args.host}:{sim.url.rsplit(':', 1)[1]}"
              f" ({sim.url})", flush=True)
        while not done.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
