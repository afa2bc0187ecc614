"""The gcp backend through the real google-cloud-batch client (REST) against the stand-in.

The stand-in (tests/standins/gcp_batch.py) runs each task as a container on the local engine and
reports preemptions as GCP does: exit 50001 and "... due to Spot Preemption with exit code 50001."

How the watcher sees a task GCP retried itself (the lifecycle policy RETRY_TASK on 50001/75):
it does not. The job stays RUNNING while GCP runs the task again, so the attempt stays RUNNING
and nothing is resubmitted; once GCP's ``max_retry_count`` is spent the job FAILS and the attempt
is PREEMPTED, and only then does the watcher start the next attempt.
"""

from __future__ import annotations

import dataclasses

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("google.cloud.batch_v1")

from runner.backends.base import Submission  # noqa: E402
from runner.backends.gcp_batch import GcpBatchBackend  # noqa: E402
from runner.ledger import Ledger  # noqa: E402
from runner.spec import spec_from_dict  # noqa: E402
from runner.states import AttemptState, AttemptStatus  # noqa: E402
from tests.integration.conftest import CIFAR_IMAGE, SESSION_ID, TEST_LABEL  # noqa: E402
from tests.standins.gcp_batch import GcpBatchStandIn  # noqa: E402

pytestmark = pytest.mark.docker
URI = "gs://spot-runner-test/integration"


@pytest.fixture(scope="module")
def standin(docker_client: Any) -> Iterator[GcpBatchStandIn]:
    server = GcpBatchStandIn(docker_client, container_labels={TEST_LABEL: SESSION_ID}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def backend(standin: GcpBatchStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcpBatchBackend]:
    monkeypatch.setenv("RUNNER_GCP_BATCH_ENDPOINT", standin.url)
    made = GcpBatchBackend()  # as the watcher builds it: no arguments
    try:
        yield made
    finally:
        made.close()


def script(code: str, preemptions: int = 1, **extra: Any) -> Any:
    return spec_from_dict({"name": "gcp-it", "image": CIFAR_IMAGE, "command": ["python", "-c", code],
                           "backend": "gcp", "gcp": {"project": "test-project", "region": "us-central1"},
                           "resources": {"cpus": 0.5, "memory": "256Mi"}, "checkpoint": {"uri": URI},
                           "retries": {"preemptions": preemptions, "failures": 0}, **extra})


def submission(spec: Any, job_id: str, index: int = 0, attempt: int = 1) -> Submission:
    uri = spec.checkpoint_uri_for(index, job_id)
    return Submission(spec=spec, job_id=job_id, key=f"{job_id}-{index}-{attempt}", attempt=attempt,
                      array_index=index, checkpoint_uri=uri, env=spec.container_env(job_id, attempt, uri))


def wait_for(backend: GcpBatchBackend, backend_id: str, done: Callable[[AttemptStatus], bool],
             timeout: float = 60, seen: list[AttemptStatus] | None = None) -> AttemptStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.poll([backend_id])[backend_id]
        if seen is not None:
            seen.append(status)
        if done(status):
            return status
        assert time.monotonic() < deadline, f"still {status} after {timeout:.0f} s"
        time.sleep(0.3)


SLEEP = "import time; time.sleep(120)"


def test_submit_poll_find_cancel(backend, standin, home):
    spec = script(SLEEP)
    with Ledger() as ledger:
        job_id = ledger.create_job(spec)
    sub = submission(spec, job_id)
    name = backend.submit(sub)
    assert name.startswith("projects/test-project/locations/us-central1/jobs/")
    assert backend.submit(sub) == name  # the same key adopts the job
    assert backend.find(sub) == name
    assert backend.find(dataclasses.replace(sub, key=f"{job_id}-0-2")) is None
    wait_for(backend, name, lambda s: s.state is AttemptState.RUNNING)
    logs = list(backend.logs(name))
    assert logs[0].startswith("task output is in Cloud Logging: https://console.cloud.google.com/logs/query")
    assert any("to RUNNING" in line for line in logs)
    backend.cancel(name)
    status = wait_for(backend, name, lambda s: s.is_terminal())
    assert status.state is AttemptState.CANCELLED
    backend.cancel(name)  # idempotent
    assert ("POST", f"/v1/{name}:cancel") in standin.requests


def test_preempted_task_is_retried_in_place_then_reported(backend, standin):
    """GCP's own retry (max_retry_count 1) hides the first preemption; the second ends the attempt."""
    code = "import os, time; print('retry', os.environ['BATCH_TASK_RETRY_ATTEMPT'], flush=True); time.sleep(120)"
    name = backend.submit(submission(script(code, preemptions=1), "gcp-it-preempt"))
    wait_for(backend, name, lambda s: s.state is AttemptState.RUNNING)
    seen: list[AttemptStatus] = []
    assert standin.preempt(standin.jobs[name])
    deadline = time.monotonic() + 30
    while not (standin.jobs[name].tasks[0].failures == 1 and standin.jobs[name].tasks[0].state == "RUNNING"):
        seen.append(backend.poll([name])[name])
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert {s.state for s in seen} <= {AttemptState.RUNNING}, seen  # never PREEMPTED, never resubmitted
    time.sleep(1)
    assert standin.preempt(standin.jobs[name])
    status = wait_for(backend, name, lambda s: s.is_terminal())
    assert status.state is AttemptState.PREEMPTED and status.exit_code == 50001
    assert "due to Spot Preemption with exit code 50001" in status.reason
    events = [e["description"] for e in standin.jobs[name].tasks[0].events]
    assert sum("Spot Preemption" in e for e in events) == 2
    assert any("retry 1 of 1" in e for e in events)


@pytest.mark.parametrize("exit_code,state,words", [(75, AttemptState.PREEMPTED, "preemption notice"),
                                                   (3, AttemptState.FAILED, "with exit code 3")])
def test_exit_codes(backend, exit_code, state, words):
    name = backend.submit(submission(script(f"raise SystemExit({exit_code})", preemptions=0),
                                     f"gcp-it-exit{exit_code}"))
    status = wait_for(backend, name, lambda s: s.is_terminal())
    assert (status.state, status.exit_code) == (state, exit_code) and words in status.reason


def test_array_children_in_one_job(backend, standin):
    code = "import os, sys; sys.exit(0 if os.environ['BATCH_TASK_INDEX'] == os.environ['RUNNER_CHECKPOINT_URI'][-1] else 9)"
    spec = script(code, array=3, preemptions=0)
    ids = backend.submit_many([submission(spec, "gcp-it-array", i) for i in range(3)])
    assert [i.rsplit("/", 1)[-1] for i in ids] == ["0", "1", "2"] and len({i.split("/taskGroups")[0] for i in ids}) == 1
    deadline = time.monotonic() + 60
    while True:
        statuses = backend.poll(ids)
        if all(s.is_terminal() for s in statuses.values()):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.3)
    assert {s.state for s in statuses.values()} == {AttemptState.SUCCEEDED}


