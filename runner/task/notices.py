"""Watch every source of a preemption notice at once: signals, a halt file, the cloud metadata.

``NoticeWatcher`` runs one daemon thread per source; the first notice wins, later ones are
ignored. Training reads ``watcher.notice`` every step (a plain attribute read) and, once it is
set, finishes the step, commits a checkpoint, calls ``acknowledge()`` and exits 75.

Cloud pollers follow "Preemption notices seen from inside the VM" in
``shared/reference/cloud-facts.md``. In ``auto`` mode each one identifies its cloud first and
quietly ends (one DEBUG line) where the service is absent or answers like something else; in an
explicit mode it warns (at most once a minute per source) and retries with backoff. Nothing here
raises into training. Standard library only: this runs in slim task containers.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import os
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from types import FrameType, TracebackType
from typing import Any, NamedTuple

from runner.errors import ConfigError

log = logging.getLogger("runner.notices")

MODES = ("auto", "aws", "gcp", "azure", "none")
AWS_URL = AZURE_URL = "http://169.254.169.254"
GCP_URL = "http://metadata.google.internal"
AWS_TOKEN_TTL = 21600
GCP_NOTICE_SECONDS = 30.0
GCP_HANG_TIMEOUT = 60.0
AZURE_FIRST_CALL_TIMEOUT = 120.0  # the real service's first call may take up to 2 minutes
AZURE_EVENT_TYPES = ("Preempt", "Terminate")
AZURE_EVENTS_PATH = "/metadata/scheduledevents?api-version=2020-07-01"
AZURE_NAME_PATH = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
MAX_BACKOFF = 30.0
ID_TRIES = 3  # auto mode: a service that only times out gets this many tries before it counts as absent
WARN_EVERY = 60.0
HALT_EVERY = 3.0  # seconds between looks for a HALT object under the checkpoint URI
MAX_BODY = 1 << 16
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Never route metadata requests through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Notice:
    """One preemption notice: where it came from, when, and when the machine goes away."""

    source: str  # "signal:SIGTERM", "signal:SIGINT", "halt-file", "halt-request", "aws", "gcp", "azure"
    received_at: float  # time.monotonic() when seen
    deadline: float | None  # wall-clock epoch seconds when the machine goes away, if known
    detail: str  # the AWS action, the Azure EventId, the halt file's path, ...


class _Reply(NamedTuple):
    status: int
    headers: Message
    body: bytes


class _Unusable(Exception):
    """No usable answer: refused, reset, timed out, not HTTP, or not what the cloud would say."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def _http(method: str, url: str, headers: dict[str, str], timeout: float,
          data: bytes | None = None) -> _Reply:
    """Send one request; return the reply whatever its status, or raise ``_Unusable``."""
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return _Reply(response.status, response.headers, response.read(MAX_BODY))
        except urllib.error.HTTPError as exc:
            with exc:
                return _Reply(exc.code, exc.headers, exc.read(MAX_BODY))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        timed_out = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
        raise _Unusable(f"{type(exc).__name__}: {exc}", timed_out) from exc


