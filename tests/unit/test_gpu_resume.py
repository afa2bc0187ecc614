"""On a GPU: exact resume with deterministic kernels, and the writer's device-to-host snapshot.

Skips where CUDA is absent (CI and this project's machines); run it where a GPU is lent.
"""

from __future__ import annotations

import signal

import pytest

from tests.conftest import SMALL_CIFAR, TaskProcess, final_sha, run_task, task_env

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.may_skip, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ARGS = [*SMALL_CIFAR, "--deterministic"]


def test_interrupted_gpu_run_ends_with_identical_weights(tmp_path):
    whole = run_task(ARGS, task_env(f"file://{tmp_path}/whole"), tmp_path)
    assert whole.proc.returncode == 0, whole.output
    env = task_env(f"file://{tmp_path}/cut", RUNNER_HALT_FILE=str(tmp_path / "halt.txt"))
    for cut, how in ((40, "sigterm"), (90, "halt"), (150, "sigkill")):
        proc = TaskProcess(ARGS, env, tmp_path)
        proc.wait_step(cut)
        if how == "sigterm":
            proc.signal(signal.SIGTERM)
        elif how == "halt":
            (tmp_path / "halt.txt").touch()
        else:
            proc.signal(signal.SIGKILL)
        assert proc.finish() == (-9 if how == "sigkill" else 75), proc.output
    last = run_task(ARGS, env, tmp_path)
    assert last.proc.returncode == 0, last.output
    assert "resuming cifar from step" in last.output
    assert final_sha(tmp_path / "cut") == final_sha(tmp_path / "whole")
