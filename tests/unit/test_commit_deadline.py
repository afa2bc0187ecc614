"""The checkpoint written after a notice gives up at its deadline, with every writer mode, and keeps the last step.

A slow disk is made by slowing ``os.fsync`` for the checkpoint folder (the file:// store fsyncs
each file before the rename that makes it visible), in this process and in the forked writer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from runner.stores import open_store
from runner.stores.base import DeadlineExceeded
from runner.task import checkpoint as ck
from runner.task import manifest as mf
from runner.task.writer import CheckpointWriter


def state(step: int) -> dict[str, Any]:
    return {"w": torch.from_numpy(np.full(1000, float(step), dtype=np.float32)), "step": step}


def slow_disk(monkeypatch: pytest.MonkeyPatch, folder: Path, seconds: float) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)) and seconds:
            time.sleep(seconds)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("mode", ["sync", "thread", "fork"])
def test_an_urgent_commit_past_its_deadline_gives_up_and_keeps_the_last_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    uri = f"file://{tmp_path}/ck"
    writer = CheckpointWriter(uri, keep=3, mode=mode)
    writer.submit(10, state(10), {"epoch": 0})
    writer.flush()
    slow_disk(monkeypatch, tmp_path / "ck", 30.0)
    if mode != "sync":  # a periodic write in flight when the notice comes, stuck on the slow disk
        writer.submit(20, state(20), {"epoch": 0})
        time.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        writer.submit(30, state(30), {"epoch": 0}, urgent=True, deadline=started + 1.0)
    assert time.monotonic() - started < 10  # not the 30 s the disk wanted
    monkeypatch.undo()
    store = open_store(uri)
    loaded = ck.load_latest(store)
    assert loaded is not None and loaded.step == 10 and torch.equal(loaded.state["w"], state(10)["w"])
    assert all(mf.is_committed(keys) for keys in mf.list_steps(store).steps.values())
    assert writer.last_committed == 10


def test_an_urgent_commit_waits_for_the_write_in_flight_and_commits_its_own_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"file://{tmp_path}/ck"
    writer = CheckpointWriter(uri, keep=3, mode="fork")
    slow_disk(monkeypatch, tmp_path / "ck", 0.3)
    writer.submit(10, state(10), {"epoch": 0})
    writer.submit(20, state(20), {"epoch": 0}, urgent=True, deadline=time.monotonic() + 20)
    monkeypatch.undo()
    assert writer.last_committed == 20
    assert sorted(mf.list_steps(open_store(uri)).steps) == [10, 20]
