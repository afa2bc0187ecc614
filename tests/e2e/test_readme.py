"""The README's first command block, run as written, in a fresh clone: the line every newcomer runs.

Twice: as root with root's real home (``~/.local/share/spot-runner``, no ``RUNNER_HOME``), and as a
new ordinary user in the ``docker`` group whose home has mode 700 (created here, removed after).
Nothing test-only is set: no ``RUNNER_*``, no endpoints, the default ports. Both runs must end with
the job SUCCEEDED and exit 0; then the same user runs ``runner status``, ``runner logs`` and
``runner report`` with their defaults.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USER = "sr-newcomer"
#: A login environment: what a person has, nothing the test suite set.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT = 30 * 60

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def first_block(readme: str) -> str:
    """Return the first fenced ``bash`` block of the README."""
    found = re.search(r"^```(?:bash|sh)\n(.*?)^```", readme, re.S | re.M)
    assert found, "README.md has no ```bash block"
    return found.group(1).strip()


def test_the_first_block_is_the_newcomers_command() -> None:
    block = first_block((ROOT / "README.md").read_text())
    assert "runner submit jobs/cifar-smoke.yaml" in block and "make test" not in block


@pytest.fixture(scope="module")
def block() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root: it runs the block as root and as a user it creates")
    if subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                      capture_output=True, text=True).stdout.strip():
        import warnings

        warnings.warn("the working tree has uncommitted changes: the README test runs the committed HEAD",
                      stacklevel=1)
    return first_block((ROOT / "README.md").read_text())


def clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=300)
    return dest


def run_as(user: str | None, home: Path, cwd: Path, script: str, env_extra: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with bash in ``cwd``, as ``user`` (None: root as this process is), with a login-like env."""
    if user is None:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM") or k.startswith("PIP_")}
        env.update(HOME=str(home), USER="root", LOGNAME="root", PATH=os.environ.get("PATH", BASE_PATH))
        argv = ["bash", "-euo", "pipefail", "-c", script]
    else:
        env = {}
        argv = ["runuser", "-u", user, "--", "env", "-i", f"HOME={home}", f"USER={user}", f"LOGNAME={user}",
                f"PATH={BASE_PATH}", "LANG=C.UTF-8", *(f"{k}={v}" for k, v in (env_extra or {}).items()),
                "bash", "-euo", "pipefail", "-c", script]
    return subprocess.run(argv, cwd=cwd, env=env or None, capture_output=True, text=True, timeout=TIMEOUT)


def job_of(output: str) -> str:
    found = re.search(r"^submitted (\S+) ", output, re.M)
    assert found, output[-3000:]
    return found.group(1)


def remove_containers(job_id: str) -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=spot-runner.job={job_id}"],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def check_success(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-6000:]}"
    job_id = job_of(proc.stdout)
    assert f"{job_id} SUCCEEDED" in proc.stdout, out[-6000:]
    assert re.search(r"final weights sha256 [0-9a-f]{64}", proc.stdout), out[-3000:]
    assert "Traceback" not in out, out[-6000:]
    return job_id


def test_as_root_with_roots_own_home(block: str, tmp_path: Path) -> None:
    home = Path(pwd.getpwuid(0).pw_dir)
    state = home / ".local" / "share" / "spot-runner"
    existed = state.exists()
    repo = clone(tmp_path / "spot-runner")
    proc = run_as(None, home, repo, block)
    job_id = ""
    try:
        job_id = check_success(proc)
        assert f"checkpoints at file://{state}/checkpoints/{job_id}" in proc.stdout
    finally:
        if job_id:
            remove_containers(job_id)
        if not existed:
            shutil.rmtree(state, ignore_errors=True)
        elif job_id:
            shutil.rmtree(state / "checkpoints" / job_id, ignore_errors=True)
        shutil.rmtree(repo, ignore_errors=True)


@pytest.fixture
def newcomer() -> Iterator[Path]:
    """A new user in the docker group with a home of mode 700; removed (home and all) afterwards."""
    if shutil.which("useradd") is None or subprocess.run(["getent", "group", "docker"]).returncode != 0:
        pytest.fail("needs useradd and a docker group (scripts/ensure-docker.sh installs docker.io)")
    subprocess.run(["userdel", "--remove", USER], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--groups", "docker", "--shell", "/bin/bash", USER], check=True)
    home = Path(pwd.getpwnam(USER).pw_dir)
    home.chmod(0o700)
    try:
        yield home
    finally:
        subprocess.run(["pkill", "-u", USER], capture_output=True)
        subprocess.run(["userdel", "--remove", USER], capture_output=True)


def test_as_a_new_user_in_the_docker_group_with_a_private_home(block: str, newcomer: Path) -> None:
    info = pwd.getpwnam(USER)
    with tempfile.TemporaryDirectory() as scratch:
        repo = clone(Path(scratch) / "spot-runner")
        subprocess.run(["chown", "-R", f"{info.pw_uid}:{info.pw_gid}", str(repo)], check=True)
        target = newcomer / "spot-runner"
        shutil.move(str(repo), target)
    proc = run_as(USER, newcomer, target, block)
    job_id = ""
    try:
        job_id = check_success(proc)
        state = newcomer / ".local" / "share" / "spot-runner"
        assert f"checkpoints at file://{state}/checkpoints/{job_id}" in proc.stdout
        # The other everyday commands, with their defaults, as the same user.
        after = run_as(USER, newcomer, target, f".venv/bin/runner status {job_id} --json; "
                                                f".venv/bin/runner logs {job_id} | tail -n 3; "
                                                f".venv/bin/runner report {job_id}; .venv/bin/runner status")
        assert after.returncode == 0, after.stdout + after.stderr
        status = json.loads(after.stdout[: after.stdout.index("\n}\n") + 3])
        assert status["state"] == "SUCCEEDED" and status["weights_sha256"]
        assert f"wrote {state}/reports/{job_id}.png" in after.stdout
        owned = {p.stat().st_uid for p in (state / "checkpoints" / job_id).rglob("*")}
        assert owned == {info.pw_uid}, "the task wrote files the user does not own"
    finally:
        if job_id:
            remove_containers(job_id)
