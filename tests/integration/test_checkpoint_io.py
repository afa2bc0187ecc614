"""The safe layout: commits, the newest valid step, corruption, crashes while writing."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import time

import numpy as np
import pytest
import torch

from runner.errors import ConfigError, StoreError
from runner.stores import open_store
from runner.task import checkpoint as ck
from runner.task import manifest as mf
from runner.task.writer import CheckpointWriter
from tests.conftest import SMALL_CIFAR, run_task, task_env


def state_for(step: int, numel: int = 1000) -> dict:
    # numpy, not torch kernels: this also runs in forked children, where OpenMP pools are unsafe.
    w = torch.from_numpy(np.full(numel, float(step), dtype=np.float32))
    return {"w": w, "step": step, "nested": {"b": torch.from_numpy(np.arange(step + 1))}}


def commit(store, step, numel=1000, keep=10):
    return ck.write_step(store, step, state_for(step, numel), {"epoch": 0, "progress": {"step": step}}, keep)


def test_commit_and_load_newest(tmp_path):
    store = open_store(f"file://{tmp_path}")
    for step in (10, 20, 30):
        commit(store, step)
    loaded = ck.load_latest(store)
    assert loaded is not None and loaded.step == 30
    assert torch.equal(loaded.state["w"], torch.full((1000,), 30.0))
    manifest = json.loads((tmp_path / "step-000030" / "MANIFEST.json").read_text())
    assert manifest["files"]["state.pt"]["size"] == (tmp_path / "step-000030" / "state.pt").stat().st_size
    assert json.loads((tmp_path / "progress.json").read_text())["step"] == 30
    assert (tmp_path / "checkpoint.txt").read_text().splitlines()[0] == "key,value"


def test_keeps_the_last_k(tmp_path):
    store = open_store(f"file://{tmp_path}")
    for step in range(1, 8):
        commit(store, step, keep=3)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000005", "step-000006", "step-000007"]


def test_step_without_manifest_is_ignored_and_removed(tmp_path, caplog):
    store = open_store(f"file://{tmp_path}")
    commit(store, 10)
    (tmp_path / "step-000020").mkdir()
    (tmp_path / "step-000020" / "state.pt").write_bytes(b"half a checkpoint")
    loaded = ck.load_latest(store)
    assert loaded is not None and loaded.step == 10
    assert not (tmp_path / "step-000020").exists()
    assert any("never finished" in r.message for r in caplog.records)


@pytest.mark.parametrize("damage", ["truncate", "flip", "hash", "outside", "absolute", "json", "unsafe", "missing"])
def test_corrupt_newest_falls_back_to_previous(tmp_path, caplog, damage):
    store = open_store(f"file://{tmp_path}")
    commit(store, 10)
    commit(store, 20)
    step = tmp_path / "step-000020"
    manifest_path = step / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    state = step / "state.pt"
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state.write_bytes(bytes(data))
    elif damage == "hash":
        manifest["files"]["state.pt"]["sha256"] = "0" * 64
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "outside":
        manifest["files"] = {"../step-000010/state.pt": manifest["files"]["state.pt"]}
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "absolute":
        manifest["files"] = {"/etc/passwd": {"size": 1, "sha256": "0" * 64}}
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "json":
        manifest_path.write_text("{not json")
    elif damage == "unsafe":
        # A pickle that would run code if loaded without weights_only; its manifest is "right".
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch " + str(tmp_path / "pwned"),))
        payload = pickle.dumps({"w": Evil()})
        state.write_bytes(payload)
        manifest["files"]["state.pt"] = {"size": len(payload), "sha256": __import__("hashlib").sha256(payload).hexdigest()}
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "missing":
        state.unlink()
    caplog.clear()
    loaded = ck.load_latest(store)
    assert loaded is not None and loaded.step == 10
    assert not (tmp_path / "pwned").exists()
    warnings = [r for r in caplog.records if "step-000020" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()


def test_bad_uris_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unsupported scheme"):
        open_store("ftp://host/x")
    with pytest.raises(ConfigError, match="absolute"):
        open_store("file://relative/path")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create"):
        open_store(f"file://{blocker}/ck")


@pytest.mark.parametrize("uri", ["ftp://nowhere/ck", "file://relative", "file:///proc/nope/ck"])
def test_task_with_unreadable_uri_fails_cleanly(tmp_path, uri):
    proc = run_task(SMALL_CIFAR, task_env(uri), tmp_path, timeout=120)
    assert proc.proc.returncode not in (0, 75)
    assert "Traceback" not in proc.output
    errors = [line for line in proc.output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "checkpoint" in errors[0]


def test_task_skips_a_corrupt_newest_step(tmp_path):
    env = task_env(f"file://{tmp_path}/ck", RUNNER_CHECKPOINT_EVERY="20")
    args = [*SMALL_CIFAR[:3], "1", *SMALL_CIFAR[4:]]  # one epoch: 94 steps
    first = run_task(args, env, tmp_path)
    assert first.proc.returncode == 0
    for p in (tmp_path / "ck" / "final").iterdir():
        p.unlink()
    (tmp_path / "ck" / "final").rmdir()
    newest = max((tmp_path / "ck").glob("step-*"))
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    again = run_task(args, env, tmp_path)
    assert again.proc.returncode == 0, again.output
    assert "Traceback" not in again.output
    assert f"ignoring {newest.name}" in again.output and "resuming cifar from step" in again.output


def _writer_child(folder: str, numel: int) -> None:
    """Commit steps 1, 2, 3... forever; print each after it is committed."""
    store = open_store(f"file://{folder}")
    step = 1
    while True:
        ck.write_step(store, step, state_for(step, numel), {"epoch": 0, "progress": {"step": step}}, keep=2)
        os.write(1, f"{step}\n".encode())
        step += 1


def test_sigkill_while_writing_never_yields_a_partial_step(tmp_path):
    """SIGKILL at random instants during writes, 60 times: loads are always whole and newest."""
    rng = random.Random()
    trials, loads = 60, 0
    for trial in range(trials):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(write_fd, 1)
            try:
                _writer_child(str(folder), numel=rng.choice([200_000, 1_000_000]))
            finally:
                os._exit(1)
        os.close(write_fd)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(read_fd) as fh:
            printed = [int(x) for x in fh.read().split()]
        last_committed = printed[-1] if printed else 0
        loaded = ck.load_latest(open_store(f"file://{folder}"))
        if loaded is None:
            assert last_committed == 0 and not list(folder.glob("step-*/MANIFEST.json"))
            continue
        loads += 1
        # The kill may land after a commit and before its line was printed: newest is N or N+1.
        assert loaded.step in (last_committed, last_committed + 1), (loaded.step, last_committed)
        assert torch.equal(loaded.state["w"], torch.full_like(loaded.state["w"], float(loaded.step)))
        # Nothing partial survives a load (an empty folder from a cut-short prune holds no keys).
        assert not [p for p in folder.glob("step-*") if any(p.iterdir()) and not (p / "MANIFEST.json").exists()]
    assert loads >= trials // 2


def test_async_writers_match_sync(tmp_path):
    for mode in ("fork", "thread", "sync"):
        writer = CheckpointWriter(f"file://{tmp_path}/{mode}", keep=2, mode=mode)
        for step in (1, 2, 3):
            writer.submit(step, state_for(step), {"epoch": 0, "progress": {"step": step}})
        assert writer.flush() == 3
        loaded = ck.load_latest(open_store(f"file://{tmp_path}/{mode}"))
        assert loaded is not None and loaded.step == 3 and loaded.state["step"] == 3


@pytest.mark.parametrize("mode", ["fork", "thread", "sync"])
def test_writer_failure_is_reported(tmp_path, mode):
    folder = tmp_path / "ck"
    writer = CheckpointWriter(f"file://{folder}", keep=2, mode=mode)
    folder.rmdir()
    folder.write_text("the checkpoint folder replaced by a file: every write fails, even as root")
    if mode == "sync":
        with pytest.raises(StoreError, match="failed"):
            writer.submit(1, state_for(1), {"epoch": 0})
        return
    writer.submit(1, state_for(1), {"epoch": 0})
    with pytest.raises(StoreError, match="failed"):
        writer.flush()


def test_final_result_roundtrip(tmp_path):
    store = open_store(f"file://{tmp_path}")
    assert ck.load_final(store) is None
    ck.save_final(store, {"w": torch.ones(3)}, {"weights_sha256": "abc"})
    assert ck.load_final(store)["weights_sha256"] == "abc"
    (tmp_path / "final" / "weights.pt").write_bytes(b"x")
    assert ck.load_final(store) is None
    assert mf.read_progress(store) is None
