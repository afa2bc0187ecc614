"""Put a job's read-only inputs where the task expects them, before it starts.

The spec's ``data:`` names folders: on the local backend a folder of the host, mounted read-only
at ``/data/<name>`` by the runner (nothing to do here); elsewhere an object-store prefix
(``s3://``, ``gs://``, ``az://``), which the runner passes in ``RUNNER_DATA_SOURCES`` and which
:func:`stage_data` downloads into ``RUNNER_DATA_DIR/<name>`` (``/data/<name>``) before training,
logging the size and a progress line every few seconds.

Once per machine: with ``RUNNER_DATA_CACHE`` (a folder that outlives attempts on one machine,
mounted by backends that can), the data is downloaded there once, into a folder named after the
URI, and ``/data/<name>`` links to it; a ``.complete`` file lists what a finished download holds,
so a later attempt on the same machine starts at once. Every file is written under a temporary
name and renamed, so a download cut short by a preemption leaves only whole files, and the next
attempt fetches the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from runner import contract
from runner.errors import ConfigError

log = logging.getLogger("runner.task.staging")
PROGRESS_EVERY_S = 5.0
COMPLETE = ".complete"


def stage_data(environ: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Download every ``RUNNER_DATA_SOURCES`` prefix into ``RUNNER_DATA_DIR/<name>``; return name -> folder."""
    env = os.environ if environ is None else environ
    text = env.get(contract.DATA_SOURCES) or "{}"
    try:
        sources = json.loads(text)
    except ValueError:
        raise ConfigError(f"{contract.DATA_SOURCES} is not JSON ({text[:80]!r}): the runner sets it; "
                          "do not set it by hand") from None
    if not isinstance(sources, dict):
        raise ConfigError(f"{contract.DATA_SOURCES} must map names to URIs, got {type(sources).__name__}")
    root = Path(env.get(contract.DATA_DIR) or contract.CONTAINER_DATA_DIR)
    cache = env.get(contract.DATA_CACHE)
    staged: dict[str, Path] = {}
    for name, uri in sorted(sources.items()):
        target = root / str(name)
        folder = _cache_folder(Path(cache), str(name), str(uri)) if cache else target
        sync_prefix(str(uri), folder, str(name))
        if folder != target:
            _link(target, folder)
        staged[str(name)] = target
    return staged


def sync_prefix(uri: str, dest: Path, name: str = "data") -> Path:
    """Copy every object under ``uri`` into ``dest``: whole files only, those already there skipped."""
    from runner.stores import open_store

    store = open_store(uri)
    try:
        keys = [k for k in store.list("") if k != contract.HALT_KEY]
    except Exception as exc:  # noqa: BLE001 - any store failure is one line for the user
        raise ConfigError(f"data.{name}: cannot list {uri} ({type(exc).__name__}: {str(exc)[:160]}); "
                          "check the URI and the machine's credentials") from None
    if not keys:
        raise ConfigError(f"data.{name}: there is nothing under {uri}; upload the data there first")
    marker = dest / COMPLETE
    listing = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    if marker.is_file() and marker.read_text(errors="replace").strip() == listing:
        log.info("data %s: %d files from %s are already on this machine in %s", name, len(keys), uri, dest)
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data.{name}: cannot create {dest} ({exc.strerror}); the image must let its user "
                          f"write {dest.parent} (RUN mkdir -m 1777 {dest.parent})") from None
    log.info("data %s: staging %d files from %s into %s", name, len(keys), uri, dest)
    copied = skipped = size = 0
    started = last = time.monotonic()
    for n, key in enumerate(keys, 1):
        target = dest / key
        if target.is_file():
            skipped += 1
            size += target.stat().st_size
        else:
            data = store.read_bytes(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            copied += 1
            size += len(data)
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or n == len(keys):
            last = now
            rate = size / max(now - started, 1e-6) / 2**20
            log.info("data %s: %d/%d files (%d%%), %.1f MB, %.1f MB/s, %d already here",
                     name, n, len(keys), 100 * n // len(keys), size / 2**20, rate, skipped)
    marker.write_text(listing + "\n")
    log.info("data %s: %d files, %.1f MB in %s (%d downloaded, %d already here) in %.1fs",
             name, len(keys), size / 2**20, dest, copied, skipped, time.monotonic() - started)
    return dest


def _cache_folder(cache: Path, name: str, uri: str) -> Path:
    return cache / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def _link(target: Path, folder: Path) -> None:
    """Make ``target`` (``/data/<name>``) point at the cached ``folder``."""
    try:
        if target.is_symlink() or target.exists():
            if target.resolve() == folder.resolve():
                return
            raise ConfigError(f"{target} exists already and is not the staged data; remove it from the image")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(folder, target_is_directory=True)
    except OSError as exc:
        raise ConfigError(f"cannot link {target} to the staged data ({exc.strerror}); the image must let its "
                          f"user write {target.parent} (RUN mkdir -m 1777 {target.parent})") from None
