"""Mirror a local checkpoint folder to a checkpoint store as committed steps, and back.

One sync is one committed step, numbered by sync sequence::

    blobs/<sha256>              file contents, content-addressed: an unchanged file is uploaded once
    step-000007/index.json      relative path -> size, sha256, mode, for every file of the folder
    step-000007/MANIFEST.json   written last (``runner.task.manifest.commit``): lists index.json
    progress.json               sync count, files, bytes, attempt timings

A sync uploads the blobs it lacks, then the index, then the manifest, so a sync cut anywhere
leaves at most a step without a manifest (ignored, removed later) and blobs nobody refers to
(collected later). Restore walks steps newest first, downloads every file of the step into a
staging folder checking size and sha256, and only then moves them into place: a step with a
missing or damaged blob is skipped for the one below it, and never leaves a mix of files behind.

A folder that is being written is not a checkpoint: a sync while the child runs waits until no
file changed for ``settle`` seconds, and a file that changes while it is read aborts the round
(nothing committed; the next round tries again). Standard library plus the store: no torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from runner.errors import CorruptCheckpoint, StoreError
from runner.stores.base import Store
from runner.task import manifest as mf

log = logging.getLogger("runner.exec.sync")

INDEX = "index.json"
BLOBS = "blobs/"
KIND = "exec-folder"
#: Names the wrapper keeps for itself inside the synced folder; never synced.
PRIVATE_PREFIX = ".runner-"
STAGING = ".runner-restore"
_CHUNK = 1 << 20
_SHA = re.compile(r"^[0-9a-f]{64}$")


class FolderChanged(Exception):
    """A file changed while it was read: the round is not a consistent snapshot."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot."""

    size: int
    sha256: str
    mode: int = 0o644


@dataclass
class SyncResult:
    """What one sync round did."""

    status: str  # "committed" | "unchanged" | "unsettled" | "empty"
    step: int | None = None
    uploaded: int = 0  # blobs uploaded this round
    uploaded_bytes: int = 0
    files: int = 0
    bytes: int = 0


@dataclass
class _Cached:
    stat_key: tuple[int, int, int]  # size, mtime_ns, inode
    sha256: str


