"""Slurm through a login node over SSH (``slurm.login``), against a real sshd started on a free port as
the cluster's login node: key authentication from an SSH config file (RUNNER_SLURM_SSH="ssh -F ..."),
BatchMode (never a password). Submit, status, logs and cancel all go through it; ids carry the host."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.conftest import (
    CIFAR_IMAGE,
    VENV,
    runner,
    scheduler,
    spec_file,
    status_json,
    submitted_id,
    wait_for,
    wait_job,
)

HOST = "slurm-login"


@pytest.fixture
def login(slurm_conf: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An sshd on 127.0.0.1:<free port> whose sessions see the cluster (SetEnv SLURM_CONF) and a home in tmp."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        pytest.fail("sshd is missing: scripts/ensure-slurm.sh installs openssh-server")
    keys, home = tmp_path / "keys", tmp_path / "login-home"
    keys.mkdir()
    home.mkdir()
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "user.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nPidFile {keys / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"SetEnv SLURM_CONF={slurm_conf} HOME={home}\n")
    (keys / "ssh_config").write_text(
        f"Host {HOST}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {keys / 'user'}\n"
        "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(keys / "sshd_config")], stderr=subprocess.PIPE, text=True)
    ssh = f"ssh -F {keys / 'ssh_config'}"
    try:
        wait_for(lambda: subprocess.run([*ssh.split(), "-o", "BatchMode=yes", HOST, "true"], check=False,
                                        capture_output=True).returncode == 0, 30, "sshd to accept the key")
        yield {"RUNNER_SLURM_SSH": ssh, "home": str(home)}
    finally:
        server.terminate()
        server.wait(10)


def test_jobs_run_through_a_login_node(login: dict[str, str], tmp_path: Path) -> None:
    env = {"RUNNER_SLURM_SSH": login["RUNNER_SLURM_SSH"], "SLURM_CONF": "/nonexistent/slurm.conf"}  # only there
    common = {"image": CIFAR_IMAGE, "resources": {"cpus": 1, "memory": "256Mi"}, "backend": "slurm"}
    slurm = {"partition": "spot", "runtime": "none", "venv": str(VENV), "login": HOST}
    home = tmp_path / "home"
    hello = spec_file(tmp_path, "hello", {**common, "command": ["python", "-c", "print('hello from the cluster')"],
                                          "checkpoint": {"uri": f"file://{tmp_path}/ck1"}, "slurm": slurm})
    proc = runner("submit", str(hello), "--interval", "1", home=home, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = submitted_id(proc)
    backend_id = status_json(job_id, home)["attempt_list"][0]["backend_id"]
    assert backend_id.startswith(f"{HOST}/"), backend_id
    logs = runner("logs", job_id, home=home, env=env, check=True).stdout
    assert "hello from the cluster" in logs, logs
    out = Path(login["home"]) / ".spot-runner/slurm/logs" / f"slurm-{backend_id.split('/')[1]}.out"
    assert out.is_file()  # in the login node's home, not this one's

    sleeper = spec_file(tmp_path, "sleeper", {**common, "command": ["python", "-c", "import time; time.sleep(300)"],
                                              "checkpoint": {"uri": f"file://{tmp_path}/ck2"}, "slurm": slurm})
    job_id = submitted_id(runner("submit", str(sleeper), "--detach", "--interval", "1", home=home, env=env, check=True))
    running = wait_for(lambda: (a := status_json(job_id, home)["attempt_list"]) and a[0]["state"] == "RUNNING" and a,
                       60, "the sleeper to run")
    runner("cancel", job_id, home=home, env=env, check=True)
    assert wait_job(job_id, home, 60)["state"] == "CANCELLED"
    slurm_job = running[0]["backend_id"].split("/")[1]
    wait_for(lambda: not scheduler("squeue", "-h", "-j", slurm_job, check=False).strip(), 60, "scancel over SSH")
