"""The store interface: a flat namespace of immutable objects under one URI.

Stores know nothing of steps or manifests; ``runner.task.checkpoint`` builds the safe layout
(immutable step folders, manifest written last) on top of these few operations.

Every store call has a deadline (``runner.stores.deadline``): its own bound, and while a
preemption notice is pending the end of the notice window (:meth:`Store.deadline_at`). A call
that cannot finish by then raises :class:`DeadlineExceeded` and makes nothing visible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from runner.errors import DeadlineExceeded, StoreError, StoreUnavailable  # noqa: F401 - re-exported for the stores


class Store(ABC):
    """Objects addressed by ``/``-separated keys relative to the store's root URI."""

    uri: str
    #: ``time.monotonic()`` after which no call of this store may run (a notice's window); None: none.
    deadline: float | None = None

    @contextmanager
    def deadline_at(self, at: float | None) -> Iterator[None]:
        """Within the block, every call ends by ``at`` (``time.monotonic()``) or raises DeadlineExceeded."""
        previous = self.deadline
        self.deadline = at if previous is None or at is None else min(at, previous)
        try:
            yield
        finally:
            self.deadline = previous

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` so that readers see all of it or nothing."""

    @abstractmethod
    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Yield a file to write ``key``; it becomes visible only when the block exits cleanly."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Return the object's bytes; FileNotFoundError when absent."""

    @abstractmethod
    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        """Yield a seekable binary file with the object's bytes; FileNotFoundError when absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Return every key under ``prefix`` (recursive), sorted."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete the keys; missing ones are ignored."""

    def exists(self, key: str) -> bool:
        """Return whether ``key`` exists."""
        try:
            self.read_bytes(key)
        except FileNotFoundError:
            return False
        return True

    def describe(self) -> str:
        """Return the URI, for log lines (never credentials)."""
        return self.uri
