"""A slurmctld that does not answer is a transient fault, never a charged failure: submit raises
BackendUnavailable (the attempt stays reserved, uncharged, and is submitted once the controller is back)
and poll answers UNKNOWN. Two ways a controller fails to answer, against the real Slurm commands: a
closed port (connection refused) and a port that accepts and never replies (socket timed out)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.backends.base import Submission
from runner.backends.slurm import SlurmBackend
from runner.errors import BackendUnavailable
from runner.ledger import Ledger
from runner.spec import load_spec
from runner.states import AttemptState
from runner.watcher import Watcher
from tests.slurm.conftest import CIFAR_IMAGE, spec_file


@pytest.fixture(params=["refused", "silent"])
def broken_conf(request: pytest.FixtureRequest, slurm_conf: str, tmp_path: Path) -> Iterator[Path]:
    """A copy of the cluster's slurm.conf whose controller does not answer (short timeouts: a test)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    if request.param == "silent":
        server.listen(16)

        def accept() -> None:
            while True:
                try:
                    held.append(server.accept()[0])  # never read, never answered
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
    else:
        server.close()  # nothing listens there any more
    text = re.sub(r"^SlurmctldPort=.*$", f"SlurmctldPort={port}", Path(slurm_conf).read_text(), flags=re.MULTILINE)
    conf = tmp_path / "slurm.conf"
    conf.write_text(text + "MessageTimeout=2\nTCPTimeout=1\n")
    yield conf
    server.close()
    for conn in held:
        conn.close()


def test_submit_and_poll_treat_a_silent_controller_as_transient(broken_conf: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(broken_conf))
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = load_spec(spec_file(tmp_path, "down", {
        "image": CIFAR_IMAGE, "command": ["true"], "checkpoint": {"uri": f"file://{tmp_path}/ck"},
        "backend": "slurm", "slurm": {"runtime": "none"}}))
    sub = Submission(spec, "down-1", "down-1-0-1", 1, 0, f"file://{tmp_path}/ck", spec.container_env("down-1", 1, "x"))
    backend = SlurmBackend()
    with pytest.raises(BackendUnavailable, match=r"(?i)unable to contact slurm controller|socket timed out"):
        backend.submit(sub)
    statuses = backend.poll(["123", "124_3"])
    assert {s.state for s in statuses.values()} == {AttemptState.UNKNOWN}, statuses


def test_watcher_waits_uncharged_and_submits_when_the_controller_is_back(slurm_conf: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "down.conf"
    conf.write_text(re.sub(r"^SlurmctldPort=.*$", "SlurmctldPort=1", Path(slurm_conf).read_text(), flags=re.MULTILINE)
                    + "MessageTimeout=2\nTCPTimeout=1\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    path = spec_file(tmp_path, "later", {
        "image": CIFAR_IMAGE, "command": ["true"], "resources": {"cpus": 1, "memory": "256Mi"},
        "checkpoint": {"uri": f"file://{tmp_path}/ck"}, "backend": "slurm",
        "slurm": {"partition": "spot", "runtime": "none"}, "retries": {"failures": 0}})
    events: list[str] = []
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(load_spec(path), path)
        watcher = Watcher(ledger, [job_id], on_event=lambda e: events.append(e.text), submit_retries=1)
        try:
            monkeypatch.setenv("SLURM_CONF", str(conf))
            watcher.tick()
            watcher.tick()
            (attempt,) = ledger.attempts(job_id)
            assert attempt.backend_id is None and not attempt.state.is_terminal(), attempt
            assert ledger.get_job(job_id).failures_used == 0
            assert any("waits for its backend" in e for e in events), events
            monkeypatch.setenv("SLURM_CONF", slurm_conf)  # the controller answers again
            watcher.tick()
            (attempt,) = ledger.attempts(job_id)
            assert attempt.backend_id and attempt.backend_id.isdigit(), (attempt, events)
        finally:
            watcher.close()
