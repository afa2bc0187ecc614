"""The azure backend through the real azure-batch SDK against the HTTP stand-in (tests/standins).

Tasks run as containers on the local engine. Covers: `init` creating the spot pool once,
submit/poll/logs, exit codes, the Azure way of preempting (node `preempted`, task requeued),
task collections in chunks of 100, and a stand-in that is down reading UNKNOWN, never FAILED.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("azure.batch")

from runner.backends.azure_batch import AzureBatchBackend  # noqa: E402
from runner.backends.base import Submission  # noqa: E402
from runner.spec import JobSpec, spec_from_dict  # noqa: E402
from runner.states import AttemptState  # noqa: E402
from tests.integration.conftest import CIFAR_IMAGE, SESSION_ID, TEST_LABEL  # noqa: E402

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def standin(docker_client: Any) -> Iterator[Any]:
    from tests.standins.azure_batch import AzureBatchStandIn

    service = AzureBatchStandIn(labels={TEST_LABEL: SESSION_ID}, recreate_s=1.0, client=docker_client).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(autouse=True)
def batch_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT", "standin")
    monkeypatch.setenv("AZURE_BATCH_KEY", "c3RhbmQtaW4ta2V5")  # any base64 works: the stand-in checks nothing


def make_spec(standin: Any, script: str, pool: str = "pool-a", nodes: int = 1) -> JobSpec:
    return spec_from_dict({
        "name": "az-int", "image": CIFAR_IMAGE, "command": ["python", "-c", script], "backend": "azure",
        "resources": {"cpus": 1, "memory": "1Gi"},
        "azure": {"account_url": standin.url, "pool_id": pool, "low_priority_nodes": nodes}})


def sub(spec: JobSpec, job: str, number: int = 1, index: int = 0) -> Submission:
    return Submission(spec=spec, job_id=job, key=f"{job}-{index}-{number}", attempt=number, array_index=index,
                      checkpoint_uri="file:///tmp/unused", env={"GREETING": "hello from azure"})


def wait_for(backend: AzureBatchBackend, backend_id: str, states: set[AttemptState], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.poll([backend_id])[backend_id]
        if status.state in states:
            return status
        time.sleep(0.3)
    raise AssertionError(f"{backend_id} never reached {states}; last {status}")


def test_init_creates_the_spot_pool_once(standin):
    spec = make_spec(standin, "pass", pool="pool-init", nodes=2)
    lines: list[str] = []
    AzureBatchBackend.init(spec, lines.append)
    AzureBatchBackend.init(spec, lines.append)
    assert lines[0].startswith("created pool pool-init") and "2 low-priority (spot)" in lines[0]
    assert lines[1].startswith("found pool pool-init") and "2 low-priority and 0 dedicated" in lines[1]
    posted = [body for method, path, body in standin.requests if (method, path) == ("POST", "/pools")]
    assert len(posted) == 1 and posted[0]["virtualMachineConfiguration"]["containerConfiguration"]["type"] \
        == "dockerCompatible"
    assert len(standin.list_nodes("pool-init")) == 2


def test_submit_poll_logs_and_exit_codes(standin):
    backend = AzureBatchBackend()
    spec = make_spec(standin, "import os, sys; print(os.environ['GREETING'], os.environ['AZ_BATCH_NODE_IS_DEDICATED'])")
    AzureBatchBackend.init(spec, lambda _: None)
    ok = backend.submit(sub(spec, "az-ok"))
    assert backend.submit(sub(spec, "az-ok")) == ok  # the same key adopts the same task
    status = wait_for(backend, ok, {AttemptState.SUCCEEDED, AttemptState.FAILED})
    assert status.state is AttemptState.SUCCEEDED and status.exit_code == 0
    assert list(backend.logs(ok)) == ["hello from azure false"]
    for code, expected in ((75, AttemptState.PREEMPTED), (3, AttemptState.FAILED)):
        spec_n = make_spec(standin, f"import sys; sys.exit({code})")
        backend_id = backend.submit(sub(spec_n, f"az-exit{code}"))
        status = wait_for(backend, backend_id, {expected})
        assert status.exit_code == code, status
    task_posts = [body for method, path, body in standin.requests if path == "/jobs/az-ok/tasks"]
    assert task_posts[0]["constraints"]["maxTaskRetryCount"] == 0
    backend.close()


def test_preempted_the_azure_way(standin, docker_client):
    """Node `preempted`, task requeued to active: PREEMPTED, and the requeued task never runs again."""
    backend = AzureBatchBackend()
    spec = make_spec(standin, "import time; print('working', flush=True); time.sleep(120)")
    AzureBatchBackend.init(spec, lambda _: None)
    backend_id = backend.submit(sub(spec, "az-pre"))
    wait_for(backend, backend_id, {AttemptState.RUNNING})
    request = urllib.request.Request(f"{standin.url}/_standin/preempt?job=az-pre&task=az-pre-0-1", method="POST")
    answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
    nodes = {n["id"]: n["state"] for n in standin.list_nodes("pool-a")}
    assert nodes[answer["node"]] == "preempted"
    assert standin.get_task("az-pre", "az-pre-0-1")["state"] == "active"  # Azure requeued it
    status = backend.poll([backend_id])[backend_id]
    assert status.state is AttemptState.PREEMPTED and "preempted" in status.reason, status
    time.sleep(2.5)  # the node is re-created meanwhile; the ended task must not run again
    assert standin.runs[("az-pre", "az-pre-0-1")] == 1
    assert standin.get_task("az-pre", "az-pre-0-1")["state"] == "completed"
    later = AzureBatchBackend().poll([backend_id])[backend_id]  # a fresh watcher reads the same
    assert later.state is AttemptState.PREEMPTED, later
    backend.cancel(backend_id)  # idempotent on a completed task
    next_id = backend.submit(sub(spec, "az-pre", number=2))
    wait_for(backend, next_id, {AttemptState.RUNNING})
    backend.cancel(next_id)
    assert wait_for(backend, next_id, {AttemptState.CANCELLED}).state is AttemptState.CANCELLED


def test_task_collections_go_in_chunks_of_100(standin):
    backend = AzureBatchBackend()
    spec = make_spec(standin, "pass", pool="pool-empty", nodes=0)  # no node: nothing ever runs
    AzureBatchBackend.init(spec, lambda _: None)
    ids = backend.submit_many([sub(spec, "az-array", index=i) for i in range(150)])
    assert len(set(ids)) == 150 and ids[7].endswith("|az-array|az-array-7-1")
    sizes = [len(body["value"]) for method, path, body in standin.requests if path == "/jobs/az-array/addtaskcollection"]
    assert sizes == [100, 50]
    again = backend.submit_many([sub(spec, "az-array", index=i) for i in range(150)])  # TaskExists: adopted
    assert again == ids
    before = len(standin.requests)
    statuses = backend.poll(ids)
    assert {s.state for s in statuses.values()} == {AttemptState.PENDING}
    assert [path for _, path, _ in standin.requests[before:]] == ["/jobs/az-array/tasks"]  # one call for 150


def test_stand_in_down_reads_unknown_never_failed(standin, tmp_path):
    from runner.ledger import Ledger
    from runner.watcher import Watcher

    spec = make_spec(standin, "import time; time.sleep(6)")
    AzureBatchBackend.init(spec, lambda _: None)
    events: list[str] = []
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
        watcher = Watcher(ledger, [job_id], on_event=lambda e: events.append(e.text))
        watcher.tick()
        attempt = ledger.attempts(job_id)[0]
        assert attempt.backend_id and attempt.backend_id.startswith(standin.url + "|")
        standin.pause()
        try:
            started = time.monotonic()
            for _ in range(3):
                watcher.tick()
            assert time.monotonic() - started < 30
            attempts = ledger.attempts(job_id)
            assert len(attempts) == 1 and attempts[0].state is AttemptState.UNKNOWN, attempts
            assert any("state unknown" in text for text in events)
            assert ledger.get_job(job_id).state.value in ("QUEUED", "RUNNING")
        finally:
            standin.resume()
        deadline = time.monotonic() + 180  # bounded: a job that never ends fails here, never hangs the suite
        watcher.run(interval=0.5, should_stop=lambda: time.monotonic() > deadline)
        watcher.close()
        assert ledger.get_job(job_id).state.value == "SUCCEEDED"
        assert len(ledger.attempts(job_id)) == 1
