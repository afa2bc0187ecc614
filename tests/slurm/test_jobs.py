"""`runner` commands against the real cluster: jobs/cifar.yaml with its slurm: section, logs, status with
service units, and cancel, which must leave no container running (Slurm does not track containers)."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.slurm.conftest import (
    CIFAR_IMAGE,
    podman_ready,
    runner,
    scheduler,
    spec_file,
    status_json,
    submitted_id,
    wait_for,
    wait_job,
)

SMALL = "--data synthetic --epochs 1 --train-size 1000 --test-size 100 --batch-size 64 --threads 1"


def test_cifar_spec_runs_with_backend_slurm(slurm_conf: str, tmp_path: Path) -> None:
    """`runner submit jobs/cifar.yaml --backend slurm`: the spec's slurm: section, cut down with --set/--args."""
    home = tmp_path / "home"
    proc = runner("submit", "jobs/cifar.yaml", "--backend", "slurm", "--interval", "1",
                  "--set", "slurm.runtime=docker", "--set", "slurm.partition=spot",  # no Apptainer here
                  "--set", "resources.gpus=0", "--set", "resources.gpu_type=null", "--set", "resources.cpus=1",
                  "--set", "resources.memory=2Gi", "--set", f"checkpoint.uri=file://{tmp_path}/ck",
                  "--args", SMALL, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = submitted_id(proc)
    assert "SUCCEEDED" in proc.stdout and "final weights sha256" in proc.stdout
    status = status_json(job_id, home)
    assert status["backend"] == "slurm" and status["attempt_list"][0]["backend_id"].isdigit()
    units = status["cost"]["service_units"]
    assert units["unit"] == "core-hours" and units["per_hour"] == 1.0 and units["used"] > 0
    assert status["cost"]["spend"] == pytest.approx(units["used"] * 0.02, abs=1e-6)  # slurm.su_price: 0.02
    table = runner("status", job_id, home=home, check=True).stdout
    assert "core-hours" in table, table
    logs = runner("logs", job_id, home=home, check=True).stdout
    assert f"attempt 1 of job {job_id}" in logs and "finished: test_accuracy=" in logs, logs
    log_file = home / ".spot-runner/slurm/logs" / f"slurm-{status['attempt_list'][0]['backend_id']}.out"
    assert log_file.is_file()


@pytest.mark.parametrize("runtime", ["docker", *(["podman"] if podman_ready() else [])])
def test_cancel_leaves_no_container_running(slurm_conf: str, tmp_path: Path, runtime: str) -> None:
    home = tmp_path / "home"
    extra = {"runtime_options": ["--ulimit=nofile=1024:1024", "--ulimit=nproc=4096:4096"]} if runtime == "podman" else {}
    path = spec_file(tmp_path, f"cancel-{runtime}", {
        "image": CIFAR_IMAGE, "command": ["python", "-c", "import time\nwhile True: time.sleep(1)"],
        "resources": {"cpus": 1, "memory": "512Mi"}, "checkpoint": {"uri": f"file://{tmp_path}/ck"},
        "backend": "slurm", "slurm": {"partition": "spot", "runtime": runtime, **extra}})
    job_id = submitted_id(runner("submit", str(path), "--detach", "--interval", "1", home=home, check=True))
    key = f"{job_id}-0-1"

    def containers(all_: bool = False) -> list[str]:
        out = subprocess.run([runtime, "ps", *(["-a"] if all_ else []), "-q", "--filter", f"label=spot-runner.key={key}"],
                             check=True, capture_output=True, text=True).stdout
        return out.split()

    wait_for(containers, 120, f"the {runtime} container of {key} to run")
    slurm_job = status_json(job_id, home)["attempt_list"][0]["backend_id"]
    started = time.monotonic()
    runner("cancel", job_id, home=home, check=True)
    wait_for(lambda: not containers(all_=True), 60, f"the {runtime} container of {key} to be gone")
    gone_after = time.monotonic() - started
    wait_for(lambda: not scheduler("squeue", "-h", "-j", slurm_job, check=False).strip(), 60, "the job to leave")
    status = wait_job(job_id, home, 60)
    assert status["state"] == "CANCELLED" and status["attempt_list"][0]["state"] == "CANCELLED", status
    print(f"{runtime}: cancel left no container after {gone_after:.1f}s")


def test_find_adopts_what_was_submitted_before(slurm_conf: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher killed between sbatch and recording the id finds the job by its name instead of submitting twice."""
    from runner.backends.base import Submission
    from runner.backends.slurm import SlurmBackend
    from runner.spec import load_spec

    monkeypatch.setenv("HOME", str(tmp_path))
    backend = SlurmBackend()
    ids: list[str] = []
    try:
        for array in (1, 3):
            spec = load_spec(spec_file(tmp_path, f"find{array}", {
                "image": CIFAR_IMAGE, "command": ["sleep", "60"], "array": array,
                "resources": {"cpus": 1, "memory": "128Mi"}, "checkpoint": {"uri": f"file://{tmp_path}/ck{array}"},
                "backend": "slurm", "slurm": {"partition": "spot", "runtime": "none"}}))
            job_id = f"find{array}-{uuid.uuid4().hex[:6]}"  # job names outlive tests in sacct
            subs = [Submission(spec, job_id, f"{job_id}-{i}-1", 1, i, spec.checkpoint_uri_for(i, job_id),
                               spec.container_env(job_id, 1, spec.checkpoint_uri_for(i, job_id))) for i in range(array)]
            assert all(backend.find(sub) is None for sub in subs)
            submitted = backend.submit_many(subs) if array > 1 else [backend.submit(subs[0])]
            ids += submitted
            assert [backend.find(sub) for sub in subs] == submitted
        assert ids[0].isdigit() and [i.split("_")[1] for i in ids[1:]] == ["0", "1", "2"]
    finally:
        for backend_id in ids:
            backend.cancel(backend_id)
