"""``NoticeWatcher``: every source of a preemption notice at once, one daemon thread per source.

Sources: SIGTERM/SIGINT, a halt file, a ``HALT`` object under the checkpoint URI (``runner
halt``), and the cloud metadata services (:mod:`.aws`, :mod:`.gcp`, :mod:`.azure`). The first
notice wins, later ones are ignored. Training reads ``watcher.notice`` every step (a plain
attribute read) and, once it is set, finishes the step, commits a checkpoint, calls
``acknowledge()`` and exits 75. Nothing here raises into training.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from runner.errors import ConfigError
from runner.task.notices.aws import AwsPoller
from runner.task.notices.azure import EVENTS_PATH as AZURE_EVENTS_PATH
from runner.task.notices.azure import AzurePoller
from runner.task.notices.base import WARN_EVERY, CloudPoller, Notice, Unusable, http_call, log, short
from runner.task.notices.gcp import GcpMaintenancePoller, GcpPreemptedPoller

MODES = ("auto", "aws", "gcp", "azure", "none")
AWS_URL = AZURE_URL = "http://169.254.169.254"
GCP_URL = "http://metadata.google.internal"
HALT_EVERY = 3.0  # seconds between looks for a HALT object under the checkpoint URI
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_POLLERS: dict[str, tuple[tuple[type[CloudPoller], ...], str]] = {
    "aws": ((AwsPoller,), AWS_URL),
    "gcp": ((GcpPreemptedPoller, GcpMaintenancePoller), GCP_URL),
    "azure": ((AzurePoller,), AZURE_URL),
}


class NoticeWatcher:
    """Watch signals, a halt file, a halt request and the cloud metadata services for a notice."""

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
        self.hints: list[tuple[str, str]] = []  # (source, detail): seen, and not notices
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
            classes, default_url = _POLLERS[cloud]
            for cls in classes:
                poller = cls(self, self.metadata_url or default_url, self.mode != "auto", self._stop)
                self._spawn(poller.name.replace(" ", "-"), poller.run)
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

    def trigger(self, source: str, detail: str = "", *, deadline: float | None = None, kind: str = "") -> None:
        """Record a notice unless one was already seen."""
        with self._cond:
            if self._notice is not None:
                return
            self._notice = Notice(source, time.monotonic(), deadline, detail, kind)
            self._cond.notify_all()
        left = "" if deadline is None else f", machine goes away in {deadline - time.time():.0f}s"
        log.info("preemption notice from %s%s%s", source, f" ({detail})" if detail else "", left)

    def add_hint(self, source: str, detail: str) -> None:
        """Keep something seen that is not a notice (a rebalance recommendation, a live migration)."""
        with self._cond:
            self.hints.append((source, detail))

    def acknowledge(self) -> None:
        """Tell Azure the checkpoint is safe so the eviction may proceed; a no-op elsewhere."""
        with self._cond:
            pending, self._azure_events = self._azure_events, []
            self._azure_acked.update(pending)
        for base, event_id in pending:
            body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
            try:
                reply = http_call("POST", base + AZURE_EVENTS_PATH,
                                  {"Metadata": "true", "Content-Type": "application/json"},
                                  self.request_timeout, body)
                if reply.status >= 300:
                    raise Unusable(f"HTTP {reply.status} {short(reply.body)}")
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
