"""The CIFAR smoke job on the real one-node Slurm, preempted twice by a high-priority job, with every
runtime that runs here (docker, none, podman) at once: each ends with the weights of an uninterrupted run.

The jobs run on the preemptible `spot` partition; a job on `high` (PriorityTier 10) asking for the
whole node preempts all of them. Each gets SIGUSR1 (preempt_send_user_signal), commits a checkpoint
and exits 75; the watcher submits the next attempt (Slurm never requeues it: --no-requeue).
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import final_sha, run_task, task_env
from tests.slurm.conftest import (
    VENV,
    podman_ready,
    runner,
    scheduler,
    slurm_runs,
    status_json,
    submitted_id,
    wait_for,
    wait_job,
)

# 2500 steps: the runtime without a container ("none") must still be training when the second
# preemption lands, after the slowest runtime (podman) has started and trained 40 steps; with 750
# it once finished first (exit 0 in attempt 2, so no attempt 3).
ARGS = ["--data", "synthetic", "--epochs", "2", "--train-size", "20000", "--test-size", "200",
        "--batch-size", "16", "--threads", "1", "--seed", "0"]
NODE_CPUS = 8  # scripts/ensure-slurm.sh's default


def runtime_settings(runtime: str) -> list[str]:
    """--set flags that run jobs/cifar-smoke.yaml with ``runtime`` on this machine."""
    if runtime == "none":
        return ["slurm.runtime=none", f"slurm.venv={VENV}", "command=[python, -m, runner.tasks.cifar]"]
    if runtime == "podman":
        # This machine's container lacks CAP_SYS_RESOURCE: runc cannot set Podman's default rlimits
        # ("error setting rlimit type 7: operation not permitted"), so ask for ones below the hard limits.
        nofile = min(20000, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        return ["slurm.runtime=podman",
                f"slurm.runtime_options=[--ulimit=nofile={nofile}:{nofile}, --ulimit=nproc=4096:4096]"]
    return [f"slurm.runtime={runtime}"]


def progress(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final weights of the same run, uninterrupted, in one process on this machine."""
    folder = tmp_path_factory.mktemp("reference")
    proc = run_task(ARGS, task_env(f"file://{folder}/ck"), folder)
    assert proc.proc.returncode == 0, proc.output
    return final_sha(folder / "ck")


def test_smoke_job_preempted_twice_ends_with_the_uninterrupted_weights(slurm_conf: str, tmp_path: Path,
                                                                       reference: str) -> None:
    runtimes = ["docker", "none", *(["podman"] if podman_ready() else [])]
    home = tmp_path / "home"
    jobs: dict[str, str] = {}
    folders = {rt: tmp_path / f"ck-{rt}" for rt in runtimes}
    for rt in runtimes:
        proc = runner("submit", "jobs/cifar-smoke.yaml", "--backend", "slurm", "--detach", "--interval", "1",
                      "--set", f"name=smoke-{rt}", "--set", "slurm.partition=spot", "--set", "resources.cpus=1",
                      "--set", f"checkpoint.uri=file://{folders[rt]}", "--set", "checkpoint.every=25",
                      *(w for s in runtime_settings(rt) for w in ("--set", s)), "--args", " ".join(ARGS),
                      home=home, check=True)
        jobs[rt] = submitted_id(proc)
    def training(attempt: int, low: dict[str, int]) -> bool:
        return all(progress(f).get("attempt") == attempt and int(progress(f).get("step") or 0) >= low[rt]
                   for rt, f in folders.items())

    def resubmitted(attempt: int) -> bool:
        statuses = {rt: status_json(j, home) for rt, j in jobs.items()}
        early = [rt for rt, s in statuses.items() if s["state"] == "SUCCEEDED"]
        assert not early, f"{early} finished before preemption {attempt} landed: the work (ARGS) is too short"
        return all(len(s["attempt_list"]) > attempt for s in statuses.values())

    for round_ in (1, 2):
        floor = {rt: int(progress(f).get("step") or 0) + 40 for rt, f in folders.items()}
        wait_for(lambda: training(round_, floor), 240, f"every job training in attempt {round_}")  # noqa: B023
        preemptor = scheduler("sbatch", "--parsable", "--partition=high", f"--cpus-per-task={NODE_CPUS}",
                              "--job-name=preemptor", "--output=/dev/null", "--wrap", "sleep 2").strip()
        wait_for(lambda: resubmitted(round_), 120, f"every job's attempt {round_ + 1} (preemptor {preemptor})",  # noqa: B023
                 every=1)
    for rt, job_id in jobs.items():
        status = wait_job(job_id, home, 300)
        attempts = status["attempt_list"]
        states = [a["state"] for a in attempts]
        if status["state"] != "SUCCEEDED" or states != ["PREEMPTED", "PREEMPTED", "SUCCEEDED"]:
            logs = {a["backend_id"]: (home / ".spot-runner/slurm/logs" / f"slurm-{a['backend_id']}.out").read_text()[-3000:]
                    for a in attempts}
            raise AssertionError(f"{rt}: {states} {[a['reason'] for a in attempts]}\n{logs}")
        for attempt in attempts[:2]:  # the notice was honoured: a checkpoint, exit 75, not a kill
            assert attempt["exit_code"] == 75 and "exit 75" in attempt["reason"], (rt, attempt)
        assert status["weights_sha256"] == reference, (rt, status["weights_sha256"], reference)
        for attempt in attempts:  # never both requeued by Slurm and resubmitted: one run per Slurm job
            runs = slurm_runs(attempt["backend_id"])
            assert len(runs) == 1 and runs[0][1] != "REQUEUED", (rt, runs)
        steps = [progress(folders[rt])["attempts"][str(n)] for n in (1, 2, 3)]
        assert all(s.get("first_step_at") for s in steps), steps  # every attempt trained
        print(f"{rt}: attempts {[a['backend_id'] for a in attempts]}, lost {status['lost_s']}s, "
              f"wall {status['wall_s']}s, sha {status['weights_sha256'][:12]}")