def _to_epoch(text: str) -> float | None:
    """Parse ``2026-11-26T08:22:00Z`` or ``Mon, 19 Sep 2016 18:29:47 GMT`` (UTC if no zone)."""
    parsers: tuple[Callable[[str], datetime], ...] = (
        lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")), email.utils.parsedate_to_datetime)
    for parse in parsers:
        try:
            parsed = parse(text.strip())
        except (TypeError, ValueError, IndexError):
            continue
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def _short(body: bytes) -> str:
    return repr(body[:60].decode("utf-8", "replace"))


class _CloudPoller:
    """One cloud's poller thread: identify the service, then poll it until stopped."""

    source = ""

    def __init__(self, watcher: NoticeWatcher, base: str, explicit: bool, stop: threading.Event):
        self.watcher, self.base, self.explicit, self.stop = watcher, base.rstrip("/"), explicit, stop
        self.real_service = not watcher.metadata_url
        self.identified = False
        self.id_tries = 0
        self.failures = 0
        self.last_warning = -math.inf

    def run(self) -> None:
        """Poll until stopped; end quietly where auto mode finds no such service."""
        try:
            while not self.stop.is_set():
                try:
                    delay = self.poll()
                    self.failures = 0
                except _Unusable as exc:
                    if not self.identified and not self.explicit:
                        self.id_tries += 1
                        if exc.timed_out and self.id_tries < ID_TRIES:  # slow at boot, or absent?
                            if self.stop.wait(self.watcher.poll_interval):
                                return
                            continue
                        log.debug("no %s metadata service at %s (%s); not polling it",
                                  self.source, self.base, exc)
                        return
                    self.failures += 1
                    delay = min(MAX_BACKOFF, self.watcher.poll_interval * 2.0 ** min(self.failures, 10))
                    self.warn(f"{self.source} metadata service at {self.base}: {exc}; "
                              f"retrying in {delay:.1f}s")
                if self.stop.wait(delay):
                    return
        except Exception:  # a bug here must never reach training
            log.warning("%s notice poller stopped by an unexpected error", self.source, exc_info=True)

    def warn(self, message: str) -> None:
        """Log a WARNING at most once a minute for this source; DEBUG otherwise."""
        if self.stop.is_set():
            return
        now = time.monotonic()
        if now - self.last_warning >= WARN_EVERY:
            self.last_warning = now
            log.warning(message)
        else:
            log.debug(message)

    def http(self, method: str, path: str, headers: dict[str, str],
             timeout: float | None = None) -> _Reply:
        return _http(method, self.base + path, headers, timeout or self.watcher.request_timeout)

    def record(self, deadline: float | None, detail: str) -> None:
        if not self.stop.is_set():
            self.watcher.trigger(self.source, detail, deadline=deadline)

    def poll(self) -> float:
        """Ask once; record a notice if there is one; return the seconds until the next ask."""
        raise NotImplementedError


class _AwsPoller(_CloudPoller):
    source = "aws"
    token: str | None = None
    token_renew_at = 0.0
    rebalance_seen: bytes | None = None

    def fetch_token(self) -> str:
        reply = self.http("PUT", "/latest/api/token",
                          {"X-aws-ec2-metadata-token-ttl-seconds": str(AWS_TOKEN_TTL)})
        token = reply.body.decode("ascii", "replace").strip()
        if reply.status != 200 or not 0 < len(token) < 4096 or not token.isprintable() or " " in token:
            raise _Unusable(f"token PUT answered HTTP {reply.status} {_short(reply.body)}")
        self.token, self.token_renew_at = token, time.monotonic() + AWS_TOKEN_TTL * 0.9
        return token

    def get(self, path: str) -> _Reply:
        if self.token is None or time.monotonic() >= self.token_renew_at:
            self.fetch_token()
        reply = self.http("GET", path, {"X-aws-ec2-metadata-token": self.token or ""})
        if reply.status == 401:  # expired or revoked: renew once
            reply = self.http("GET", path, {"X-aws-ec2-metadata-token": self.fetch_token()})
        return reply

    def poll(self) -> float:
        reply = self.get("/latest/meta-data/spot/instance-action")
        if reply.status == 200:
            try:
                doc = json.loads(reply.body)
                action = doc["action"]
                if not isinstance(action, str):
                    raise TypeError(action)
            except (ValueError, TypeError, KeyError) as exc:
                raise _Unusable(f"instance-action is not a notice: {_short(reply.body)}") from exc
            self.identified = True
            self.record(_to_epoch(str(doc.get("time", ""))), action)
        elif reply.status == 404:
            self.identified = True
        else:
            raise _Unusable(f"instance-action answered HTTP {reply.status} {_short(reply.body)}")
        self.check_rebalance()
        return self.watcher.poll_interval

    def check_rebalance(self) -> None:
        """Log a rebalance recommendation once: a hint that a notice may follow, not a notice."""
        try:
            reply = self.get("/latest/meta-data/events/recommendations/rebalance")
        except _Unusable as exc:
            log.debug("aws rebalance check failed: %s", exc)
            return
        if reply.status == 200 and reply.body != self.rebalance_seen:
            self.rebalance_seen = reply.body
            log.info("aws rebalance recommendation (a hint, not a notice): %s", _short(reply.body))


class _GcpPoller(_CloudPoller):
    source = "gcp"
    path = "/computeMetadata/v1/instance/preempted"
    etag: str | None = None

    def poll(self) -> float:
        flavor = {"Metadata-Flavor": "Google"}
        if not self.identified:  # one plain GET identifies the service fast
            reply = self.http("GET", self.path, flavor)
            if reply.headers.get("Metadata-Flavor") != "Google":
                raise _Unusable(f"HTTP {reply.status} without the header Metadata-Flavor: Google")
        else:  # a hanging GET: it returns when the value changes (from the last ETag seen)
            query = "?wait_for_change=true"
            if self.etag:
                query += "&last_etag=" + urllib.parse.quote(self.etag, safe="")
            try:
                reply = self.http("GET", self.path + query, flavor,
                                  max(GCP_HANG_TIMEOUT, self.watcher.request_timeout))
            except _Unusable as exc:
                if not exc.timed_out:
                    raise
                return 0.0  # it outlived its timeout: ask again
        value = reply.body.decode("ascii", "replace").strip().upper()
        if reply.status != 200 or value not in ("TRUE", "FALSE"):
            raise _Unusable(f"preempted answered HTTP {reply.status} {_short(reply.body)}")
        self.identified = True
        self.etag = reply.headers.get("ETag") or None
        if value == "TRUE":
            self.record(time.time() + GCP_NOTICE_SECONDS, "preempted")
        return min(self.watcher.poll_interval, 1.0)


class _AzurePoller(_CloudPoller):
    source = "azure"
    vm_name: str | None = None

    def poll(self) -> float:
        first_real = not self.identified and self.real_service
        reply = self.http("GET", AZURE_EVENTS_PATH, {"Metadata": "true"},
                          AZURE_FIRST_CALL_TIMEOUT if first_real else None)
        try:
            doc = json.loads(reply.body) if reply.status == 200 else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "DocumentIncarnation" not in doc:
            raise _Unusable(f"scheduledevents answered HTTP {reply.status} {_short(reply.body)}")
        if not self.identified:
            self.identified = True
            self.vm_name = self.fetch_vm_name()
        events = doc.get("Events")
        for event in events if isinstance(events, list) else []:
            if not isinstance(event, dict) or event.get("EventType") not in AZURE_EVENT_TYPES:
                continue
            resources = event.get("Resources")
            if self.vm_name and isinstance(resources, list) and resources and self.vm_name not in resources:
                continue  # an event for another VM of the same scale set or availability set
            event_id = str(event.get("EventId", ""))
            self.watcher._seen_azure_event(self.base, event_id)
            self.record(_to_epoch(str(event.get("NotBefore", ""))), event_id)
        return self.watcher.poll_interval

    def fetch_vm_name(self) -> str | None:
        """Ask this VM's name, to ignore events for other VMs; None when unknown."""
        try:
            reply = self.http("GET", AZURE_NAME_PATH, {"Metadata": "true"})
        except _Unusable:
            return None
        name = reply.body.decode("utf-8", "replace").strip()
        return name if reply.status == 200 and 0 < len(name) < 256 else None


_POLLERS = {"aws": (_AwsPoller, AWS_URL), "gcp": (_GcpPoller, GCP_URL), "azure": (_AzurePoller, AZURE_URL)}


class NoticeWatcher:
    """Watch signals, a halt file and the cloud metadata services for a preemption notice."""

    def __init__(self, mode: str = "auto", metadata_url: str | None = None, halt_file: str | None = None,
                 poll_interval: float = 1.0, install_signals: bool = True,
                 request_timeout: float = 2.0, halt_uri: str | None = None,
                 halt_every: float = HALT_EVERY) -> None:
        mode = mode.strip().lower()
        if mode not in MODES:
            raise ConfigError(f"notice mode {mode!r} is not valid: use one of {', '.join(MODES)}")
        if poll_interval <= 0 or request_timeout <= 0:
            raise ConfigError("poll_interval and request_timeout must be positive")
        self.mode = mode
        self.metadata_url = metadata_url.rstrip("/") if metadata_url else None
        self.halt_file = halt_file
        self.halt_uri = halt_uri
        self.halt_every = halt_every
        self.poll_interval = poll_interval
        self.install_signals = install_signals
        self.request_timeout = request_timeout
        self._cond = threading.Condition(threading.RLock())  # reentrant: the signal handler takes it
        self._notice: Notice | None = None
        self._azure_events: list[tuple[str, str]] = []  # (base URL, EventId) to acknowledge
        self._azure_acked: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._previous: dict[int, Any] = {}
        self._started = False

    @property
    def notice(self) -> Notice | None:
        """Return the first notice seen, or None (a lock-free read, cheap enough for every step)."""
        return self._notice

    def start(self) -> NoticeWatcher:
        """Start the watcher threads and, from the main thread, the SIGTERM/SIGINT handlers."""
        if self._started:
            return self
        self._started = True
        self._stop = threading.Event()
        if self.install_signals and threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        if self.halt_file:
            self._spawn("halt-file", self._watch_halt_file, os.path.abspath(self.halt_file))
        if self.halt_uri:
            self._spawn("halt-request", self._watch_halt_request, self.halt_uri)
        for cloud in {"auto": list(_POLLERS), "none": []}.get(self.mode, [self.mode]):
            cls, default_url = _POLLERS[cloud]
            poller = cls(self, self.metadata_url or default_url, self.mode != "auto", self._stop)
            self._spawn(cloud, poller.run)
        return self

    def stop(self) -> None:
        """Stop the threads and put back the signal handlers that were there before."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        for signum, previous in self._previous.items():
            try:
                if signal.getsignal(signum) == self._on_signal:  # leave a handler set after ours
                    signal.signal(signum, signal.SIG_DFL if previous is None else previous)
            except ValueError:  # stopped outside the main thread: cannot touch handlers
                log.debug("cannot restore the handler of signal %s outside the main thread", signum)
        self._previous.clear()
        give_up_at = time.monotonic() + 1.0
        for thread in self._threads:  # daemon threads: a hanging GET may outlive this
            thread.join(max(0.0, give_up_at - time.monotonic()))
        self._threads = []

    def wait(self, timeout: float | None = None) -> Notice | None:
        """Block until a notice arrives or the timeout passes; return the notice or None."""
        with self._cond:
            self._cond.wait_for(lambda: self._notice is not None, timeout)
            return self._notice

    def trigger(self, source: str, detail: str = "", *, deadline: float | None = None) -> None:
        """Record a notice unless one was already seen."""
        with self._cond:
            if self._notice is not None:
                return
            self._notice = Notice(source, time.monotonic(), deadline, detail)
            self._cond.notify_all()
        left = "" if deadline is None else f", machine goes away in {deadline - time.time():.0f}s"
        log.info("preemption notice from %s%s%s", source, f" ({detail})" if detail else "", left)

    def acknowledge(self) -> None:
        """Tell Azure the checkpoint is safe so the eviction may proceed; a no-op elsewhere."""
        with self._cond:
            pending, self._azure_events = self._azure_events, []
            self._azure_acked.update(pending)
        for base, event_id in pending:
            body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
            try:
                reply = _http("POST", base + AZURE_EVENTS_PATH,
                              {"Metadata": "true", "Content-Type": "application/json"},
                              self.request_timeout, body)
                if reply.status >= 300:
                    raise _Unusable(f"HTTP {reply.status} {_short(reply.body)}")
                log.info("acknowledged azure event %s", event_id)
            except Exception as exc:  # never raises: the checkpoint is safe either way
                log.warning("could not acknowledge azure event %s: %s", event_id, exc)

    def __enter__(self) -> NoticeWatcher:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _seen_azure_event(self, base: str, event_id: str) -> None:
        with self._cond:
            key = (base, event_id)
            if event_id and key not in self._azure_events and key not in self._azure_acked:
                self._azure_events.append(key)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"runner-notices-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch_halt_file(self, path: str) -> None:
        while not self._stop.is_set():
            if os.path.exists(path):
                self.trigger("halt-file", path)
                return
            self._stop.wait(min(self.poll_interval, 0.1))  # a stat is cheap; notices are not

    def _watch_halt_request(self, uri: str) -> None:
        """Look for the ``HALT`` object under the checkpoint URI (``runner halt``) every few seconds."""
        from runner.contract import HALT_KEY
        from runner.stores import open_store

        warned_at = -math.inf
        store = None
        while not self._stop.is_set():
            try:
                store = store or open_store(uri)
                if store.exists(HALT_KEY):
                    self.trigger("halt-request", f"{uri.rstrip('/')}/{HALT_KEY}")
                    return
            except Exception as exc:  # a store blip never stops training; look again later
                if time.monotonic() - warned_at >= WARN_EVERY:
                    warned_at = time.monotonic()
                    log.warning("cannot look for a halt request under %s: %s", uri, exc)
            self._stop.wait(self.halt_every)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        current = self._notice
        if signum == signal.SIGINT and current is not None and current.source == "signal:SIGINT":
            previous = self._previous.get(signum)  # a second Ctrl-C interrupts as usual
            if callable(previous):
                previous(signum, frame)
                return
            raise KeyboardInterrupt
        self.trigger(f"signal:{signal.Signals(signum).name}")
