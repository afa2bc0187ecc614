"""What the object stores (s3://, gs://, az://) share: keys under a prefix, spooled writes, deadlines.

A store subclass supplies five SDK calls (``_upload``, ``_download``, ``_list_names``,
``_delete_names``, ``_exists_name``) and two pure functions of an SDK exception:
``_is_transient`` (the service was unreachable or overloaded) and ``_translate``
(FileNotFoundError, a one-line StoreError, or None for "not an SDK error: a bug").

One retry layer per store, the SDK's own, configured with its real options in each store module
(botocore's standard mode, google.api_core's Retry, azure-storage-blob's retry policy): every
request of a call is retried alone (one S3 part, one Azure block, one GCS chunk), with backoffs
that start under a second and are capped at ``MAX_BACKOFF_S``. Nothing here retries: an error that
comes out of the SDK has had its retries. Every call goes through :meth:`ObjectStore._call`,
which bounds it (``runner.stores.deadline``), times it, and turns its errors into the project's:
a transient one that outlived the SDK's retries becomes :class:`StoreUnavailable`.

All-or-nothing writes come from the services, not from preconditions (which the GCS emulator
does not enforce): a single PUT, a multipart upload (S3) or a block list (Azure) is invisible
until completed, and a resumable GCS upload is finalised in one request. A write that raises
inside ``open_write``, or is abandoned at its deadline, makes nothing visible.
"""

from __future__ import annotations

import tempfile
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, BinaryIO, ClassVar, TypeVar, cast
from urllib.parse import urlparse

from runner.errors import ConfigError, StoreError
from runner.stores.base import DeadlineExceeded, Store, StoreUnavailable
from runner.stores.deadline import CallTimes, call_timeout, run_bounded

T = TypeVar("T")
#: Objects up to this size stay in memory while written or read; larger ones spill to disk.
SPOOL_BYTES = 32 * 1024 * 1024
#: Attempts per request (the first try included) in every store SDK.
ATTEMPTS = 4
#: Backoff before the first retry (at most, with jitter), doubled each retry, capped here.
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 4.0
#: The deadline of the call running in this (worker) thread, for SDKs that take a retry deadline.
_current = threading.local()


def call_deadline() -> float | None:
    """Return the deadline (``time.monotonic()``) of the store call running in this thread, if any."""
    return getattr(_current, "at", None)


