"""The safe checkpoint layout on any store, without torch.

    step-000120/<files>          immutable once written
    step-000120/MANIFEST.json    written last: files with size and sha256, step, epoch, created_at
    final/<files> + final/MANIFEST.json   the finished result, same rules
    progress.json, checkpoint.txt         progress for people and tools

A step counts only when its manifest exists, parses, names only files inside its own folder,
and every file matches its size and sha256. :func:`recover` is the one routine that finds the
newest such step, for ``runner.task`` (a torch state) and ``runner exec`` (a folder snapshot)
alike; :func:`prune` the one that keeps the newest K. Everything here is used by the task side
and by the control plane (``runner status`` reads the final manifest).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, TypeVar

from runner.contract import FINAL, MANIFEST, RESTORE_FAILED, step_prefix  # noqa: F401 - FINAL: re-exported
from runner.errors import CorruptCheckpoint, StoreError
from runner.stores.base import Store

log = logging.getLogger("runner.checkpoint")
T = TypeVar("T")
FORMAT = 1
_STEP_RE = re.compile(r"^step-(\d{6,})$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0
        #: The store's own error (a full disk), kept because torch.save hides it in a RuntimeError.
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += view.nbytes
        try:
            self.inner.write(view)
        except OSError as exc:
            self.error = exc
            raise
        return view.nbytes


Writer = Callable[[BinaryIO], None]


def commit(store: Store, prefix: str, files: Mapping[str, Writer], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``files`` under ``prefix``, then the manifest; return the manifest."""
    entries: dict[str, dict[str, Any]] = {}
    for name, write in files.items():
        if not _SAFE_NAME.match(name):
            raise ValueError(f"checkpoint file name {name!r} is not a plain file name")
        with store.open_write(f"{prefix}/{name}") as fh:
            hw = HashingWriter(fh)
            try:
                write(hw)  # type: ignore[arg-type]
            except Exception:
                if hw.error is not None:  # "No space left on device", not torch's "enforce fail"
                    raise hw.error from None
                raise
        entries[name] = {"size": hw.size, "sha256": hw.sha.hexdigest()}
    manifest = {"format": FORMAT, **meta, "files": entries, "created_at": time.time()}
    store.write_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def read_manifest(store: Store, prefix: str) -> dict[str, Any]:
    """Return the validated manifest of ``prefix``; CorruptCheckpoint when it is unusable."""
    raw = store.read_bytes(f"{prefix}/{MANIFEST}")  # FileNotFoundError: not committed
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(f"{prefix}/{MANIFEST} is not valid JSON ({exc})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise CorruptCheckpoint(f"{prefix}/{MANIFEST} lists no files")
    for name, entry in files.items():
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise CorruptCheckpoint(f"{prefix}/{MANIFEST} names {name!r}, a path outside its step folder")
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("sha256"), str)):
            raise CorruptCheckpoint(f"{prefix}/{MANIFEST} entry for {name!r} lacks size or sha256")
    return manifest


