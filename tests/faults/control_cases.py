"""Fault case ``control-plane-faults``: the runner's own cloud calls (submit, poll, cancel) through the fault proxy.

For each cloud (AWS Batch on moto, GCP Batch and Azure Batch on the HTTP stand-ins of
``tests/standins``, all of which run the jobs as containers on the local engine), the backend talks
to a :class:`~tests.faults.proxy.FaultProxy` in front of the service that fails 30 % of the
requests (at most 2 in a row): connection resets, 500, 502, 503, 429, throttling (S3's
``SlowDown`` XML), truncated answers and 500s after the request was carried out. The watcher
(``runner.watcher.Watcher``, the loop of ``runner watch``) runs short jobs to the end, then a long
job is cancelled through the same proxy (``runner.service.cancel``).

A trial is one job. A loss: the job does not succeed (or, cancelled, does not end CANCELLED); it
has more than one attempt (a blip charged to the failure budget, or resubmitted); one attempt
started more than one container (a submit whose answer was lost, sent again); a container of a
cancelled job still runs; an error escaped. Containers are counted from the engine's events, so
moto's, which it removes when they end, are counted too.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.faults import CaseUnavailable, FaultContext, Row
from tests.faults.cases import Tally
from tests.faults.proxy import FaultProxy
from tests.faults.servers import environ

IMAGE = "localhost/py311-base:bookworm"
SHORT = ["python3", "-c", "import time; time.sleep(2); print('done')"]
LONG = ["python3", "-c", "import time; time.sleep(300)"]


class _Containers(threading.Thread):
    """Every container the engine starts meanwhile: (RUNNER_JOB_ID, RUNNER_ATTEMPT) -> container ids."""

    def __init__(self, client: Any) -> None:
        super().__init__(daemon=True)
        self.client, self.started = client, Counter()  # type: ignore[var-annotated]
        self.ids: dict[str, tuple[str, str]] = {}
        self._events = client.events(decode=True, filters={"type": "container", "event": "start"})

    def run(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when closed
            for event in self._events:
                cid = event.get("id", "")
                try:
                    env = self.client.api.inspect_container(cid)["Config"]["Env"] or []
                except Exception:  # noqa: BLE001, S112 - gone already: moto removes its containers
                    continue
                values = dict(e.split("=", 1) for e in env if "=" in e)
                if "RUNNER_JOB_ID" in values:
                    key = (values["RUNNER_JOB_ID"], values.get("RUNNER_ATTEMPT", "?"))
                    self.ids[cid] = key
                    self.started[key] += 1

    def running(self, job_id: str) -> list[str]:
        return [c.id for c in self.client.containers.list() if self.ids.get(c.id, ("",))[0] == job_id]

    def close(self) -> None:
        self._events.close()


def _docker() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
        client.images.get(IMAGE)
    except Exception as exc:  # no engine or no image: the case cannot run here
        raise CaseUnavailable(f"needs the Docker engine and {IMAGE} ({type(exc).__name__})") from exc
    return client


@contextlib.contextmanager
def _cloud(ctx: FaultContext, cloud: str, client: Any, proxy_seed: int) -> Iterator[tuple[Any, dict[str, Any], Any]]:
    """Yield (backend through the proxy, the spec's fields for this cloud, the proxy)."""
    from tests.integration.conftest import SESSION_ID, TEST_LABEL

    if cloud == "aws":
        from runner.backends.aws_batch import AwsBatchBackend
        from tests.integration.test_aws_batch import aws_settings

        server = ctx.emulator("s3")  # moto serves Batch too
        with environ(server.env):
            settings = aws_settings(server)
        with FaultProxy(server.url, seed=proxy_seed, rate=0.3, max_in_row=2) as proxy, environ(server.env):
            backend = AwsBatchBackend(endpoint_url=proxy.url)
            try:
                yield backend, {"backend": "aws", "aws": settings, "checkpoint": {"uri": "s3://unused/cp"}}, proxy
            finally:
                backend.close()
    elif cloud == "gcp":
        from runner.backends.gcp_batch import GcpBatchBackend
        from tests.standins.gcp_batch import GcpBatchStandIn

        standin = GcpBatchStandIn(client, container_labels={TEST_LABEL: SESSION_ID}).start()
        try:
            with FaultProxy(standin.url, seed=proxy_seed, rate=0.3, max_in_row=2) as proxy:
                backend = GcpBatchBackend(endpoint=proxy.url)
                try:
                    yield backend, {"backend": "gcp", "gcp": {"project": "test-project", "region": "us-central1"},
                                    "checkpoint": {"uri": "gs://unused/cp"}}, proxy
                finally:
                    backend.close()
        finally:
            standin.stop()
    else:
        from runner.backends.azure_batch import AzureBatchBackend
        from tests.standins.azure_batch import AzureBatchStandIn

        standin = AzureBatchStandIn(labels={TEST_LABEL: SESSION_ID}, recreate_s=1.0, client=client).start()
        try:
            with FaultProxy(standin.url, seed=proxy_seed, rate=0.3, max_in_row=2) as proxy, \
                    environ({"AZURE_BATCH_ACCOUNT": "standin", "AZURE_BATCH_KEY": "c3RhbmQtaW4ta2V5"}):
                pool = f"pool-{uuid.uuid4().hex[:6]}"
                fields = {"backend": "azure", "azure": {"account_url": proxy.url, "pool_id": pool,
                                                        "low_priority_nodes": 2},
                          "checkpoint": {"uri": "file:///tmp/unused"}}
                setup = _spec({**fields, "azure": {**fields["azure"], "account_url": standin.url}}, SHORT)
                AzureBatchBackend.init(setup, lambda line: None)  # runner init azure: the spot pool, not faulted
                backend = AzureBatchBackend()
                try:
                    yield backend, fields, proxy
                finally:
                    backend.close()
        finally:
            standin.stop()


def _spec(fields: dict[str, Any], command: list[str]) -> Any:
    from runner.spec import spec_from_dict

    return spec_from_dict({"name": "control-faults", "image": IMAGE, "command": command,
                           "resources": {"cpus": 0.5, "memory": "256Mi"},
                           "retries": {"preemptions": 3, "failures": 2}, **fields})


def _one_cloud(ctx: FaultContext, cloud: str, jobs: int, client: Any, rng: Any) -> Row:
    from runner import service
    from runner.ledger import Ledger
    from runner.watcher import Watcher

    tally = Tally(f"control plane through the proxy, {cloud} (submit, poll, cancel)")
    watcher_errors: list[str] = []
    seen = _Containers(client)
    seen.start()
    try:
        with _cloud(ctx, cloud, client, rng.randrange(1 << 30)) as (backend, fields, proxy), \
                Ledger(Path(ctx.workdir) / f"control-{cloud}" / "ledger.db") as ledger:
            ids = [ledger.create_job(_spec(fields, SHORT)) for _ in range(jobs)]
            watcher = Watcher(ledger, ids, backend_factory=lambda name: backend,
                              on_event=lambda e: watcher_errors.append(e.text) if "rror" in e.text else None)
            deadline = time.monotonic() + 300
            watcher.run(interval=0.5, should_stop=lambda: time.monotonic() > deadline)
            for job_id in ids:
                tally.trial()
                job, attempts = ledger.get_job(job_id), ledger.attempts(job_id)
                starts = {k: n for k, n in seen.started.items() if k[0] == job_id}
                said = [f"{a.state.value}: {a.reason}"[:160] for a in attempts]
                if job.state.value != "SUCCEEDED":
                    tally.loss(f"{job_id}: {job.state.value}, attempts {said}")
                elif len(attempts) != 1:
                    tally.loss(f"{job_id}: {len(attempts)} attempts {said}")
                elif any(n > 1 for n in starts.values()):
                    tally.loss(f"{job_id}: an attempt started {max(starts.values())} containers")
            # a long job, cancelled through the faults: nothing may keep running
            tally.trial()
            job_id = ledger.create_job(_spec(fields, LONG))
            watcher = Watcher(ledger, [job_id], backend_factory=lambda name: backend)
            started_by = time.monotonic() + 120
            while not seen.running(job_id) and time.monotonic() < started_by:
                watcher.run(interval=0.5, once=True)
                time.sleep(0.5)
            outcome = None
            for _ in range(20):  # as a user would: cancel again until it says nothing runs
                try:
                    outcome = service.cancel(ledger, job_id, backend_factory=lambda name: backend)
                except Exception as exc:  # noqa: BLE001 - judged below: one line is fine, a traceback is not
                    tally.count(f"cancel answered {type(exc).__name__}")
                    outcome = None
                if outcome is not None and not outcome.still_running:
                    break
                time.sleep(1.0)
            time.sleep(2.0)
            if seen.running(job_id):
                tally.loss(f"cancelled {job_id} still runs in {len(seen.running(job_id))} container(s)")
            elif ledger.get_job(job_id).state.value not in ("CANCELLED", "CANCELLING"):
                tally.loss(f"cancelled {job_id} reads {ledger.get_job(job_id).state.value}")
            summary = f"{proxy.requests} requests, 30% faulted: {proxy.summary()}"
    finally:
        seen.close()
    return tally.row(f"{jobs} jobs to the end, one cancelled; {summary}")


def control_plane_faults(ctx: FaultContext) -> list[Row]:
    """Submit, poll and cancel through the fault proxy on each cloud: every job ends right, none charged, none twice."""
    client = _docker()
    rng = ctx.rng("control-plane-faults")
    jobs = 2 if ctx.quick else 4
    return [_one_cloud(ctx, cloud, jobs, client, rng) for cloud in ("aws", "gcp", "azure")]
