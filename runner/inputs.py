"""Reading files that users hand the runner (job specs, price files, schedules): safely, in one way.

A path must name a regular file (never a device, a pipe or a folder, which could hang or flood
the CLI) of at most ``MAX_BYTES``; YAML is read with a safe loader that refuses a key written twice.
Every problem is one line naming the file and the fix, raised as the caller's error class.
"""

from __future__ import annotations

import os
import stat
import typing
from pathlib import Path
from typing import Any

import yaml

from runner.errors import RunnerError

#: The largest file read: a job spec or price file is a few KB; 4 MB leaves room and bounds memory.
MAX_BYTES = 4 << 20


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: 6x faster


class UniqueKeyLoader(_SafeLoader):  # type: ignore[misc]
    """A safe loader (libyaml's when installed) that refuses a key written twice in one mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges; later keys win
            continue
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"field {key!r} is written twice", key_node.start_mark
            )
        if isinstance(key, typing.Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_text(path: str | Path, error: type[RunnerError], what: str = "file",
              limit: int = MAX_BYTES) -> str:
    """Return a small regular file's text (UTF-8), or raise ``error`` with one line naming the fix."""
    label = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise error(f"{label}: no such {what}; check the path") from None
    except IsADirectoryError:
        raise error(f"{label}: is a folder; give a {what} such as {_example(what)}") from None
    except OSError as exc:
        raise error(f"{label}: cannot be read ({exc.strerror or type(exc).__name__}); check the file") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{label}: is a folder; give a {what} such as {_example(what)}")
        if not stat.S_ISREG(info.st_mode):
            kind = "a pipe" if stat.S_ISFIFO(info.st_mode) else "a device" if (
                stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)) else "not a regular file"
            raise error(f"{label}: is {kind}; give a {what} saved as a regular file")
        if info.st_size > limit:
            raise error(f"{label}: is {_size(info.st_size)}, more than a {what} can be ({_size(limit)}); "
                        "check the path")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"{label}: cannot be read ({exc.strerror or type(exc).__name__}); check the file") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > limit:
        raise error(f"{label}: is more than a {what} can be ({_size(limit)}); check the path")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{label}: is not UTF-8 text; save the {what} as UTF-8") from None


def load_yaml(text: str, label: str, error: type[RunnerError]) -> Any:
    """Parse YAML text with :class:`UniqueKeyLoader`; errors are one line with the position."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader (or CSafeLoader) subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(" ".join(f"{label}: not valid YAML{where}: {problem}; fix the syntax".split())) from None
    except RecursionError:
        raise error(f"{label}: is nested too deeply; fix the file") from None


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{max(1, n >> 10)} KB"


def _example(what: str) -> str:
    return "jobs/cifar.yaml" if "spec" in what else "prices.yaml" if "price" in what else "a .yaml file"
