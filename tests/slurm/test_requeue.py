"""Never both requeued by Slurm and resubmitted by the watcher, on a real cluster configured as some sites
are (``RequeueExit=75``: Slurm requeues even --no-requeue jobs that exit 75). The poll sees the restart
count, cancels the requeued copy while it waits (BeginTime), reports the run that ended, and the
watcher's next attempt is the only one that runs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.slurm.conftest import (
    CIFAR_IMAGE,
    runner,
    scheduler,
    slurm_runs,
    spec_file,
    status_json,
    submitted_id,
)

FIRST_EXITS_75 = 'echo "attempt $RUNNER_ATTEMPT"; [ "$RUNNER_ATTEMPT" != 1 ] || exit 75'


def test_a_job_slurm_requeued_runs_once_more_not_twice(slurm_conf: str, tmp_path: Path) -> None:
    conf = Path(slurm_conf)
    original = conf.read_text()
    conf.write_text(original + "RequeueExit=75\n")
    scheduler("scontrol", "reconfigure")
    try:
        path = spec_file(tmp_path, "requeued", {
            "image": CIFAR_IMAGE, "command": ["bash", "-c", FIRST_EXITS_75], "resources": {"cpus": 1, "memory": "256Mi"},
            "checkpoint": {"uri": f"file://{tmp_path}/ck"}, "backend": "slurm",
            "slurm": {"partition": "spot", "runtime": "none"}})
        home = tmp_path / "home"
        proc = runner("submit", str(path), "--interval", "1", home=home, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        conf.write_text(re.sub(r"^RequeueExit=75\n", "", conf.read_text(), flags=re.MULTILINE))
        scheduler("scontrol", "reconfigure")
    attempts = status_json(submitted_id(proc), home)["attempt_list"]
    assert [a["state"] for a in attempts] == ["PREEMPTED", "SUCCEEDED"], attempts
    assert "Slurm had requeued it: the copy was cancelled" in attempts[0]["reason"], attempts[0]
    first = slurm_runs(attempts[0]["backend_id"])
    assert [r[1] for r in first] == ["REQUEUED", "CANCELLED by 0"], first  # the copy was cancelled ...
    assert first[1][3] == "0", first  # ... before it ever ran (elapsed 0 s)
    assert [r[1] for r in slurm_runs(attempts[1]["backend_id"])] == ["COMPLETED"]
