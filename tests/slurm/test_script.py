"""The batch script: #SBATCH lines, each runtime's command line (Apptainer's checked against its docs),
spec checks, and the script's signal handling run for real with bash (no Slurm needed)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.backends.base import Submission
from runner.backends.slurm import SlurmBackend, SlurmSettings, slurm_settings
from runner.backends.slurm_script import array_spec, render, sbatch_options
from runner.errors import SpecError
from runner.spec import load_spec, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
SMALL_IMAGE = "localhost/py311-base:bookworm"


def spec(**changes: Any) -> Any:
    data: dict[str, Any] = {"name": "t", "image": "localhost/runner-cifar:latest", "args": ["--epochs", "2"],
                            "env": {"SECRET_TOKEN": "s3cr3t value 'quoted'"}, "resources": {"cpus": 2, "memory": "2Gi"},
                            "checkpoint": {"uri": "file:///shared/ck/t"}, "backend": "slurm",
                            "slurm": {"runtime": "docker", "partition": "spot"}}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return spec_from_dict(data)


def sub(s: Any, index: int = 0, attempt: int = 1, uri: str | None = None, capacity: str = "spot") -> Submission:
    uri = uri or s.checkpoint_uri_for(index, "job1")
    return Submission(spec=s, job_id="job1", key=f"job1-{index}-{attempt}", attempt=attempt, array_index=index,
                      checkpoint_uri=uri, env=s.container_env("job1", attempt, uri), capacity=capacity)


def test_sbatch_options() -> None:
    s = spec(slurm={"time_limit": "90s", "signal_lead": "45s", "account": "proj1", "qos": "low",
                    "sbatch": ["#SBATCH --constraint=a100", "--exclusive"]}, resources={"gpus": 2})
    options = sbatch_options([sub(s)], slurm_settings(s))
    for expected in ("--job-name=job1-0-1", "--output=.spot-runner/slurm/logs/slurm-%j.out", "--open-mode=append",
                     "--no-requeue", "--export=NONE", "--signal=B:USR1@45", "--cpus-per-task=2", "--mem=2048M",
                     "--partition=spot", "--time=2", "--gres=gpu:2", "--account=proj1", "--qos=low",
                     "--constraint=a100", "--exclusive"):
        assert expected in options
    on_demand = spec(slurm={"on_demand_partition": "normal"})
    assert "--partition=normal" in sbatch_options([sub(on_demand, capacity="on-demand")], slurm_settings(on_demand))
    assert "--partition=spot" in sbatch_options([sub(on_demand)], slurm_settings(on_demand))
    assert "--time=10" in sbatch_options([sub(spec(timeout="10m"))], slurm_settings(spec(timeout="10m")))


def test_array_of_first_attempts() -> None:
    s = spec(array=100)
    subs = [sub(s, i) for i in range(100)]
    options = sbatch_options(subs, slurm_settings(s))
    assert "--array=0-99" in options and "--job-name=job1-array-1" in options
    assert "--output=.spot-runner/slurm/logs/slurm-%A_%a.out" in options
    script = render(subs, slurm_settings(s))
    assert 'spot_checkpoint_dir=/shared/ck/t"/$spot_index"' in script
    assert array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_docker_command_line_and_environment() -> None:
    script = render([sub(spec())], slurm_settings(spec()))
    assert "export SECRET_TOKEN='s3cr3t value '\"'\"'quoted'\"'\"''" in script
    run = next(line for line in script.splitlines() if line.startswith("docker run"))
    assert "s3cr3t" not in run  # values come from the environment, never the command line
    for word in ('--name "$spot_container"', '--user "$(id -u):$(id -g)"', "--cpus=2", "--memory=2048m",
                 '--volume "$spot_checkpoint_dir":/checkpoints', '--volume "$spot_scratch/notice":/run/spot-runner:ro',
                 "--env SECRET_TOKEN", "--env RUNNER_CHECKPOINT_URI", "localhost/runner-cifar:latest --epochs 2 &"):
        assert word in run
    assert 'export RUNNER_CHECKPOINT_URI="file:///checkpoints"' in script
    assert "export RUNNER_NOTICE=none" in script  # auto: no metadata service on a cluster
    assert 'docker stop --time 5 "$spot_container"' in script  # Slurm does not track the container


def test_data_folders_and_gpus(tmp_path: Path) -> None:
    (tmp_path / "cifar10").mkdir()
    s = spec(data={"cifar10": str(tmp_path / "cifar10")}, resources={"gpus": 1})
    docker = render([sub(s)], slurm_settings(s))
    assert f"--volume {tmp_path}/cifar10:/data/cifar10:ro" in docker and '--gpus "$(spot_gpus)"' in docker
    podman = render([sub(s)], SlurmSettings(runtime="podman"))
    assert "podman run" in podman and "$(spot_cdi_devices)" in podman
    none = render([sub(spec(data={"cifar10": str(tmp_path / "cifar10")}, command=["python", "-m", "x"]))],
                  SlurmSettings(runtime="none", venv="/shared/venv"))
    assert f"ln -s {tmp_path}/cifar10" in none and 'export RUNNER_DATA_DIR="$spot_scratch/data"' in none
    assert 'export PATH=/shared/venv/bin:"$PATH"' in none
    assert 'export RUNNER_CHECKPOINT_URI="file://$spot_checkpoint_dir"' in none


def test_apptainer_command_line_follows_its_documented_options() -> None:
    """Apptainer's user guide: --compat (= --containall --no-init --no-umask --writable-tmpfs --no-eval),
    --bind src:dest[:ro], --nv, APPTAINERENV_<NAME> passed through the clean environment, `run` for the
    runscript made from ENTRYPOINT/CMD, `exec` for another command."""
    s = spec(slurm={"runtime": "apptainer", "sif": "/shared/images/runner-cifar_latest.sif"}, resources={"gpus": 1})
    script = render([sub(s)], slurm_settings(s))
    run = next(line for line in script.splitlines() if line.startswith("apptainer "))
    assert run.startswith("apptainer run --compat --bind \"$spot_checkpoint_dir\":/checkpoints "
                          "--bind \"$spot_scratch/notice\":/run/spot-runner:ro --nv /shared/images/runner-cifar_latest.sif "
                          "--epochs 2 &")
    assert "export APPTAINERENV_SECRET_TOKEN=" in script and "export SECRET_TOKEN=" not in script
    assert 'export APPTAINERENV_RUNNER_CHECKPOINT_URI="file:///checkpoints"' in script
    assert "APPTAINERENV_CUDA_VISIBLE_DEVICES" in script
    exec_ = render([sub(spec(command=["python", "-m", "runner.tasks.cifar"],
                             slurm={"runtime": "apptainer", "sif": "/s/x.sif"}))], SlurmSettings(sif="/s/x.sif"))
    assert "apptainer exec --compat" in exec_ and "/s/x.sif python -m runner.tasks.cifar --epochs 2" in exec_
    assert SlurmSettings().apptainer_image("ghcr.io/org/img:1") == "docker://ghcr.io/org/img:1"


@pytest.mark.parametrize("runtime", ["docker", "podman", "apptainer", "none"])
def test_scripts_are_valid_bash(runtime: str, tmp_path: Path) -> None:
    s = spec(command=["python", "-m", "x"], slurm={"runtime": runtime, "sif": "/s/x.sif"}, array=3)
    path = tmp_path / "job.sh"
    path.write_text(render([sub(s, i) for i in range(3)], slurm_settings(s)))
    proc = subprocess.run(["bash", "-n", str(path)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"slurm": {"runtime": "none"}}, "command", "is needed with slurm.runtime none"),
    ({"slurm": {"runtime": "apptainer"}}, "slurm.sif", "make sif"),
    ({"slurm": {"sbatch": ["--requeue"]}}, "slurm.sbatch", "set by the runner"),
    ({"slurm": {"sbatch": ["--constraint=a b"]}}, "slurm.sbatch", "one sbatch option"),
    ({"slurm": {"login": "-oProxyCommand=x"}}, "slurm.login", "not an SSH host"),
    ({"slurm": {"partition": "spot;rm"}}, "slurm.partition", "not a Slurm name"),
    ({"slurm": {"runtime": "singularity"}}, "slurm.runtime", "apptainer"),
    ({"slurm": {"time_limit": 60}}, "slurm.time_limit", "no unit"),
])
def test_bad_settings_are_one_line_errors(changes: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(**changes)
    message = str(info.value)
    assert "\n" not in message and field in message and words in message, message


def test_simulated_preemption_is_refused_at_submit() -> None:
    problem = SlurmBackend.check_runnable(spec(simulate_preemption={"every": "20s"}))
    assert problem is not None and problem[0] == "simulate_preemption"
    assert SlurmBackend.check_runnable(spec()) is None  # file:// checkpoints: the cluster's shared file system


def test_cifar_specs_carry_a_slurm_section() -> None:
    for name in ("cifar", "cifar-smoke"):
        s = load_spec(ROOT / "jobs" / f"{name}.yaml", {"backend": "slurm", "slurm.runtime": "docker"})
        assert isinstance(s.section("slurm"), SlurmSettings)
    full = load_spec(ROOT / "jobs" / "cifar.yaml", {"backend": "slurm"})
    assert slurm_settings(full).runtime == "apptainer" and slurm_settings(full).sif
    units = SlurmBackend.service_units(full)
    assert units.unit == "GPU-hours" and units.per_hour == 1.0


# ---------------------------------------------------------------------------- the script, run by bash

TASK = r"""
import os, signal, sys, time
halt = os.environ["RUNNER_HALT_FILE"]
def stop(signum, frame):
    print("task: SIGTERM, halt file present:", os.path.exists(halt), flush=True)
    open(os.path.join(os.environ["OUT"], "stopped"), "w").write("1")
    sys.exit(75)
