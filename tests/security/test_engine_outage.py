"""An unreachable backend is an outage, not the attempt's failure: the same attempt waits, uncharged."""

from __future__ import annotations

from pathlib import Path

from runner.errors import BackendUnavailable
from runner.ledger import Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, JobState
from runner.watcher import Watcher
from tests.unit.test_lease import FakeBackend


class FlakyEngine(FakeBackend):
    """Unreachable for the first ``down`` submit calls and ``find`` calls, then fine."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    def submit(self, sub):  # type: ignore[no-untyped-def]
        if self.down > 0:
            self.down -= 1
            raise BackendUnavailable("cannot reach the Docker engine (connection refused): start dockerd")
        return super().submit(sub)

    def find(self, sub):  # type: ignore[no-untyped-def]
        if self.down > 0:
            self.down -= 1
            raise BackendUnavailable("cannot reach the Docker engine (connection refused): start dockerd")
        return super().find(sub)


def test_regression_engine_outage_is_not_charged_to_the_failure_budget(tmp_path: Path) -> None:
    """Found by tests/faults/test_engine_restart.py: a submit during a 2.4 s engine restart marked the
    attempt FAILED ("submit failed: cannot reach the Docker engine") and spent the failure budget."""
    engine = FlakyEngine(down=10)  # longer than the watcher's 3 submit retries
    events: list[str] = []
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec_from_dict({"name": "outage", "image": "localhost/runner-cifar:latest",
                                                   "retries": {"preemptions": 3, "failures": 0}}))
        watcher = Watcher(ledger, on_event=lambda e: events.append(e.text), backend_factory=lambda _n: engine)
        for _ in range(12):
            watcher.tick()
            if engine.submitted:
                break
        assert engine.submitted == [f"{job_id}-0-1"], events
        engine.finish(engine.submitted[0], AttemptState.SUCCEEDED, 0)
        watcher.tick()
        attempts = ledger.attempts(job_id)
        job = ledger.get_job(job_id)
    assert [(a.number, a.state) for a in attempts] == [(1, AttemptState.SUCCEEDED)]
    assert job.state == JobState.SUCCEEDED and job.failures_used == 0
    assert sum("waits for its backend" in e for e in events) == 1, events
