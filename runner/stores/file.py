"""``file://`` store: fsync and atomic rename, so a crash never leaves a half-written object.

A write still running at the store's deadline (``Store.deadline_at``: a notice window's end, a
slow disk) is not renamed into place: it raises DeadlineExceeded and leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from runner.errors import ConfigError, StoreError
from runner.stores.base import DeadlineExceeded, Store


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(Store):
    """Objects are files under a local folder; keys are relative paths."""

    def __init__(self, uri: str) -> None:
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"checkpoint URI {uri!r} is not a file:// URI: use file:///absolute/path")
        path = unquote(parsed.path)
        if not path.startswith("/"):
            raise ConfigError(f"checkpoint URI {uri!r} must name an absolute path: use file:///absolute/path")
        self.uri = uri
        self.root = Path(path)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create checkpoint folder {self.root} ({exc.strerror}): "
                             "mount a writable folder there or choose another URI") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"checkpoint folder {self.root} is not writable: fix its permissions "
                             "or choose another URI")

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreError(f"key {key!r} escapes the checkpoint folder {self.root}")
        return path

    def _check_deadline(self, key: str) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(f"writing {self.root}/{key} could not finish before the notice window ends")

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        self._check_deadline(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            self._check_deadline(key)  # too late: the caller gave up on this write
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def write_bytes(self, key: str, data: bytes) -> None:
        with self.open_write(key) as fh:
            fh.write(data)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        with open(self._path(key), "rb") as fh:
            yield fh

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in files:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):  # leftovers of a killed write (.tmp) included: garbage
                    keys.append(key)
        return sorted(keys)

    def delete(self, keys: Iterable[str]) -> None:
        parents = set()
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            parents.add(path.parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while parent != self.root and parent.is_dir():
                leftovers = [p for p in parent.iterdir() if not p.name.endswith(".tmp")]
                if leftovers:
                    break
                for tmp in parent.iterdir():
                    tmp.unlink(missing_ok=True)
                parent.rmdir()
                parent = parent.parent

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()
