"""Which files under a folder are open for writing right now, by any process but this one (Linux ``/proc``).

``runner exec`` asks before each sync: a file that the command (or a process it started, or one
it left behind) holds open for writing is a save in progress. ``/proc/<pid>/fd`` names each open
file and ``/proc/<pid>/fdinfo/<fd>`` its open flags. Processes this user may not inspect are
skipped (in a container they are not the user's). Where ``/proc`` is missing nothing is reported,
and the other checks (quiet for ``settle`` seconds, a whole format) still apply.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_ACCESS_MODE = 0o3
_PROC = Path("/proc")


@dataclass(frozen=True)
class OpenForWriting:
    """One file open for writing: the first process seen holding it, and whether only to append."""

    pid: int
    append: bool


def process_tree(root: int, proc: Path = _PROC) -> list[int]:
    """Return ``root`` and every process below it (``/proc/<pid>/task/<tid>/children``): a cheap look
    at one command's processes, where scanning all of ``/proc`` can take a few hundred ms on a busy host."""
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        try:
            for tid in os.listdir(proc / str(pid) / "task"):
                with open(proc / str(pid) / "task" / tid / "children") as fh:
                    todo += [int(child) for child in fh.read().split()]
        except (OSError, ValueError):
            continue
    return tree


def open_for_writing(folder: Path, proc: Path = _PROC, pids: Iterable[int] | None = None) -> dict[str, OpenForWriting]:
    """Return the files under ``folder`` (relative paths) that another process (of ``pids``, else any)
    has open for writing."""
    root = os.path.realpath(folder) + os.sep
    found: dict[str, OpenForWriting] = {}
    me = os.getpid()
    if pids is None:
        try:
            pids = [int(name) for name in os.listdir(proc) if name.isdigit()]
        except OSError:
            return found
    for pid in pids:
        if pid == me:
            continue
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if not target.startswith(root):
                continue
            flags = _flags(proc / str(pid) / "fdinfo" / fd)
            if flags is None or flags & _ACCESS_MODE not in (os.O_WRONLY, os.O_RDWR):
                continue
            rel = target[len(root):].removesuffix(" (deleted)")
            previous = found.get(rel)
            append = bool(flags & os.O_APPEND) and (previous is None or previous.append)
            found[rel] = OpenForWriting(previous.pid if previous else pid, append)
    return found


def _flags(fdinfo: Path) -> int | None:
    try:
        with open(fdinfo) as fh:
            for line in fh:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None