def one_line(text: object, limit: int = 200) -> str:
    """Collapse ``text`` to one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and the exceptions it was raised from or during (SDKs wrap each other's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class ObjectStore(Store):
    """A store over a bucket (or container) and a key prefix, from ``scheme://bucket/prefix``."""

    scheme: ClassVar[str]
    #: What the service calls a bucket, for messages ("S3 bucket", "Azure container").
    bucket_word: ClassVar[str]
    #: The command that creates one, with ``{bucket}`` in it, for messages.
    create_hint: ClassVar[str]
    #: Where the SDK looks for credentials, for messages.
    credentials_hint: ClassVar[str]

    def __init__(self, uri: str) -> None:
        parsed = urlparse(uri)
        if parsed.scheme != self.scheme or not parsed.netloc:
            raise ConfigError(f"checkpoint URI {uri!r} is not a {self.scheme}:// URI: "
                              f"use {self.scheme}://{self.bucket_word.split()[-1]}/prefix")
        if parsed.query or parsed.fragment or parsed.params:
            raise ConfigError(f"checkpoint URI {uri!r} has a query or fragment: "
                              f"use {self.scheme}://{parsed.netloc}/prefix")
        self.uri = uri
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        #: Seconds one call may take without a notice (``RUNNER_STORE_TIMEOUT``).
        self.call_timeout = call_timeout()
        self.times = CallTimes()

    # -- what a store supplies ------------------------------------------------------------
    @abstractmethod
    def _upload(self, name: str, fh: IO[bytes], size: int) -> None:
        """Upload ``size`` bytes of ``fh`` (positioned at 0) as object ``name``."""

    @abstractmethod
    def _download(self, name: str, fh: IO[bytes]) -> None:
        """Write object ``name`` into ``fh``; raise the SDK's not-found error when absent."""

    @abstractmethod
    def _list_names(self, prefix: str) -> list[str]:
        """Return the full names of the objects starting with ``prefix``."""

    @abstractmethod
    def _delete_names(self, names: list[str]) -> None:
        """Delete the objects; absent ones are ignored."""

    @abstractmethod
    def _exists_name(self, name: str) -> bool:
        """Return whether object ``name`` exists."""

    @abstractmethod
    def _is_transient(self, exc: BaseException) -> bool:
        """Return whether ``exc`` says the service was unreachable or overloaded (5xx, throttling, a dropped
        connection, the SDK's retries run out): transient, so StoreUnavailable."""

    @abstractmethod
    def _translate(self, exc: BaseException, op: str, where: str) -> Exception | None:
        """Map an SDK error to FileNotFoundError or a one-line StoreError; None if not an SDK error."""

    # -- shared machinery -----------------------------------------------------------------
    def _name(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts[:-1]) \
                or parts[-1] in (".", ".."):
            raise StoreError(f"key {key!r} is not a relative object key under {self.uri}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    def _where(self, key: str = "") -> str:
        base = f"{self.scheme}://{self.bucket}"
        path = "/".join(p for p in (self.prefix, key) if p)
        return f"{base}/{path}" if path else base

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """Run one SDK operation (its retries are the SDK's) by its deadline; turn its errors into the project's."""
        start = time.monotonic()
        at = start + self.call_timeout if self.deadline is None else min(start + self.call_timeout, self.deadline)
        where = self._where(key)

        def bounded() -> T:
            _current.at = at
            return fn()

        try:
            return run_bounded(bounded, at, f"{op} {where}")
        except DeadlineExceeded:
            if at < start + self.call_timeout:  # the notice window's end came first
                raise DeadlineExceeded(f"{op} {where} could not finish before the notice window ends") from None
            raise DeadlineExceeded(f"{op} {where} took longer than {self.call_timeout:.0f} s (RUNNER_STORE_TIMEOUT): "
                                   "the service hangs; retry later") from None
        except Exception as exc:
            err = self._translate(exc, op, where)
            if err is None:
                raise
            if isinstance(err, FileNotFoundError):
                raise err from None
            if self._is_transient(exc):
                last = one_line(err).removeprefix(f"{op} {where} failed: ")
                err = StoreUnavailable(f"{op} {where} failed after the SDK's retries (last: {last}): "
                                       "the service is unreachable or overloaded; retry later")
            raise err from exc
        finally:
            self.times.record(op, time.monotonic() - start)

    def bucket_missing(self, where: str) -> StoreError:
        return StoreError(f"{self.bucket_word} {self.bucket!r} does not exist ({where}): create it "
                          f"({self.create_hint.format(bucket=self.bucket)}) or fix the checkpoint URI")

    def access_denied(self, op: str, where: str, detail: str) -> StoreError:
        return StoreError(f"{op} {where} was refused ({one_line(detail, 120)}): check the credentials "
                          f"that {self.credentials_hint} finds and their permissions on the "
                          f"{self.bucket_word}")

    # -- the Store interface --------------------------------------------------------------
    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        name = self._name(key)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as fh:
            yield cast(BinaryIO, fh)
            size = fh.seek(0, 2)

            def upload() -> None:
                fh.seek(0)
                self._upload(name, fh, size)

            self._call("writing", key, upload)

    def write_bytes(self, key: str, data: bytes) -> None:
        with self.open_write(key) as fh:
            fh.write(data)

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        name = self._name(key)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as fh:

            def download() -> None:
                fh.seek(0)
                fh.truncate()
                self._download(name, fh)

            self._call("reading", key, download)
            fh.seek(0)
            yield cast(BinaryIO, fh)

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as fh:
            return fh.read()

    def list(self, prefix: str = "") -> list[str]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        names = self._call("listing", prefix, lambda: self._list_names(full))
        if self.prefix:  # "a/b" must not see "a/bc/...": only names under "a/b/"
            names = [n for n in names if n.startswith(self.prefix + "/")]
        return sorted(self._key(n) for n in names)

    def delete(self, keys: Iterable[str]) -> None:
        names = [self._name(k) for k in keys]
        if names:
            self._call("deleting", "", lambda: self._delete_names(names))

    def exists(self, key: str) -> bool:
        name = self._name(key)
        return self._call("checking", key, lambda: self._exists_name(name))