@dataclass
class FolderSync:
    """Sync one local folder to one store; one instance per attempt, one round at a time."""

    store: Store
    folder: Path
    keep: int = 3
    settle: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)  # extra manifest fields (attempt, job)
    syncs: int = 0  # steps committed by this instance
    last_step: int | None = None  # newest committed step (restored or synced)
    _committed: dict[str, FileEntry] | None = None  # what the newest committed step holds
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _blobs: set[str] | None = None
    _next_step: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if self.keep < 1:
            raise ValueError("keep must be 1 or more")

    # -- restore ---------------------------------------------------------------------------
    def restore(self) -> int | None:
        """Put the newest valid snapshot into the folder; return its step, or None if there is none."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            staging = self.folder / STAGING
            shutil.rmtree(staging, ignore_errors=True)
            listing = mf.list_steps(self.store)
            self._next_step = max(listing.steps, default=0) + 1
            bad: list[int] = []
            found: int | None = None
            for step in listing.newest_first():
                prefix = mf.step_prefix(step)
                try:
                    entries = self._read_index(prefix)
                    self._download_all(entries, staging)
                    found = step
                    break
                except FileNotFoundError:
                    log.warning("ignoring %s: no manifest, the sync never finished; removing it", prefix)
                except CorruptCheckpoint as exc:
                    log.warning("ignoring %s: %s; removing it and trying the previous step", prefix, exc)
                shutil.rmtree(staging, ignore_errors=True)
                bad.append(step)
            if found is not None:
                self._move_into_place(staging, entries)
                self._committed, self.last_step = entries, found
                bad += [s for s in listing.steps if s < found and not _committed(listing.steps[s])]
                log.info("restored %s of %s: %d files, %d bytes into %s", mf.step_prefix(found),
                         self.store.describe(), len(entries), sum(e.size for e in entries.values()), self.folder)
            shutil.rmtree(staging, ignore_errors=True)
            for step in bad:
                try:
                    mf.delete_step(self.store, listing.steps[step])
                except (OSError, StoreError) as exc:
                    log.warning("could not remove %s: %s", mf.step_prefix(step), exc)
            return found

    def _read_index(self, prefix: str) -> dict[str, FileEntry]:
        manifest = mf.read_manifest(self.store, prefix)  # FileNotFoundError: never committed
        if INDEX not in manifest["files"]:
            raise CorruptCheckpoint(f"{prefix}/{mf.MANIFEST} does not list {INDEX}: not a folder snapshot")
        raw = mf.read_verified(self.store, prefix, manifest, INDEX)
        return parse_index(raw, f"{prefix}/{INDEX}")

    def _download_all(self, entries: Mapping[str, FileEntry], staging: Path) -> None:
        for rel, entry in entries.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            size = 0
            try:
                with self.store.open_read(BLOBS + entry.sha256) as src, open(target, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        sha.update(chunk)
                        size += len(chunk)
                        dst.write(chunk)
            except FileNotFoundError:
                raise CorruptCheckpoint(f"{rel} (blob {entry.sha256[:12]}) is missing") from None
            if size != entry.size or sha.hexdigest() != entry.sha256:
                raise CorruptCheckpoint(f"{rel} does not match its size and sha256 in the index")
            os.chmod(target, entry.mode & 0o777)

    def _move_into_place(self, staging: Path, entries: Mapping[str, FileEntry]) -> None:
        for rel, entry in entries.items():
            dest = self.folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(staging / rel, dest)
            st = dest.stat()
            self._cache[rel] = _Cached((st.st_size, st.st_mtime_ns, st.st_ino), entry.sha256)
        _fsync_tree(self.folder)

    # -- sync ------------------------------------------------------------------------------
    def scan(self) -> dict[str, os.stat_result]:
        """Return every regular file under the folder (relative path -> stat), private ones left out."""
        found: dict[str, os.stat_result] = {}
        if not self.folder.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(self.folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(PRIVATE_PREFIX))
            for name in filenames:
                if name.startswith(PRIVATE_PREFIX):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue  # removed while listing
                if stat.S_ISREG(st.st_mode):
                    found[os.path.relpath(path, self.folder).replace(os.sep, "/")] = st
        return found

    def sync(self, final: bool = False) -> SyncResult:
        """Commit the folder as the next step unless it is unchanged; see the module docstring.

        ``final``: the writer has exited, so skip the settle wait (a change while reading still aborts).
        """
        with self._lock:
            stats = self.scan()
            if not final and stats:
                newest = max(st.st_mtime for st in stats.values())
                if time.time() - newest < self.settle:
                    return SyncResult("unsettled")
            entries: dict[str, FileEntry] = {}
            for rel, st in stats.items():
                key = (st.st_size, st.st_mtime_ns, st.st_ino)
                cached = self._cache.get(rel)
                sha = cached.sha256 if cached and cached.stat_key == key else self._hash(rel, st)
                entries[rel] = FileEntry(st.st_size, sha, stat.S_IMODE(st.st_mode))
            total = sum(e.size for e in entries.values())
            if self._committed is not None and entries == self._committed:
                return SyncResult("unchanged", self.last_step, files=len(entries), bytes=total)
            if not entries and self._committed is None:
                return SyncResult("empty")
            uploaded = uploaded_bytes = 0
            known = self._known_blobs()
            for rel, entry in entries.items():
                if entry.sha256 in known:
                    continue
                self._upload(rel, entry)
                known.add(entry.sha256)
                uploaded += 1
                uploaded_bytes += entry.size
            step = self._commit(entries)
            self._prune()
            return SyncResult("committed", step, uploaded, uploaded_bytes, len(entries), total)

    def _hash(self, rel: str, before: os.stat_result) -> str:
        path = self.folder / rel
        sha = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    sha.update(chunk)
            after = os.stat(path)
        except FileNotFoundError:
            raise FolderChanged(f"{rel} was removed while it was read") from None
        if (after.st_size, after.st_mtime_ns, after.st_ino) != (before.st_size, before.st_mtime_ns, before.st_ino):
            raise FolderChanged(f"{rel} changed while it was read")
        digest = sha.hexdigest()
        self._cache[rel] = _Cached((before.st_size, before.st_mtime_ns, before.st_ino), digest)
        return digest

    def _upload(self, rel: str, entry: FileEntry) -> None:
        """Copy one file to its blob; a file that no longer matches its hash uploads nothing."""
        try:
            with open(self.folder / rel, "rb") as src, self.store.open_write(BLOBS + entry.sha256) as dst:
                sha = hashlib.sha256()
                while chunk := src.read(_CHUNK):
                    sha.update(chunk)
                    dst.write(chunk)
                if sha.hexdigest() != entry.sha256:  # raising inside open_write: nothing is written
                    raise FolderChanged(f"{rel} changed while it was uploaded")
        except FileNotFoundError:
            raise FolderChanged(f"{rel} was removed before it was uploaded") from None

    def _commit(self, entries: dict[str, FileEntry]) -> int:
        if self._next_step is None:
            self._next_step = max(mf.list_steps(self.store).steps, default=0) + 1
        step = self._next_step
        prefix = mf.step_prefix(step)
        leftovers = mf.list_steps(self.store).steps.get(step)
        if leftovers:  # a killed sync of an earlier attempt used this number: clear it first
            mf.delete_step(self.store, leftovers)
        index = json.dumps({"format": 1, "files": {rel: {"size": e.size, "sha256": e.sha256, "mode": e.mode}
                                                   for rel, e in sorted(entries.items())}},
                           indent=1, sort_keys=True).encode()

        def write_index(fh: BinaryIO) -> None:
            fh.write(index)

        meta = {**self.meta, "kind": KIND, "step": step, "file_count": len(entries),
                "bytes": sum(e.size for e in entries.values())}
        mf.commit(self.store, prefix, {INDEX: write_index}, meta)
        self._committed, self.last_step, self._next_step = dict(entries), step, step + 1
        self.syncs += 1
        return step

    def _known_blobs(self) -> set[str]:
        if self._blobs is None:
            self._blobs = {k[len(BLOBS):] for k in self.store.list(BLOBS)}
        return self._blobs

    def _prune(self) -> None:
        """Keep the newest ``keep`` committed steps; then delete blobs that no kept step refers to."""
        listing = mf.list_steps(self.store)
        committed = [s for s in listing.newest_first() if _committed(listing.steps[s])]
        if len(committed) > self.keep:
            oldest_kept = committed[self.keep - 1]
            for step in listing.newest_first():
                if step < oldest_kept:
                    mf.delete_step(self.store, listing.steps[step])
            committed = committed[: self.keep]
        referenced: set[str] = set()
        for step in committed:
            try:
                referenced |= {e.sha256 for e in self._read_index(mf.step_prefix(step)).values()}
            except (FileNotFoundError, CorruptCheckpoint):
                continue  # cannot be restored: its blobs are not worth keeping
        stored = {k[len(BLOBS):] for k in self.store.list(BLOBS)}
        # Leftovers of a killed file:// write (.<sha>.XXXX.tmp) are garbage too: this is the only writer.
        garbage = sorted(b for b in stored - referenced if _SHA.match(b) or (b.startswith(".") and b.endswith(".tmp")))
        if garbage:
            self.store.delete(BLOBS + b for b in garbage)
        self._blobs = stored - set(garbage)


def parse_index(raw: bytes, where: str) -> dict[str, FileEntry]:
    """Return the entries of an index; CorruptCheckpoint when it is malformed or names unsafe paths."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(f"{where} is not valid JSON ({exc})") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        raise CorruptCheckpoint(f"{where} lists no files")
    entries: dict[str, FileEntry] = {}
    for rel, entry in files.items():
        parts = rel.split("/") if isinstance(rel, str) else []
        if (not parts or rel.startswith("/") or any(p in ("", ".", "..") for p in parts)
                or parts[0].startswith(PRIVATE_PREFIX)):
            raise CorruptCheckpoint(f"{where} names {rel!r}, a path outside the folder")
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("sha256"), str) or not _SHA.match(entry["sha256"])):
            raise CorruptCheckpoint(f"{where} entry for {rel!r} lacks size or sha256")
        mode = entry.get("mode", 0o644)
        entries[rel] = FileEntry(entry["size"], entry["sha256"], mode if isinstance(mode, int) else 0o644)
    return entries


def _committed(keys: list[str]) -> bool:
    return any(k.endswith("/" + mf.MANIFEST) for k in keys)


def _fsync_tree(folder: Path) -> None:
    """Flush restored files and folders to disk (a crash right after restore keeps them)."""
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


__all__ = ["FileEntry", "FolderChanged", "FolderSync", "SyncResult", "parse_index"]