def read_verified(store: Store, prefix: str, manifest: Mapping[str, Any], name: str) -> bytes:
    """Return a file's bytes after checking its size and sha256 against the manifest."""
    entry = manifest["files"][name]
    try:
        data = store.read_bytes(f"{prefix}/{name}")
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{prefix}/{name} is listed in the manifest but missing") from None
    if len(data) != entry["size"]:
        raise CorruptCheckpoint(f"{prefix}/{name} has {len(data)} bytes, the manifest says {entry['size']}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CorruptCheckpoint(f"{prefix}/{name} does not match its sha256 in the manifest")
    return data


@dataclass(frozen=True)
class StepListing:
    """Steps found under a store: key sets per step number."""

    steps: dict[int, list[str]]

    def newest_first(self) -> list[int]:
        return sorted(self.steps, reverse=True)


def list_steps(store: Store) -> StepListing:
    """Group every ``step-N/...`` key by step number."""
    steps: dict[int, list[str]] = {}
    for key in store.list("step-"):
        head, _, _rest = key.partition("/")
        m = _STEP_RE.match(head)
        if m:
            steps.setdefault(int(m.group(1)), []).append(key)
    return StepListing(steps)


def is_committed(keys: Iterable[str]) -> bool:
    """Return whether a step's keys include its manifest: the one test of "committed" (valid or not)."""
    return any(k.endswith("/" + MANIFEST) for k in keys)


def is_marked(keys: Iterable[str]) -> bool:
    """Return whether ``runner exec`` marked the step: its command failed right after restoring it."""
    return any(k.endswith("/" + RESTORE_FAILED) for k in keys)


@dataclass(frozen=True)
class Recovered(Generic[T]):
    """The step :func:`recover` found: its number, its manifest and what ``load`` made of it."""

    step: int
    manifest: dict[str, Any]
    value: T


def recover(store: Store, load: Callable[[str, dict[str, Any]], T], what: str = "write") -> Recovered[T] | None:
    """Return the newest step whose manifest checks out and which ``load(prefix, manifest)`` accepts.

    Steps are tried newest first; one marked :data:`RESTORE_FAILED` is tried only after every
    unmarked one. A step without a manifest (its ``what`` never finished) or that is corrupt
    (``load`` raised CorruptCheckpoint) gets one warning line and is deleted, and so is every step
    without a manifest below the one returned (a prune cut short). None when nothing is usable.
    """
    listing = list_steps(store)
    order = sorted(listing.steps, key=lambda s: (not is_marked(listing.steps[s]), s), reverse=True)
    bad: list[int] = []
    found: Recovered[T] | None = None
    for step in order:
        prefix = step_prefix(step)
        try:
            manifest = read_manifest(store, prefix)
            found = Recovered(step, manifest, load(prefix, manifest))
            break
        except FileNotFoundError:
            log.warning("ignoring %s: no manifest, the %s never finished; removing it", prefix, what)
        except CorruptCheckpoint as exc:
            log.warning("ignoring %s: %s; removing it and trying the previous step", prefix, exc)
        bad.append(step)
    if found is not None:
        if is_marked(listing.steps[found.step]) and len(order) > 1:
            log.warning("%s is the last usable step although the command failed right after restoring it",
                        step_prefix(found.step))
        bad += [s for s in listing.steps if s < found.step and not is_committed(listing.steps[s])]
    for step in bad:
        try:
            delete_step(store, listing.steps[step])
        except (OSError, StoreError) as exc:
            log.warning("could not remove %s: %s", step_prefix(step), exc)
    return found


def prune(store: Store, keep: int) -> list[int]:
    """Delete committed steps beyond the newest ``keep`` and every step below them; return the kept ones."""
    listing = list_steps(store)
    committed = [s for s in listing.newest_first() if is_committed(listing.steps[s])]
    if len(committed) > keep:
        oldest_kept = committed[keep - 1]
        for step in listing.newest_first():
            if step < oldest_kept:
                delete_step(store, listing.steps[step])
    return committed[:keep]


def mark_restore_failed(store: Store, step: int, detail: Mapping[str, Any]) -> None:
    """Mark ``step``: the command failed right after restoring it, so :func:`recover` tries it last."""
    store.write_bytes(f"{step_prefix(step)}/{RESTORE_FAILED}", json.dumps({**detail, "at": time.time()}).encode())


def delete_step(store: Store, keys: list[str]) -> None:
    """Delete a step's keys, manifest first so a crash midway leaves an ignored step."""
    manifests = [k for k in keys if k.endswith("/" + MANIFEST)]
    store.delete(manifests)
    store.delete([k for k in keys if k not in manifests])


def write_progress(store: Store, progress: Mapping[str, Any]) -> None:
    """Write ``progress.json`` and the two-column ``checkpoint.txt`` (pandas.read_csv reads it)."""
    doc = {**progress, "updated_at": time.time()}
    store.write_bytes("progress.json", json.dumps(doc, indent=1, sort_keys=True).encode())
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["key", "value"])
    for key, value in sorted(_flatten(doc).items()):
        out.writerow([key, value])
    store.write_bytes("checkpoint.txt", buf.getvalue().encode())


def read_progress(store: Store) -> dict[str, Any] | None:
    """Return ``progress.json`` or None when absent or unreadable."""
    try:
        doc = json.loads(store.read_bytes("progress.json"))
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
