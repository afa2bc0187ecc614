"""An interrupted run ends with the same weights as an uninterrupted one (task processes, no engine)."""

from __future__ import annotations

import json
import random
import signal

from tests.conftest import SMALL_CIFAR, TaskProcess, final_sha, interrupt, run_task, task_env

EXIT_PREEMPTED = 75


def test_three_interruptions_end_with_identical_weights(tmp_path, reference_sha):
    rng = random.Random()
    uri = f"file://{tmp_path}/ck"
    env = task_env(uri, RUNNER_HALT_FILE=str(tmp_path / "halt.txt"))
    # 188 steps in all; three cuts at random steps, in order, each a different kind.
    cuts = sorted(rng.sample(range(5, 130), 3))  # 58+ steps left: output is read behind the process
    kinds = ["sigterm", "halt", "sigkill"]
    rng.shuffle(kinds)
    for cut, kind in zip(cuts, kinds):
        interrupt(SMALL_CIFAR, env, tmp_path, cut, kind)
    assert not (tmp_path / "halt.txt").exists(), "the halt file must be consumed"
    last = run_task(SMALL_CIFAR, env, tmp_path)
    assert last.proc.returncode == 0, last.output
    assert "resuming cifar from step" in last.output
    assert "Traceback" not in last.output
    assert final_sha(tmp_path / "ck") == reference_sha, f"cuts {list(zip(cuts, kinds))}"
    progress = json.loads((tmp_path / "ck" / "progress.json").read_text())
    assert progress["state"] == "done" and progress["step"] == 188


def test_finished_run_exits_at_once(tmp_path, reference_sha):
    env = task_env(f"file://{tmp_path}/ck")
    first = run_task(SMALL_CIFAR, env, tmp_path)
    assert first.proc.returncode == 0
    again = run_task(SMALL_CIFAR, env, tmp_path)
    assert again.proc.returncode == 0
    assert "already finished" in again.output
    assert "epoch 1/2" not in again.output


def test_resume_with_other_settings_is_refused(tmp_path):
    env = task_env(f"file://{tmp_path}/ck")
    proc = TaskProcess(SMALL_CIFAR, env, tmp_path)
    proc.wait_step(30)
    proc.signal(signal.SIGTERM)
    assert proc.finish() == EXIT_PREEMPTED
    other = [*SMALL_CIFAR[:-2], "--lr", "0.05", "--log-every", "1"]
    refused = run_task(other, env, tmp_path)
    assert refused.proc.returncode == 2, refused.output
    assert "other settings" in refused.output and "lr=" in refused.output
    assert "Traceback" not in refused.output