signal.signal(signal.SIGTERM, stop)
print("task: started", os.environ["RUNNER_ATTEMPT"], os.environ["RUNNER_CHECKPOINT_URI"], flush=True)
while True:
    time.sleep(0.05)
"""


def run_script(text: str, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    path = tmp_path / "job.sh"
    path.write_text(text)
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}, "SLURM_JOB_ID": "4242",
            "TMPDIR": str(tmp_path), **env}
    return subprocess.Popen(["bash", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full,
                            start_new_session=True)


def wait_line(proc: subprocess.Popen[str], words: str, timeout: float = 60) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if words in line:
            return seen
    raise AssertionError(f"no line with {words!r}:\n{''.join(seen)}")


def test_notice_reaches_the_task_and_its_exit_code_comes_back(tmp_path: Path) -> None:
    """SIGUSR1 to the batch shell (Slurm's --signal=B:USR1): halt file, SIGTERM to the task, exit 75 passed on."""
    s = spec(command=[sys.executable, "-c", TASK], checkpoint={"uri": f"file://{tmp_path}/ck"},
             slurm={"runtime": "none"})
    proc = run_script(render([sub(s)], slurm_settings(s)), tmp_path, {"OUT": str(tmp_path)})
    wait_line(proc, f"task: started 1 file://{tmp_path}/ck")
    assert (tmp_path / "ck").is_dir()
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 75, out
    assert "task: SIGTERM, halt file present: True" in out and "the task exited 75" in out
    assert not list(tmp_path.glob("spot-runner-4242.*")), "the scratch folder was left behind"


def test_stop_signal_removes_the_container(tmp_path: Path, docker_client: Any) -> None:
    """SIGTERM to the batch shell (scancel, end of grace): the container is stopped and gone."""
    s = spec(image=SMALL_IMAGE, command=["python3", "-c", "import time\nwhile True: time.sleep(1)"],
             checkpoint={"uri": f"file://{tmp_path}/ck"}, slurm={"runtime": "docker"})
    proc = run_script(render([sub(s)], slurm_settings(s)), tmp_path, {"SLURM_JOB_ID": f"t{os.getpid()}"})
    name = f"spot-runner-slurm-t{os.getpid()}"
    deadline = time.monotonic() + 60
    while not docker_client.containers.list(filters={"name": name}):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "SIGTERM from Slurm" in out, out
    assert not docker_client.containers.list(all=True, filters={"name": name}), "the container outlived the job"


@pytest.fixture(scope="module")
def docker_client() -> Any:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.images.get(SMALL_IMAGE)
    except Exception as exc:  # noqa: BLE001 - any engine problem: say what is missing
        if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"the Docker engine or {SMALL_IMAGE} is missing: {exc}; run make image")
        pytest.skip(f"no Docker engine or image: {exc}")
    yield client
    client.close()


