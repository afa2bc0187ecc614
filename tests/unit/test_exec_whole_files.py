"""``runner exec`` commits only whole files: formats, files open for writing, torn and emptied files, recovery.

Real files, real processes holding files open, a real file:// store; torch only to make real
checkpoint files (``runner.exec`` itself never imports it).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from runner.exec import formats
from runner.exec.openfiles import open_for_writing
from runner.exec.sync import BLOBS, INDEX, FolderSync
from runner.stores import open_store
from runner.task import checkpoint as ck
from runner.task import manifest as mf


def torch_bytes(value: float = 1.0, numel: int = 50_000) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.full((numel,), value)}, buf)
    return buf.getvalue()


def make(tmp: Path, name: str = "work", **kw: object) -> FolderSync:
    return FolderSync(open_store(f"file://{tmp / 'store'}"), tmp / name, settle=0.0, **kw)  # type: ignore[arg-type]


def committed_blob(sync: FolderSync, rel: str) -> bytes:
    step = mf.step_prefix(sync.last_step or 0)
    index = json.loads(sync.store.read_bytes(f"{step}/{INDEX}"))
    return sync.store.read_bytes(BLOBS + index["files"][rel]["sha256"])


@pytest.mark.parametrize("name,data,whole", [
    ("a.pt", torch_bytes(), True),
    ("a.pt", torch_bytes()[:-200], False),
    ("a.pt", torch_bytes()[: len(torch_bytes()) // 2], False),
    ("a.pt", b"", False),
    ("m.safetensors", None, True),
    ("m.safetensors", "torn", False),
    ("s.pkl", pickle.dumps(list(range(500))), True),
    ("s.pkl", pickle.dumps(list(range(500)))[:-2], False),
    ("two.pkl", pickle.dumps(1) + pickle.dumps(2), True),
    ("r.json", b'{"step": 3}', True),
    ("r.json", b'{"step": ', False),
    ("notes.txt", b"", True),
    ("notes.txt", b"half a line", True),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_file_is_whole_when_its_format_ends_where_the_file_does(tmp_path: Path, name: str, data: object,
                                                                  whole: bool) -> None:
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file({"w": torch.ones(1000)}, str(path))
        if data == "torn":
            path.write_bytes(path.read_bytes()[:-9])
    else:
        path.write_bytes(data)  # type: ignore[arg-type]
    problem = formats.problem(path, formats.sniff(path), path.stat().st_size)
    assert (problem is None) == whole, problem


def test_legacy_torch_save_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(10)}, path, _use_new_zipfile_serialization=False)
    assert formats.sniff(path) == "pickle" and formats.problem(path, "pickle", path.stat().st_size) is None


def _holder(path: Path, mode: str) -> subprocess.Popen[str]:
    code = f"import sys, time; f = open({str(path)!r}, {mode!r}); print('open', flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "open\n"
    return proc


def test_files_open_for_writing_by_another_process_are_found_with_their_mode(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "read.txt").write_text("x")
    holders = [_holder(tmp_path / "sub" / "last.pt", "wb"), _holder(tmp_path / "log.txt", "a"),
               _holder(tmp_path / "read.txt", "r")]
    try:
        found = open_for_writing(tmp_path)
        assert set(found) == {"sub/last.pt", "log.txt"}
        assert not found["sub/last.pt"].append and found["log.txt"].append
        assert found["log.txt"].pid == holders[1].pid
        with open(tmp_path / "mine.pt", "wb"):
            assert "mine.pt" not in open_for_writing(tmp_path)  # this process's own files are not a child's save
    finally:
        for proc in holders:
            proc.communicate("")
    assert open_for_writing(tmp_path) == {}


def test_a_round_waits_while_a_save_is_in_progress_and_commits_it_whole(tmp_path: Path) -> None:
    sync = make(tmp_path, open_files=open_for_writing)
    sync.restore()
    (sync.folder / "last.pt").write_bytes(torch_bytes(1.0))
    assert sync.sync().status == "committed"
    saver = _holder(sync.folder / "last.pt", "wb")  # torch.save opened it: emptied, nothing written yet
    try:
        assert sync.sync().status == "busy"
        result = sync.sync(final=True)  # after the command exited (a leftover process still holds it)
        assert result.held == {"last.pt": "open for writing"} and result.status == "unchanged"
    finally:
        saver.communicate("")
    (sync.folder / "last.pt").write_bytes(torch_bytes(2.0))
    assert sync.sync().status == "committed"
    assert committed_blob(sync, "last.pt") == torch_bytes(2.0)


def test_a_log_held_open_does_not_stop_the_syncs(tmp_path: Path) -> None:
    sync = make(tmp_path, open_files=open_for_writing, long_open=0.0)
    sync.restore()
    logger = _holder(sync.folder / "train.log", "a")
    try:
        (sync.folder / "last.pt").write_bytes(torch_bytes())
        result = sync.sync()
        assert result.status == "committed" and set(result.held) == {"train.log"}
    finally:
        logger.communicate("")


def test_torn_emptied_or_new_torn_files_never_replace_the_last_good_version(tmp_path: Path) -> None:
    sync = make(tmp_path)
    sync.restore()
    good = torch_bytes(1.0)
    (sync.folder / "last.pt").write_bytes(good)
    (sync.folder / "state.dat").write_bytes(b"opaque state")
    sync.sync()
    (sync.folder / "last.pt").write_bytes(torch_bytes(2.0)[:-100])  # killed inside torch.save
    (sync.folder / "state.dat").write_bytes(b"")  # emptied, then the writer died
    (sync.folder / "new.pt").write_bytes(b"")  # a first save that never got going
    (sync.folder / "extra.txt").write_text("fine")
    result = sync.sync(final=True)
    assert result.status == "committed"
    assert set(result.held) == {"last.pt", "state.dat", "new.pt"}
    assert "not a whole zip" in result.held["last.pt"] and result.held["state.dat"] == "it shrank to nothing"
    restored = make(tmp_path, "next")
    restored.restore()
    assert (restored.folder / "last.pt").read_bytes() == good
    assert (restored.folder / "state.dat").read_bytes() == b"opaque state"
    assert not (restored.folder / "new.pt").exists() and (restored.folder / "extra.txt").read_text() == "fine"


def test_a_file_that_stops_being_its_format_is_held_even_if_it_parses_as_another(tmp_path: Path) -> None:
    sync = make(tmp_path)
    sync.restore()
    (sync.folder / "weights").write_bytes(torch_bytes())  # no suffix: the format comes from the content
    sync.sync()
    (sync.folder / "weights").write_bytes(b"not a zip any more")
    assert "not a whole zip" in sync.sync(final=True).held["weights"]


def test_one_recovery_routine_for_task_steps_and_folder_snapshots(tmp_path: Path) -> None:
    """manifest.recover: newest complete step; marked steps last; partial and corrupt ones removed."""
    store = open_store(f"file://{tmp_path}/task")
    for step in (10, 20, 30):
        ck.write_step(store, step, {"w": torch.full((10,), float(step))}, {"epoch": 0}, keep=5)
    store.write_bytes("step-000040/state.pt", b"a write cut short")
    store.write_bytes(f"{mf.step_prefix(30)}/state.pt", b"damaged")
    loaded = ck.load_latest(store)
    assert loaded is not None and loaded.step == 20
    assert sorted(mf.list_steps(store).steps) == [10, 20]
    mf.mark_restore_failed(store, 20, {"attempt": 3})
    assert ck.load_latest(store).step == 10  # type: ignore[union-attr]
    assert sorted(mf.list_steps(store).steps) == [10, 20]  # a marked step is kept, only tried last

    sync = make(tmp_path)
    sync.restore()
    for text in (b"one", b"two"):
        (sync.folder / "f.txt").write_bytes(text)
        sync.sync()
    mf.mark_restore_failed(sync.store, 2, {"attempt": 2})
    fresh = make(tmp_path, "fresh")
    assert fresh.restore() == 1 and (fresh.folder / "f.txt").read_bytes() == b"one"
    (fresh.folder / "f.txt").write_bytes(b"three")
    assert fresh.sync().step == 3  # numbers never go back
    assert make(tmp_path, "again").restore() == 3


def test_a_sync_folder_the_user_cannot_create_is_one_line() -> None:
    """As uid 1000 under a root-owned folder (the system python: runner.exec needs only the standard
    library for file://); tests/integration/test_exec_sync.py tries the same in an image."""
    python = Path("/usr/bin/python3")
    source = Path(__file__).resolve().parents[2]
    if os.getuid() != 0 or not python.exists():
        pytest.skip("needs root (to run the wrapper as uid 1000) and /usr/bin/python3")
    for folder in (source, *source.parents):
        if folder.stat().st_mode & 0o005 != 0o005:
            pytest.skip(f"{folder} is not readable by other users")
    tmp_path = Path(tempfile.mkdtemp(prefix="exec-perm-"))
    os.chmod(tmp_path, 0o755)
    try:
        _run_as_uid_1000(python, source, tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _run_as_uid_1000(python: Path, source: Path, tmp_path: Path) -> None:
    root_owned = tmp_path / "workspace"
    root_owned.mkdir()
    os.chmod(root_owned, 0o755)
    store = tmp_path / "store"
    store.mkdir()
    os.chmod(store, 0o777)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(source),
           "RUNNER_CHECKPOINT_URI": f"file://{store}", "RUNNER_NOTICE": "none"}
    run = subprocess.run([str(python), "-m", "runner.exec", "--dir", str(root_owned / "checkpoints"), "--", "true"],
                         env=env, capture_output=True, text=True, timeout=60, user=1000, group=1000, check=False,
                         extra_groups=[], cwd="/")
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"cannot use the sync folder {root_owned}/checkpoints" in lines[0]
    assert "uid 1000" in lines[0] and "owned by uid 0" in lines[0] and "chown 1000" in lines[0]


def test_restored_files_keep_their_format_for_the_next_check(tmp_path: Path) -> None:
    sync = make(tmp_path)
    sync.restore()
    (sync.folder / "model.bin").write_bytes(torch_bytes())
    sync.sync()
    nxt = make(tmp_path, "next")
    nxt.restore()
    time.sleep(0.01)
    (nxt.folder / "model.bin").write_bytes(b"\x00" * 64)  # the restored zip, overwritten by garbage
    assert "not a whole zip" in nxt.sync(final=True).held["model.bin"]


def test_the_process_tree_of_a_command_and_its_files(tmp_path: Path) -> None:
    from runner.exec.openfiles import process_tree

    code = (f"import subprocess, sys; g = subprocess.Popen([sys.executable, '-c', "
            f"\"f = open({str(tmp_path / 'g.pt')!r}, 'wb'); print('open', flush=True); import sys; sys.stdin.read()\"], "
            f"stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True); print(g.stdout.readline(), end='', flush=True); "
            f"print(g.pid, flush=True); sys.stdin.read(); g.communicate('')")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "open\n"
        grandchild = int(parent.stdout.readline())
        tree = process_tree(parent.pid)
        assert tree[0] == parent.pid and grandchild in tree
        assert set(open_for_writing(tmp_path, pids=tree)) == {"g.pt"}
        assert open_for_writing(tmp_path, pids=[parent.pid]) == {}  # only the grandchild holds it
    finally:
        parent.communicate("")
