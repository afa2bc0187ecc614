"""The index of one folder snapshot (``step-N/index.json``): what each file is, by content.

    {"format": 1, "files": {"last.pt": {"size": 12, "sha256": "...", "mode": 420, "format": "zip"}}}

``format`` is what ``runner.exec.formats`` recognised when the file was committed; a later
version of the file must still be a whole file of that format to replace it. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from runner.errors import CorruptCheckpoint
from runner.exec.formats import FORMATS

INDEX = "index.json"
#: Names the wrapper keeps for itself inside the synced folder; never synced.
PRIVATE_PREFIX = ".runner-"
SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot."""

    size: int
    sha256: str
    mode: int = 0o644
    format: str | None = None


def dump_index(entries: dict[str, FileEntry]) -> bytes:
    """Return the index of ``entries`` as JSON bytes (sorted, so equal folders give equal bytes)."""
    files = {rel: {"size": e.size, "sha256": e.sha256, "mode": e.mode, **({"format": e.format} if e.format else {})}
             for rel, e in sorted(entries.items())}
    return json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True).encode()


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
                or not isinstance(entry.get("sha256"), str) or not SHA.match(entry["sha256"])):
            raise CorruptCheckpoint(f"{where} entry for {rel!r} lacks size or sha256")
        mode = entry.get("mode", 0o644)
        fmt = entry.get("format")
        entries[rel] = FileEntry(entry["size"], entry["sha256"], mode if isinstance(mode, int) else 0o644,
                                 fmt if fmt in FORMATS else None)
    return entries


def fsync_tree(folder: Path) -> None:
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
