"""FolderSync on a file:// store: round trips, incremental uploads, keep K, damaged steps, unsettled folders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from runner.exec.sync import BLOBS, INDEX, FolderChanged, FolderSync
from runner.spec import spec_from_dict
from runner.stores import open_store
from runner.task import manifest as mf


def make(tmp: Path, name: str = "work", keep: int = 3) -> FolderSync:
    return FolderSync(open_store(f"file://{tmp / 'store'}"), tmp / name, keep=keep, settle=0.0)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_round_trip_of_nested_files_and_modes(tmp_path):
    sync = make(tmp_path)
    assert sync.restore() is None
    (sync.folder / "checkpoint-10").mkdir()
    (sync.folder / "checkpoint-10" / "model.bin").write_bytes(b"m" * 5000)
    (sync.folder / "last.pt").write_bytes(b"state")
    (sync.folder / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(sync.folder / "run.sh", 0o755)
    result = sync.sync()
    assert (result.status, result.step, result.files, result.uploaded) == ("committed", 1, 3, 3)
    assert sync.sync().status == "unchanged"
    other = make(tmp_path, "next")
    assert other.restore() == 1
    assert tree(other.folder) == tree(sync.folder)
    assert os.stat(other.folder / "run.sh").st_mode & 0o777 == 0o755
    assert other.sync().status == "unchanged"  # a restored folder is what is committed already


def test_only_new_or_changed_files_are_uploaded_and_keep_prunes(tmp_path):
    sync = make(tmp_path, keep=2)
    sync.restore()
    (sync.folder / "big.bin").write_bytes(os.urandom(100_000))
    for n in range(1, 5):
        if n > 1:  # like save_total_limit=1: the previous checkpoint folder goes
            (sync.folder / f"checkpoint-{n - 1}" / "w.bin").unlink()
            (sync.folder / f"checkpoint-{n - 1}").rmdir()
        (sync.folder / f"checkpoint-{n}").mkdir()
        (sync.folder / f"checkpoint-{n}" / "w.bin").write_bytes(os.urandom(1000))
        result = sync.sync()
        assert result.status == "committed" and result.step == n
        assert result.uploaded == (2 if n == 1 else 1)  # big.bin only once
    store = sync.store
    assert sorted(mf.list_steps(store).steps) == [3, 4]
    # Blobs of pruned steps are collected: big.bin plus checkpoint-1..4's files referenced by 3 and 4.
    assert len(store.list(BLOBS)) == 3  # big.bin, checkpoint-3 and checkpoint-4: 1 and 2 are collected


def test_a_damaged_or_uncommitted_step_falls_back_to_the_one_below(tmp_path):
    sync = make(tmp_path)
    sync.restore()
    (sync.folder / "last.pt").write_bytes(b"one")
    sync.sync()
    (sync.folder / "last.pt").write_bytes(b"two")
    (sync.folder / "extra.bin").write_bytes(b"only in two")
    sync.sync()
    store = sync.store
    index = json.loads(store.read_bytes(f"{mf.step_prefix(2)}/{INDEX}"))
    store.write_bytes(BLOBS + index["files"]["extra.bin"]["sha256"], b"only in tw0")  # same size, other bytes
    store.write_bytes(f"{mf.step_prefix(3)}/{INDEX}", b"{}")  # a sync cut before its manifest
    fresh = make(tmp_path, "next")
    assert fresh.restore() == 1
    assert tree(fresh.folder) == {"last.pt": b"one"}  # nothing of step 2 was left behind
    assert sorted(mf.list_steps(store).steps) == [1]
    (fresh.folder / "last.pt").write_bytes(b"three")
    assert fresh.sync().step == 4  # numbers only grow: never reuse a number a killed sync had


def test_a_folder_being_written_is_not_synced(tmp_path):
    sync = FolderSync(open_store(f"file://{tmp_path / 'store'}"), tmp_path / "work", settle=5.0)
    sync.restore()
    (sync.folder / "last.pt").write_bytes(b"half")
    assert sync.sync().status == "unsettled"
    assert sync.sync(final=True).status == "committed"
    path = sync.folder / "big.bin"
    path.write_bytes(b"x" * 10)
    old = time.time() - 60
    os.utime(path, (old, old))
    os.utime(sync.folder / "last.pt", (old, old))
    stat = path.stat()

    original = sync._hash

    def racing(rel: str, before: os.stat_result) -> str:
        path.write_bytes(b"y" * 20)  # the writer strikes while the file is read
        return original(rel, before)

    sync._hash = racing  # type: ignore[method-assign]
    with pytest.raises(FolderChanged):  # while the command runs: the round is skipped
        sync.sync()
    assert stat.st_size == 10 and sorted(mf.list_steps(sync.store).steps) == [1]
    result = sync.sync(final=True)  # after it exited: the changing file is held back, the rest committed
    assert result.held == {"big.bin": "it changed while it was read"} and result.status == "unchanged"


def test_private_names_are_never_synced(tmp_path):
    sync = make(tmp_path)
    sync.restore()
    (sync.folder / ".runner-restore").mkdir()
    (sync.folder / ".runner-restore" / "x").write_bytes(b"x")
    (sync.folder / "a").write_bytes(b"a")
    assert sync.sync().files == 1


def test_spec_sync_section_becomes_contract_env():
    spec = spec_from_dict({"name": "x", "image": "i", "sync": {"dir": "/workspace/ck/", "signal": "SIGUSR1"}})
    env = spec.container_env("job", 1, "file:///tmp/x")
    assert env["RUNNER_SYNC_DIR"] == "/workspace/ck" and env["RUNNER_NOTICE_SIGNAL"] == "SIGUSR1"
    assert "RUNNER_SYNC_DIR" not in spec_from_dict({"name": "x", "image": "i"}).container_env("j", 1, "file:///t")
    from runner.errors import SpecError

    with pytest.raises(SpecError, match="sync.dir"):
        spec_from_dict({"name": "x", "image": "i", "sync": {"dir": "relative"}})
    with pytest.raises(SpecError, match="sync.signal"):
        spec_from_dict({"name": "x", "image": "i", "sync": {"dir": "/w", "signal": "SIGKILL"}})
