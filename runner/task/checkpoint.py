"""Save, find and load checkpoints of torch state on any store, safely.

Saving writes ``step-N/state.pt`` then ``step-N/MANIFEST.json`` (see ``manifest``), prunes to the
last K committed steps and updates the progress files. Loading walks steps newest first and
takes the first whose manifest and sha256 check out; partial or corrupt steps get one warning
line each and are deleted. Loading uses ``torch.load(weights_only=True)``: no code runs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch

from runner.errors import CorruptCheckpoint
from runner.stores.base import Store
from runner.task import manifest as mf

STATE_FILE = "state.pt"
WEIGHTS_FILE = "weights.pt"


@dataclass(frozen=True)
class Loaded:
    """A checkpoint read back: its step, manifest and state."""

    step: int
    manifest: dict[str, Any]
    state: dict[str, Any]


def _torch_load(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, an unsafe pickle: both mean "not usable"
        raise CorruptCheckpoint(f"{where} cannot be loaded safely ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    if not isinstance(obj, dict):
        raise CorruptCheckpoint(f"{where} does not hold a state dict")
    return obj


def write_step(store: Store, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int) -> dict[str, Any]:
    """Commit one step, prune to ``keep`` committed steps, update progress; return the manifest."""
    prefix = mf.step_prefix(step)
    leftovers = mf.list_steps(store).steps.get(step)
    if leftovers:  # an earlier attempt died writing this very step: clear it first
        mf.delete_step(store, leftovers)
    progress = meta.get("progress")
    manifest = mf.commit(store, prefix, {STATE_FILE: lambda fh: torch.save(state, fh)},
                         {k: v for k, v in meta.items() if k != "progress"} | {"step": step})
    prune(store, keep)
    if progress is not None:
        mf.write_progress(store, progress)
    return manifest


def prune(store: Store, keep: int) -> None:
    """Delete committed steps beyond the newest ``keep`` and every older uncommitted one."""
    mf.prune(store, keep)


def load_latest(store: Store) -> Loaded | None:
    """Return the newest valid checkpoint (``manifest.recover``), deleting the partial and corrupt ones above it."""

    def load(prefix: str, manifest: dict[str, Any]) -> dict[str, Any]:
        if STATE_FILE not in manifest["files"]:
            raise CorruptCheckpoint(f"{prefix}/{mf.MANIFEST} does not list {STATE_FILE}")
        return _torch_load(mf.read_verified(store, prefix, manifest, STATE_FILE), f"{prefix}/{STATE_FILE}")

    found = mf.recover(store, load)
    return None if found is None else Loaded(found.step, found.manifest, found.value)


def save_final(store: Store, weights: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Commit the finished result: ``final/weights.pt`` and its manifest."""
    existing = [k for k in store.list(mf.FINAL + "/")]
    if existing:
        mf.delete_step(store, existing)
    return mf.commit(store, mf.FINAL, {WEIGHTS_FILE: lambda fh: torch.save(weights, fh)}, meta)


def load_final(store: Store) -> dict[str, Any] | None:
    """Return the final manifest when a finished result is committed and intact, else None."""
    try:
        manifest = mf.read_manifest(store, mf.FINAL)
        mf.read_verified(store, mf.FINAL, manifest, WEIGHTS_FILE)
    except FileNotFoundError:
        return None
    except (CorruptCheckpoint, KeyError) as exc:
        mf.log.warning("ignoring the final result: %s; the run continues from its last step", exc)
        return None
    return manifest
