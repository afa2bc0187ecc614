"""Deadlines for store calls and commits: socket timeouts, a bound per call, the notice window.

Three limits apply to every store call, from the smallest to the largest:

- connect and read timeouts on every SDK socket (``CONNECT_TIMEOUT_S``, ``READ_TIMEOUT_S``), so a
  connection that hangs fails fast and the SDK's own retry (the one retry layer) tries again;
- a bound per call (``RUNNER_STORE_TIMEOUT``, default ``DEFAULT_CALL_TIMEOUT_S``): a call still
  retrying then gives up with one line;
- while a preemption notice is pending, the end of its window minus a margin
  (:func:`commit_deadline`), set on the store with ``Store.deadline_at``.

:func:`run_bounded` enforces the last two whatever the SDK does inside: the call runs in a
worker thread and the caller stops waiting at the deadline. Abandoning a call is safe because
stores write all or nothing (an upload is invisible until complete, a ``file://`` write is
renamed into place last) and a checkpoint counts only once its manifest, written last, exists.
Standard library only: the task side and ``runner exec`` both use it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from runner.contract import DEFAULT_NOTICE_WINDOW_S, NOTICE_WINDOW, STORE_TIMEOUT
from runner.errors import ConfigError
from runner.stores.base import DeadlineExceeded

T = TypeVar("T")

#: Seconds to open a connection, and to wait on one socket read or write, in every store SDK.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
#: A store call (one object, all its parts and retries) gives up after this long without a notice.
DEFAULT_CALL_TIMEOUT_S = 300.0
#: Kept at the end of a notice window for the process to log and exit after its commit (see exit_margin).
EXIT_MARGIN_S = 2.0


def call_timeout(environ: dict[str, str] | None = None) -> float:
    """Return the bound of one store call without a notice, from ``RUNNER_STORE_TIMEOUT``."""
    return _seconds(environ, STORE_TIMEOUT, DEFAULT_CALL_TIMEOUT_S)


def notice_window(environ: dict[str, str] | None = None) -> float:
    """Return the window assumed for a notice that names no deadline (a signal, a halt file)."""
    return _seconds(environ, NOTICE_WINDOW, DEFAULT_NOTICE_WINDOW_S)


def _seconds(environ: dict[str, str] | None, name: str, default: float) -> float:
    text = (os.environ if environ is None else environ).get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise ConfigError(f"{name}={text!r} is not a number of seconds: use e.g. {name}=30")
    return value


def window_end(received_at: float, deadline: float | None, environ: dict[str, str] | None = None) -> float:
    """Return when a notice's window ends, on the ``time.monotonic()`` clock.

    ``received_at`` is the notice's ``time.monotonic()``; ``deadline`` its wall-clock end when the
    cloud named one, else the window is :func:`notice_window` from when it was received.
    """
    if deadline is None:
        return received_at + notice_window(environ)
    return time.monotonic() + (deadline - time.time())


def exit_margin(window_s: float) -> float:
    """Return the time kept at the end of a window of ``window_s`` seconds: ``EXIT_MARGIN_S``, or a fifth
    of a window shorter than five times that (a 3 s notice keeps 0.6 s)."""
    return min(EXIT_MARGIN_S, max(0.0, window_s) / 5)


def commit_deadline(received_at: float, deadline: float | None, environ: dict[str, str] | None = None) -> float:
    """Return when a commit after a notice must be done: the window's end minus :func:`exit_margin`."""
    end = window_end(received_at, deadline, environ)
    return end - exit_margin(end - received_at)


def run_bounded(fn: Callable[[], T], at: float, what: str) -> T:
    """Return ``fn()``, or raise DeadlineExceeded when it has not returned by ``at`` (monotonic).

    ``fn`` runs in a daemon thread; past the deadline it is abandoned (it finishes or fails on its
    own, unseen). Its exceptions are re-raised here, in the caller's thread.
    """
    left = at - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"{what}: no time left before the deadline")
    box: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=f"bounded-{what[:40]}", daemon=True).start()
    if not done.wait(left):
        raise DeadlineExceeded(f"{what} did not finish within {left:.1f} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


@dataclass
class CallTimes:
    """The duration of every store call of one store object, for the fault table's spread."""

    longest: float = 0.0
    longest_op: str = ""
    count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, op: str, seconds: float) -> None:
        with self._lock:
            self.count += 1
            if seconds > self.longest:
                self.longest, self.longest_op = seconds, op
