"""Mirror a local checkpoint folder to a checkpoint store as committed steps, and back.

One sync is one committed step, numbered by sync sequence::

    blobs/<sha256>              file contents, content-addressed: an unchanged file is uploaded once
    step-000007/index.json      relative path -> size, sha256, mode, format (``runner.exec.index``)
    step-000007/MANIFEST.json   written last (``runner.task.manifest.commit``): lists index.json
    progress.json               sync count, files, bytes, attempt timings

A sync uploads the blobs it lacks, then the index, then the manifest, so a sync cut anywhere
leaves at most a step without a manifest (ignored, removed later) and blobs nobody refers to
(collected later). Restore is ``manifest.recover`` (the same routine as ``runner.task``'s
resume): newest step first, every file downloaded into a staging folder and checked against its
size and sha256, and only then moved into place, so a damaged step falls back to the one below
it and never leaves a mix of files behind.

Only whole files are committed. While the command runs, a round waits while any file is open
for writing by another process (``openfiles``: a save in progress; a file held open longer
than ``long_open`` seconds, or only for appending, is a log and waits alone) and until no other
file changed for ``settle`` seconds. Then a file is *held* (the snapshot keeps its last good
version, or leaves it out if it never had one) when it is open for writing, changed while it was
read, shrank to nothing, or is no longer a whole file of the format it had (``formats``: a torch
zip, safetensors, a pickle, JSON), or the caller holds it (``hold``: the wrapper's files written by
a save a signal cut short). Standard library plus the store: no torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from runner.errors import ConfigError, CorruptCheckpoint
from runner.exec import formats
from runner.exec.index import (
    INDEX,
    PRIVATE_PREFIX,
    SHA,
    FileEntry,
    dump_index,
    fsync_tree,
    parse_index,
)
from runner.exec.openfiles import OpenForWriting
from runner.stores.base import Store
from runner.task import manifest as mf

log = logging.getLogger("runner.exec.sync")

BLOBS = "blobs/"
KIND = "exec-folder"
STAGING = ".runner-restore"
_CHUNK = 1 << 20
OpenFiles = Callable[..., Mapping[str, OpenForWriting]]  # (folder, pids=None): see openfiles.open_for_writing


class FolderChanged(Exception):
    """A file changed while it was read: the round is not a consistent snapshot."""


class _Torn(Exception):
    """This version of a file is not whole: keep its last good version."""


@dataclass
class SyncResult:
    """What one sync round did."""

    status: str  # "committed" | "unchanged" | "unsettled" | "busy" | "empty"
    step: int | None = None
    uploaded: int = 0  # blobs uploaded this round
    uploaded_bytes: int = 0
    files: int = 0
    bytes: int = 0
    held: dict[str, str] = field(default_factory=dict)  # files kept at their last good version: why


@dataclass
class _Cached:
    stat_key: tuple[int, int, int]  # size, mtime_ns, inode
    sha256: str
    format: str | None = None
    problem: str | None = None


@dataclass
class FolderSync:
    """Sync one local folder to one store; one instance per attempt, one round at a time."""

    store: Store
    folder: Path
    keep: int = 3
    settle: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)  # extra manifest fields (attempt, job)
    #: Files under the folder open for writing by other processes; None: not checked.
    open_files: OpenFiles | None = None
    long_open: float = 60.0  # seconds open for writing after which a file counts as a log
    syncs: int = 0  # steps committed by this instance
    last_step: int | None = None  # newest committed step (restored or synced)
    restored_step: int | None = None
    _committed: dict[str, FileEntry] | None = None  # what the newest committed step holds
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _open_since: dict[str, float] = field(default_factory=dict)
    _held_seen: dict[str, str] = field(default_factory=dict)
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
            self._make_folder()
            staging = self.folder / STAGING
            shutil.rmtree(staging, ignore_errors=True)
            self._next_step = max(mf.list_steps(self.store).steps, default=0) + 1

            def load(prefix: str, manifest: dict[str, Any]) -> dict[str, FileEntry]:
                shutil.rmtree(staging, ignore_errors=True)
                entries = self._index_of(prefix, manifest)
                self._download_all(entries, staging)
                return entries

            try:
                found = mf.recover(self.store, load, what="sync")
                if found is not None:
                    self._move_into_place(staging, found.value)
                    self._committed, self.last_step = found.value, found.step
                    self.restored_step = found.step
                    log.info("restored %s of %s: %d files, %d bytes into %s", mf.step_prefix(found.step),
                             self.store.describe(), len(found.value), sum(e.size for e in found.value.values()),
                             self.folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return None if found is None else found.step

    def _make_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not os.access(self.folder, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied", str(self.folder))
        except OSError as exc:
            parent = next((p for p in [self.folder, *self.folder.parents] if p.exists()), self.folder)
            try:
                owner = f"owned by uid {parent.stat().st_uid}"
            except OSError:
                owner = "not readable"
            raise ConfigError(
                f"cannot use the sync folder {self.folder}: {exc.strerror or exc} (this process runs as uid "
                f"{os.getuid()}; {parent} is {owner}): create it for that user in the image "
                f"(RUN mkdir -p {self.folder} && chown {os.getuid()} {self.folder}) or set sync.dir to a "
                "folder the user can write") from None

    def _index_of(self, prefix: str, manifest: dict[str, Any] | None = None) -> dict[str, FileEntry]:
        manifest = manifest if manifest is not None else mf.read_manifest(self.store, prefix)
        if INDEX not in manifest["files"]:
            raise CorruptCheckpoint(f"{prefix}/{mf.MANIFEST} does not list {INDEX}: not a folder snapshot")
        return parse_index(mf.read_verified(self.store, prefix, manifest, INDEX), f"{prefix}/{INDEX}")

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
            self._cache[rel] = _Cached(_key(st), entry.sha256, entry.format)
        fsync_tree(self.folder)

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

    def saving(self, pids: list[int] | None = None) -> list[str]:
        """Return the files a save is writing now: open for writing (by ``pids``, else by any other process),
        not only appending, not held open for long."""
        if self.open_files is None:
            return []
        writing = self.open_files(self.folder) if pids is None else self.open_files(self.folder, pids=pids)
        now = time.monotonic()
        self._open_since = {rel: self._open_since.get(rel, now) for rel in writing}
        return sorted(rel for rel, w in writing.items() if not w.append and now - self._open_since[rel] < self.long_open)

    def unsettled(self) -> list[str]:
        """Return the files that changed less than ``settle`` seconds ago, those open for writing left out
        (``saving`` names a save's; one held open for long is a log): a save between two files is still a save."""
        now = time.time()
        return sorted(rel for rel, st in self.scan().items()
                      if rel not in self._open_since and now - st.st_mtime < self.settle)

    def changed_since(self, baseline: Mapping[str, os.stat_result] | None) -> set[str]:
        """Return the files that are new or changed since ``baseline`` (a ``scan``); None: since the
        newest committed snapshot (every file, when there is none)."""
        found = set()
        for rel, st in self.scan().items():
            if baseline is not None:
                before = baseline.get(rel)
                if before is None or _key(before) != _key(st):
                    found.add(rel)
                continue
            entry, cached = (self._committed or {}).get(rel), self._cache.get(rel)
            if entry is None or cached is None or cached.stat_key != _key(st) or cached.sha256 != entry.sha256:
                found.add(rel)
        return found

    def sync(self, final: bool = False, hold: Mapping[str, str] | None = None) -> SyncResult:
        """Commit the folder's whole files as the next step unless nothing changed; see the module docstring.

        ``final``: the command has exited, so neither wait for saves nor for the folder to settle.
        ``hold``: files not to commit this round, with why (their last good version is kept).
        """
        with self._lock:
            stats = self.scan()
            if self.saving() and not final:
                return SyncResult("busy")
            writing = set(self._open_since)
            quiet = [st.st_mtime for rel, st in stats.items() if rel not in writing]
            if not final and quiet and time.time() - max(quiet) < self.settle:
                return SyncResult("unsettled")
            entries: dict[str, FileEntry] = {}
            held: dict[str, str] = {}
            for rel, st in stats.items():
                try:
                    if hold and rel in hold:
                        raise _Torn(hold[rel])
                    if rel in writing:
                        raise _Torn("open for writing")
                    entries[rel] = self._entry(rel, st)
                except _Torn as exc:
                    held[rel] = str(exc)
                except FolderChanged:
                    if not final:
                        raise
                    held[rel] = "it changed while it was read"
            for rel, why in held.items():
                if self._committed is not None and rel in self._committed:
                    entries[rel] = self._committed[rel]  # its last good version
                self._log_held(rel, why, stats[rel])
            return self._commit_round(entries, held)

    def _commit_round(self, entries: dict[str, FileEntry], held: dict[str, str]) -> SyncResult:
        total = sum(e.size for e in entries.values())
        if self._committed is not None and entries == self._committed:
            return SyncResult("unchanged", self.last_step, files=len(entries), bytes=total, held=held)
        if not entries and self._committed is None:
            return SyncResult("empty", held=held)
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
        return SyncResult("committed", step, uploaded, uploaded_bytes, len(entries), total, held)

    def _entry(self, rel: str, st: os.stat_result) -> FileEntry:
        """Return the entry of a whole file; raise _Torn when this version must not be committed."""
        key = _key(st)
        cached = self._cache.get(rel)
        if cached is None or cached.stat_key != key:
            sha = self._hash(rel, st)
            previous = (self._committed or {}).get(rel)
            path = self.folder / rel
            fmt = previous.format if previous is not None and previous.format else formats.sniff(path)
            problem = formats.problem(path, fmt, st.st_size)
            if problem is None and previous is not None and previous.size > 0 and st.st_size == 0:
                problem = "it shrank to nothing"
            if _key(os.stat(path)) != key:
                raise FolderChanged(f"{rel} changed while it was read")
            cached = self._cache[rel] = _Cached(key, sha, fmt, problem)
        if cached.problem is not None:
            raise _Torn(cached.problem)
        return FileEntry(st.st_size, cached.sha256, stat.S_IMODE(st.st_mode), cached.format)

    def _log_held(self, rel: str, why: str, st: os.stat_result) -> None:
        seen = f"{why}:{st.st_size}:{st.st_mtime_ns}"
        if self._held_seen.get(rel) != seen:
            self._held_seen[rel] = seen
            kept = "keeping its last good version" if self._committed and rel in self._committed \
                else "leaving it out until it is whole"
            log.info("not committing %s: %s; %s", rel, why, kept)

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
        if _key(after) != _key(before):
            raise FolderChanged(f"{rel} changed while it was read")
        return sha.hexdigest()

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
        index = dump_index(entries)

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
        """Keep the newest ``keep`` committed steps (``manifest.prune``); delete blobs no kept step refers to."""
        referenced: set[str] = set()
        for step in mf.prune(self.store, self.keep):
            try:
                referenced |= {e.sha256 for e in self._index_of(mf.step_prefix(step)).values()}
            except (FileNotFoundError, CorruptCheckpoint):
                continue  # cannot be restored: its blobs are not worth keeping
        stored = {k[len(BLOBS):] for k in self.store.list(BLOBS)}
        # Leftovers of a killed file:// write (.<sha>.XXXX.tmp) are garbage too: this is the only writer.
        garbage = sorted(b for b in stored - referenced if SHA.match(b) or (b.startswith(".") and b.endswith(".tmp")))
        if garbage:
            self.store.delete(BLOBS + b for b in garbage)
        self._blobs = stored - set(garbage)


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


__all__ = ["BLOBS", "INDEX", "FileEntry", "FolderChanged", "FolderSync", "SyncResult", "parse_index"]
