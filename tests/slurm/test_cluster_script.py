"""scripts/ensure-slurm.sh itself: a second, throwaway cluster in a temporary folder (its own free ports),
started twice (the second call finds it running), asked for its status, then stopped with --stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.slurm.conftest import SCRIPT

DAEMONS = ("munge/munged.pid", "run/mariadb.pid", "run/slurmdbd.pid", "run/slurmctld.pid", "run/slurmd.pid")


def script(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPOT_RUNNER_SLURM_DIR": str(folder), "SPOT_RUNNER_SLURM_PODMAN": "0",
           "SPOT_RUNNER_SLURM_PODMAN_IMAGES": "", "SPOT_RUNNER_SLURM_CPUS": "2"}
    return subprocess.run([str(SCRIPT), *args], check=False, capture_output=True, text=True, env=env, timeout=300)


def alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def test_start_twice_status_and_stop(slurm_conf: str, tmp_path: Path) -> None:
    private = script(tmp_path / "c")  # pytest's folders are mode 700: munge and mysql cannot walk in
    assert private.returncode == 1 and "cannot be reached by the munge user" in private.stderr, private.stderr
    assert len(private.stderr.strip().splitlines()) == 1
    folder = Path(tempfile.mkdtemp(prefix="spot-runner-slurm-test-", dir="/tmp"))
    folder.chmod(0o755)
    first = script(folder)
    try:
        assert first.returncode == 0, first.stderr
        assert first.stdout == f"SLURM_CONF={folder}/etc/slurm.conf\n"  # stdout carries only that
        assert all(alive(folder / d) for d in DAEMONS), first.stderr
        started = time.monotonic()
        again = script(folder)
        assert again.returncode == 0 and again.stdout == first.stdout, again.stderr
        assert time.monotonic() - started < 30 and "starting" not in again.stderr  # found running: nothing started
        partitions = subprocess.run(["sinfo", "-h", "-o", "%P %l"], check=True, capture_output=True, text=True,
                                    env={**os.environ, "SLURM_CONF": f"{folder}/etc/slurm.conf"}).stdout.split("\n")
        assert partitions[:3] == ["spot* infinite", "short 1:00", "high infinite"], partitions
        assert script(folder, "--status").returncode == 0
    finally:
        stopped = script(folder, "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(folder / d) for d in DAEMONS)
    assert script(folder, "--status").returncode == 1
    assert script(folder, "--bogus").returncode == 1
    shutil.rmtree(folder, ignore_errors=True)
    Path(f"{folder}.lock").unlink(missing_ok=True)  # the script's lock, beside its folder