def test_shell_quoting_survives_bash(tmp_path: Path) -> None:
    """Every env value reaches the task exactly, whatever its characters."""
    value = "a b 'c' \"d\" $HOME `x` \\ \n end"
    s = spec(env={"TRICKY": value}, command=[sys.executable, "-c",
             "import os; open(os.environ['OUT'] + '/v', 'w').write(os.environ['TRICKY'])"],
             checkpoint={"uri": f"file://{tmp_path}/ck"}, slurm={"runtime": "none"})
    proc = run_script(render([sub(s)], slurm_settings(s)), tmp_path, {"OUT": str(tmp_path)})
    proc.communicate(timeout=30)
    assert proc.returncode == 0 and (tmp_path / "v").read_text() == value
    assert shlex.quote(value) in render([sub(s)], slurm_settings(s))


def test_make_sif_says_in_one_line_when_apptainer_is_missing(tmp_path: Path) -> None:
    """`make sif`: with Apptainer, a .sif from the Docker image; without (here), one line and a failure."""
    proc = subprocess.run(["make", "-s", "sif", f"SIF_DIR={tmp_path}"], check=False, capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "SIF_DIR": str(tmp_path)}, timeout=3600)
    if shutil.which("apptainer") or shutil.which("singularity"):
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "runner-cifar_latest.sif").is_file()
        return
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("build-sif:")]
    assert len(lines) == 1 and "apptainer is not installed" in lines[0], proc.stderr
