"""The forked checkpoint writer's CPU priority: niced (never SCHED_IDLE), and hurried when waited for.

A SCHED_IDLE writer starved beside busy neighbours in its scheduling group (a checkpoint upload
waited 44 s; a writer killed at a notice's deadline took 13 s to die), and without CAP_SYS_NICE (a
Docker container's default) it could never be sped up again. These tests read each thread's
policy and nice value from the kernel while a real forked writer runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from runner.task import writer as writer_mod
from runner.task.writer import WRITER_NICE, CheckpointWriter

ROOT = Path(__file__).resolve().parents[2]

# A writer whose child starts a second thread (as the cloud SDKs do) and waits for a gate file before
# it writes, so that the test can look at the child's threads while the write is in flight.
_CHILD = textwrap.dedent("""
    import os, sys, threading, time
    from pathlib import Path
    import torch
    from runner.task import checkpoint as ck
    from runner.task.writer import CheckpointWriter

    folder = Path(sys.argv[1])
    gate = folder / "go"

    def gated_run(self, step, state, meta, store=None):
        threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
        while not gate.exists():
            time.sleep(0.01)
        ck.write_step(store or self.store, step, state, meta, self.keep)

    CheckpointWriter._run = gated_run
    writer = CheckpointWriter(f"file://{folder}/ck", keep=2, mode="fork")
    writer.submit(1, {"w": torch.ones(4)}, {"progress": {"step": 1}})
    print(writer._pid, flush=True)
    sys.stdin.readline()          # the test looks at the child, then asks for a hurry
    writer.hurry()
    print("hurried", flush=True)
    sys.stdin.readline()          # the test looks again, then opens the gate
    print("committed", writer.flush(), flush=True)
""")


def _threads(pid: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        if len(tids) >= 2:
            return tids
        time.sleep(0.01)
    raise AssertionError(f"the writer {pid} never started its second thread")


def _priorities(pid: int) -> set[tuple[int, int]]:
    """(policy, nice) of every thread of ``pid``."""
    return {(os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)) for tid in _threads(pid)}


def _can_drop_sys_nice() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.mark.parametrize("privileged", [True, False], ids=["with-CAP_SYS_NICE", "without-CAP_SYS_NICE"])
def test_the_forked_writer_is_niced_and_every_thread_is_hurried_when_waited_for(tmp_path, privileged):
    prefix: list[str] = []
    if not privileged:
        if not _can_drop_sys_nice():
            pytest.skip("dropping CAP_SYS_NICE needs root and setpriv (util-linux)")
        prefix = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"]
    elif os.geteuid() != 0:
        pytest.skip("raising a nice value back needs CAP_SYS_NICE (root)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*prefix, sys.executable, "-c", _CHILD, str(tmp_path)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        child = int(proc.stdout.readline())
        assert _priorities(child) == {(os.SCHED_OTHER, WRITER_NICE)}  # niced, not SCHED_IDLE, every thread
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "hurried"
        # with CAP_SYS_NICE every thread is back at nice 0; without it the writer stays niced and goes on
        assert _priorities(child) == {(os.SCHED_OTHER, 0 if privileged else WRITER_NICE)}
        (tmp_path / "go").touch()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split() == ["committed", "1"]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_wait_for_the_writer_hurries_it(tmp_path, monkeypatch):
    """flush() (the loop waiting, or a notice's urgent write) hurries the child before it waits."""
    hurried: list[int] = []
    monkeypatch.setattr(writer_mod, "_normal_priority", hurried.append)
    writer = CheckpointWriter(f"file://{tmp_path}/ck", keep=2, mode="fork")
    writer.submit(1, {"w": torch.ones(4)}, {"progress": {"step": 1}})
    child = writer._pid
    assert writer.flush() == 1
    assert hurried == [child]
