"""A DNS failure is a blip on every cloud: the real SDK clients pointed at a host that does not resolve.

No engine and no emulator: the name ``no-such-host.invalid`` never resolves (RFC 2606), so each
SDK raises its own resolution error (botocore EndpointConnectionError, requests ConnectionError
under google-cloud-batch's REST transport, azure-core ServiceRequestError), and the skeleton
(runner/backends/cloud.py) must turn every one into "wait", never into a failure:

- ``submit`` raises BackendUnavailable, ``find`` and ``cancel`` a BackendError that is
  BackendUnavailable, ``poll`` reports UNKNOWN (never FAILED);
- a Watcher with the real backend keeps the attempt reserved (PENDING, no backend id), says once
  that it waits for its backend, and charges no budget, pass after pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.backends.base import Backend, Submission
from runner.errors import BackendUnavailable
from runner.ledger import Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, JobState
from runner.watcher import Watcher

HOST = "no-such-host.invalid"
URL = f"http://{HOST}"


def aws() -> tuple[Backend, dict[str, Any], str]:
    from botocore.config import Config

    from runner.backends.aws_batch import AwsBatchBackend

    backend = AwsBatchBackend(endpoint_url=URL, config=Config(retries={"mode": "standard", "max_attempts": 2},
                                                                 connect_timeout=2, read_timeout=5))
    return backend, {"aws": {"job_queue": "q", "region": "us-east-1"},
                     "checkpoint": {"uri": "s3://bucket/dns"}}, "us-east-1/0123abcd-0000-4000-8000-000000000000"


def gcp() -> tuple[Backend, dict[str, Any], str]:
    from runner.backends.gcp_batch import GcpBatchBackend

    return (GcpBatchBackend(endpoint=URL), {"gcp": {"project": "p", "region": "us-central1"},
                                            "checkpoint": {"uri": "gs://bucket/dns"}},
            "projects/p/locations/us-central1/jobs/dns-0-1-abc")


def azure() -> tuple[Backend, dict[str, Any], str]:
    from runner.backends.azure_batch import AzureBatchBackend

    return (AzureBatchBackend(), {"azure": {"account_url": URL, "pool_id": "pool"},
                                  "checkpoint": {"uri": "az://container/dns"}}, f"{URL}|job|task")


CLOUDS: dict[str, Callable[[], tuple[Backend, dict[str, Any], str]]] = {"aws": aws, "gcp": gcp, "azure": azure}


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test values only: the request never leaves this machine, the name does not resolve."""
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path))
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AZURE_BATCH_ACCOUNT": "standin",
                       "AZURE_BATCH_KEY": "c3RhbmQtaW4ta2V5"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BATCH", "RUNNER_GCP_BATCH_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)


def spec_for(name: str, section: dict[str, Any]) -> Any:
    return spec_from_dict({"name": f"dns-{name}", "image": "localhost/runner-cifar:latest", "backend": name,
                           "command": ["python3", "-c", "pass"], "retries": {"failures": 0, "preemptions": 1},
                           **section})


@pytest.mark.parametrize("name", sorted(CLOUDS))
def test_every_call_of_a_backend_that_does_not_resolve_waits(name: str) -> None:
    backend, section, backend_id = CLOUDS[name]()
    spec = spec_for(name, section)
    uri = spec.checkpoint_uri_for(0, "dns-job")
    sub = Submission(spec=spec, job_id="dns-job", key="dns-job-0-1", attempt=1, array_index=0, checkpoint_uri=uri,
                     env=spec.container_env("dns-job", 1, uri))
    try:
        with pytest.raises(BackendUnavailable) as submitted:
            backend.submit(sub)
        with pytest.raises(BackendUnavailable):
            backend.find(sub)
        with pytest.raises(BackendUnavailable):
            backend.cancel(backend_id)
        status = backend.poll([backend_id])[backend_id]
    finally:
        backend.close()
    assert "no budget is charged" in str(submitted.value) and "\n" not in str(submitted.value)
    assert HOST in str(submitted.value) or "resolve" in str(submitted.value).lower(), submitted.value
    assert status.state is AttemptState.UNKNOWN, status
    assert HOST in status.reason or "resolve" in status.reason.lower(), status


@pytest.mark.parametrize("name", sorted(CLOUDS))
def test_a_watcher_waits_out_a_dns_failure_without_charging(name: str, tmp_path: Path) -> None:
    backend, section, _ = CLOUDS[name]()
    events: list[str] = []
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec_for(name, section))
        watcher = Watcher(ledger, [job_id], on_event=lambda e: events.append(e.text),
                          backend_factory=lambda _n: backend)
        for _ in range(2):
            watcher.tick()
        job, attempts = ledger.get_job(job_id), ledger.attempts(job_id)
        watcher.close()
    assert [(a.number, a.state, a.backend_id) for a in attempts] == [(1, AttemptState.PENDING, None)], attempts
    assert job.state in (JobState.QUEUED, JobState.RUNNING) and job.failures_used == 0, job
    assert sum("waits for its backend" in e for e in events) == 1, events  # said once, not every pass
    assert not any("could not be submitted" in e or "failed" in e for e in events), events
