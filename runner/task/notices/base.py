"""What every cloud poller shares: one HTTP call, the error kinds, identification and backoff.

A poller thread identifies its cloud, then asks the metadata service again and again. Errors
come in kinds (:class:`Unusable`): before identification, in ``auto`` mode, a service that is
absent, hangs up or answers like another cloud ends the poller quietly, while one that answers
``429``/``5xx`` (it is there, only busy) or times out a few times is asked again. Once a cloud is
identified (or in an explicit mode) every error is retried, with a backoff capped at
``MAX_BACKOFF`` seconds, well inside the shortest notice window (30 s), and never given up.
Standard library only: this runs in slim task containers.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from runner.task.notices.watcher import NoticeWatcher

log = logging.getLogger("runner.notices")

MAX_BACKOFF = 2.0  # seconds between tries after errors, at most: notices come 30 s ahead at least
ID_TRIES = 3  # auto mode: a service that only times out gets this many tries before it counts as absent
WARN_EVERY = 60.0
MAX_BODY = 1 << 16
#: Answers that say "the service is there but cannot answer now": retried, never a reason to stop.
TRANSIENT_STATUSES = frozenset({408, 410, 429, 500, 502, 503, 504})
# Never route metadata requests through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Notice:
    """One preemption notice: where it came from, when, and when the machine goes away."""

    source: str  # "signal:SIGTERM", "signal:SIGINT", "halt-file", "halt-request", "aws", "gcp", "azure"
    received_at: float  # time.monotonic() when seen
    deadline: float | None  # wall-clock epoch seconds when the machine goes away, if known
    detail: str  # the AWS action, the Azure EventId, the halt file's path, ...
    kind: str = ""  # what the cloud announced: terminate/stop/hibernate, preempted, maintenance, Preempt, ...


class Reply(NamedTuple):
    status: int
    headers: Message
    body: bytes


class Unusable(Exception):
    """No usable answer. ``kind`` says how it failed, which decides what happens next.

    - ``absent``: refused, no route, no such host: nothing listens there.
    - ``dropped``: the connection was reset or the answer was not HTTP (a blip, or not a
      metadata service: auto mode gives it ``ID_TRIES`` tries, like a timeout).
    - ``timeout``: no answer in time.
    - ``busy``: an HTTP status that means "try again" (``TRANSIENT_STATUSES``).
    - ``foreign``: an answer, but not the one this cloud gives (another cloud's service).
    - ``bad``: this cloud's service, answering something unusable.
    """

    def __init__(self, message: str, kind: str = "bad", retry_in: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_in = retry_in  # seconds until the next try, where the usual backoff does not fit

    @property
    def timed_out(self) -> bool:
        return self.kind == "timeout"


def _kind_of(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)  # urllib wraps socket errors in URLError(reason)
    if isinstance(reason, (TimeoutError, socket.timeout)) or isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
        return "absent"
    if isinstance(reason, OSError) and not isinstance(reason, ConnectionError) and reason.errno is not None:
        return "absent"  # EHOSTUNREACH, ENETUNREACH, ...
    return "dropped"


def http_call(method: str, url: str, headers: dict[str, str], timeout: float, data: bytes | None = None) -> Reply:
    """Send one request; return the reply whatever its status, or raise ``Unusable``."""
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return Reply(response.status, response.headers, response.read(MAX_BODY))
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, exc.headers, exc.read(MAX_BODY))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise Unusable(f"{type(exc).__name__}: {exc}", _kind_of(exc)) from exc


def to_epoch(text: str) -> float | None:
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


def short(body: bytes) -> str:
    return repr(body[:60].decode("utf-8", "replace"))


def status_error(what: str, reply: Reply, identified: bool) -> Unusable:
    """The error for an answer with an unexpected status: busy, this cloud's bad answer, or foreign."""
    kind = "busy" if reply.status in TRANSIENT_STATUSES else ("bad" if identified else "foreign")
    return Unusable(f"{what} answered HTTP {reply.status} {short(reply.body)}", kind)


class CloudPoller:
    """One poller thread: identify the service, then poll it until stopped or a notice is taken."""

    source = ""

    def __init__(self, watcher: NoticeWatcher, base: str, explicit: bool, stop: threading.Event):
        self.watcher, self.base, self.explicit, self.stop = watcher, base.rstrip("/"), explicit, stop
        self.real_service = not watcher.metadata_url
        self.identified = False
        self.id_tries = 0
        self.failures = 0
        self.last_warning = -math.inf
        self.told_busy = False

    @property
    def name(self) -> str:
        return self.source

    def run(self) -> None:
        """Poll until stopped; end quietly where auto mode finds no such service."""
        try:
            while not self.stop.is_set() and self.watcher.notice is None:
                try:
                    delay = self.poll()
                    if self.failures:
                        log.info("%s metadata service at %s answers again", self.name, self.base)
                    self.failures = 0
                    if delay is None:
                        return
                except Unusable as exc:
                    if self.give_up(exc):
                        log.debug("no %s metadata service at %s (%s); not polling it", self.name, self.base, exc)
                        return
                    self.failures += 1
                    delay = self.backoff() if exc.retry_in is None else exc.retry_in
                    self.report(exc, delay)
                if self.stop.wait(delay):
                    return
        except Exception:  # a bug here must never reach training
            log.warning("%s notice poller stopped by an unexpected error", self.name, exc_info=True)

    def give_up(self, exc: Unusable) -> bool:
        """True where auto mode takes ``exc`` for "no such cloud here"; never once identified."""
        if self.identified or self.explicit:
            return False
        if exc.kind in ("absent", "foreign"):
            return True
        if exc.kind in ("timeout", "dropped"):  # slow at boot, a blip, or nothing there? a few tries tell
            self.id_tries += 1
            return self.id_tries >= ID_TRIES
        return False  # busy: a service is there; it will answer

    def backoff(self) -> float:
        return min(MAX_BACKOFF, self.watcher.poll_interval * 2.0 ** min(self.failures, 10))

    def report(self, exc: Unusable, delay: float) -> None:
        message = f"{self.name} metadata service at {self.base}: {exc}; retrying in {delay:.1f}s"
        if self.identified or self.explicit:
            self.warn(message)
        elif exc.kind == "busy" and not self.told_busy:
            self.told_busy = True  # auto mode, not identified yet: say it once, keep asking
            log.info(message)
        else:
            log.debug(message)

    def warn(self, message: str) -> None:
        """Log a WARNING at most once a minute for this poller; DEBUG otherwise."""
        if self.stop.is_set():
            return
        now = time.monotonic()
        if now - self.last_warning >= WARN_EVERY:
            self.last_warning = now
            log.warning(message)
        else:
            log.debug(message)

    def http(self, method: str, path: str, headers: dict[str, str], timeout: float | None = None) -> Reply:
        return http_call(method, self.base + path, headers, timeout or self.watcher.request_timeout)

    def record(self, deadline: float | None, detail: str, kind: str = "") -> None:
        if not self.stop.is_set():
            self.watcher.trigger(self.source, detail, deadline=deadline, kind=kind)

    def hint(self, detail: str) -> None:
        """Note something that is not a notice (a rebalance recommendation, a live migration)."""
        self.watcher.add_hint(self.source, detail)

    def poll(self) -> float | None:
        """Ask once; record a notice if there is one; return the seconds until the next ask (None: stop)."""
        raise NotImplementedError
