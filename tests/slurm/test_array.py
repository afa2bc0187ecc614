"""A 100-element array on the real cluster: one sbatch --array, and every watcher poll of all 100
attempts costs at most two scheduler calls (counted by wrappers around the real commands on PATH)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from runner.ledger import Ledger
from runner.spec import load_spec
from runner.states import AttemptState, JobState
from runner.watcher import Watcher
from tests.slurm.conftest import CIFAR_IMAGE, VENV, spec_file

COMMANDS = ("sbatch", "squeue", "sacct", "scancel")
WRITE_INDEX = ("import os, pathlib\n"
               "folder = pathlib.Path(os.environ['RUNNER_CHECKPOINT_URI'].removeprefix('file://'))\n"
               "(folder / 'index').write_text(os.environ['SLURM_ARRAY_TASK_ID'])\n")


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put wrappers of Slurm's commands first on PATH; each call appends its name to the returned file."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in COMMANDS:
        real = next(p for p in (Path(d) / name for d in os.environ["PATH"].split(os.pathsep)) if p.is_file())
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\necho {name} >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    log.touch()
    return log


def test_array_of_100_is_polled_with_at_most_two_scheduler_calls(slurm_conf: str, tmp_path: Path,
                                                                  counted: Path) -> None:
    path = spec_file(tmp_path, "array100", {
        "image": CIFAR_IMAGE, "array": 100, "command": ["python", "-c", WRITE_INDEX],
        "resources": {"cpus": 1, "memory": "256Mi"}, "checkpoint": {"uri": f"file://{tmp_path}/ck"},
        "backend": "slurm", "slurm": {"partition": "spot", "runtime": "none", "venv": str(VENV)}})
    per_tick: list[dict[str, int]] = []
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(load_spec(path), path)
        watcher = Watcher(ledger, [job_id])
        deadline = time.monotonic() + 300
        try:
            while ledger.get_job(job_id).state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
                assert time.monotonic() < deadline, "the array did not finish in 300 s"
                before = counted.read_text().split()
                watcher.tick()
                calls = counted.read_text().split()[len(before):]
                per_tick.append({name: calls.count(name) for name in COMMANDS if name in calls})
                time.sleep(1)
        finally:
            watcher.close()
        attempts = ledger.attempts(job_id)
        job = ledger.get_job(job_id)
    assert job.state == JobState.SUCCEEDED, job.message
    assert len(attempts) == 100 and all(a.state == AttemptState.SUCCEEDED for a in attempts)
    assert len({a.backend_id.split("_")[0] for a in attempts if a.backend_id}) == 1  # one sbatch --array
    assert per_tick[0].get("sbatch") == 1 and sum(t.get("sbatch", 0) for t in per_tick) == 1
    polls = [sum(n for name, n in t.items() if name != "sbatch") for t in per_tick[1:]]
    assert polls and max(polls) <= 2, per_tick
    for index in range(100):  # each element had its own checkpoint folder, <uri>/<index>
        assert (tmp_path / "ck" / str(index) / "index").read_text() == str(index)
    print(f"array of 100: {len(per_tick)} passes, scheduler calls per poll {polls}")