def test_service_down_is_unknown_then_recovers(backend, standin, home):
    """The watcher, polling while the stand-in is down, records UNKNOWN and resubmits nothing."""
    from runner.watcher import Watcher

    spec = script("import time; time.sleep(6)")
    events: list[str] = []
    with Ledger() as ledger:
        job_id = ledger.create_job(spec)
        watcher = Watcher(ledger, [job_id], on_event=lambda e: events.append(e.text),
                          backend_factory=lambda name: backend)
        watcher.tick()
        (attempt,) = ledger.attempts(job_id)
        assert attempt.backend_id
        wait_for(backend, attempt.backend_id, lambda s: s.state is AttemptState.RUNNING)
        standin.pause()
        try:
            status = backend.poll([attempt.backend_id])[attempt.backend_id]
            assert status.state is AttemptState.UNKNOWN and "cannot poll" in status.reason
            for _ in range(3):
                watcher.tick()
            time.sleep(7)  # the task ends meanwhile
            watcher.tick()
            (attempt,) = ledger.attempts(job_id)
            assert attempt.state is AttemptState.UNKNOWN
        finally:
            standin.resume()
        deadline = time.monotonic() + 180  # bounded: a job that never ends fails here, never hangs the suite
        watcher.run(interval=0.5, should_stop=lambda: time.monotonic() > deadline)
        assert [a.state for a in ledger.attempts(job_id)] == [AttemptState.SUCCEEDED]
        assert ledger.get_job(job_id).state.value == "SUCCEEDED"
    assert any("state unknown" in e and "not resubmitting" in e for e in events), events
