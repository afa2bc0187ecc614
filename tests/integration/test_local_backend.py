"""LocalBackend and the Preemptor against the real Docker engine.

A tiny test image (``localhost/spot-runner-test:local``, FROM localhost/py311-base:bookworm) is
built on first use; it carries this checkout's ``runner.task.notices`` so the parachute test runs
the real NoticeWatcher inside a container, polling the real MetadataSimulator on this host
through ``host.docker.internal``. Nothing is ever pulled. Every container made here belongs to a
job whose id starts with this run's prefix and is removed at the end, even after a failure.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from requests.exceptions import RequestException

from runner.backends.base import Submission
from runner.backends.local import LABEL_JOB, LABEL_MANAGED, LocalBackend
from runner.errors import BackendError, SubmitError
from runner.ledger import Ledger
from runner.sim.metadata import MetadataSimulator
from runner.sim.preemptor import Preemptor
from runner.spec import JobSpec, spec_from_dict
from runner.states import AttemptState, AttemptStatus

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/py311-base:bookworm"
TEST_IMAGE = "localhost/spot-runner-test:local"
RUN = f"it{secrets.token_hex(3)}"  # every job id made here starts with this
NOTICE_FILES = ("runner/__init__.py", "runner/errors.py", "runner/task/__init__.py", "runner/task/notices")

TASK = r'''
"""A contract-following test task: ok | exit N | sleep | oom | notices."""
import json, logging, os, signal, sys, time
from pathlib import Path

folder = Path(os.environ["RUNNER_CHECKPOINT_URI"][len("file://"):])
attempt = os.environ.get("RUNNER_ATTEMPT", "0")
what = sys.argv[1] if len(sys.argv) > 1 else "ok"
if what == "ok":
    print("hello from the task", flush=True)
    (folder / "done.json").write_text(json.dumps({"attempt": attempt, "folder": str(folder)}))
    print("bye", flush=True)
    sys.exit(0)
if what == "exit":
    sys.exit(int(sys.argv[2]))
if what == "oom":
    hog = [bytearray(1 << 20) for _ in range(512)]
    sys.exit(0)
if what == "sleep":  # SIGTERM is its only notice; metadata notices are ignored
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("sleeping", flush=True)
    while not stop:
        time.sleep(0.05)
    (folder / f"stopped-{attempt}.json").write_text("{}")
    sys.exit(75)
if what == "notices":
    logging.basicConfig(level=logging.INFO)
    from runner.task.notices import NoticeWatcher
    watcher = NoticeWatcher(os.environ.get("RUNNER_NOTICE", "auto"), os.environ.get("RUNNER_METADATA_URL"),
                            poll_interval=0.2).start()
    print("watching", os.environ.get("RUNNER_METADATA_URL"), flush=True)
    notice = watcher.wait(120)
    if notice is None:
        sys.exit(1)
    (folder / f"notice-{attempt}.json").write_text(json.dumps({"source": notice.source}))
    watcher.acknowledge()
    sys.exit(75)
sys.exit(f"unknown mode {what}")
'''

DOCKERFILE = f"""FROM {BASE_IMAGE}
COPY runner /opt/lib/runner
COPY task.py /opt/task.py
ENV PYTHONPATH=/opt/lib PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["python3", "/opt/task.py"]
"""


def _unavailable(why: str) -> None:
    if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{why} (RUNNER_REQUIRE_DOCKER=1 forbids skipping)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    """A client for the engine; skip (or fail under RUNNER_REQUIRE_DOCKER=1) when unreachable."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, RequestException, OSError) as exc:
        _unavailable(f"the Docker engine cannot be reached ({exc}): start dockerd or set DOCKER_HOST")
    yield client
    for row in client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=1"}):
        if str((row.get("Labels") or {}).get(LABEL_JOB, "")).startswith(RUN):
            client.api.remove_container(row["Id"], force=True)
    client.close()


@pytest.fixture(scope="module")
def image(engine: docker.DockerClient) -> str:
    """Build the test image from the local base image (never pulled)."""
    try:
        engine.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"{BASE_IMAGE} is missing: run `make image` to build it")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", DOCKERFILE.encode()), ("task.py", TASK.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for rel in NOTICE_FILES:
            tar.add(ROOT / rel, arcname=rel)
    context.seek(0)
    engine.images.build(fileobj=context, custom_context=True, tag=TEST_IMAGE, rm=True, pull=False)
    return TEST_IMAGE


@pytest.fixture
def backend(engine: docker.DockerClient, tmp_path: Path) -> LocalBackend:
    return LocalBackend(client=engine, home=tmp_path / "home")


def make_spec(image: str, args: list[str], **extra: Any) -> JobSpec:
    return spec_from_dict({"name": RUN, "image": image, "args": args,
                           "resources": {"cpus": 0.5, "memory": "256Mi"}, **extra})


def make_submission(spec: JobSpec, folder: Path, job_id: str | None = None, number: int = 1,
                    key: str | None = None) -> Submission:
    job_id = job_id or f"{RUN}-{secrets.token_hex(3)}"
    uri = f"file://{folder}"
    return Submission(spec=spec, job_id=job_id, key=key or f"{job_id}-0-{number}", attempt=number,
                      array_index=0, checkpoint_uri=uri, env=spec.container_env(job_id, number, uri))


def wait_for(backend: LocalBackend, backend_id: str, done: Callable[[AttemptStatus], bool],
             timeout: float = 30.0) -> AttemptStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.poll([backend_id])[backend_id]
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last status {status}")
        time.sleep(0.2)


def wait_for_line(backend: LocalBackend, backend_id: str, text: str, timeout: float = 30.0) -> None:
    """Wait until the task printed ``text`` (its signal handler is in place by then)."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in backend.logs(backend_id)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the task never printed {text!r}")
        time.sleep(0.1)


def finished(status: AttemptStatus) -> bool:
    return status.is_terminal()


def running(status: AttemptStatus) -> bool:
    return status.state is AttemptState.RUNNING or status.is_terminal()


# ------------------------------------------------------------------------------ the backend


def test_submit_runs_to_success(engine: docker.DockerClient, image: str, tmp_path: Path) -> None:
    backend = LocalBackend(client=engine, home=tmp_path / "home",
                           simulator_url="http://host.docker.internal:18169")
    folder = tmp_path / "ck" / "deep"  # does not exist yet: submit creates it
    sub = make_submission(make_spec(image, ["ok"]), folder, number=3)
    backend_id = backend.submit(sub)
    status = wait_for(backend, backend_id, finished)
    assert (status.state, status.reason, status.exit_code) == (AttemptState.SUCCEEDED, "exit 0", 0)
    assert status.started_at and status.ended_at and status.started_at <= status.ended_at <= time.time() + 1

    # the checkpoint folder is mounted at /checkpoints, and the task is told so: it wrote into the folder
    written = json.loads((folder / "done.json").read_text())
    assert written == {"attempt": "3", "folder": "/checkpoints"}

    info = engine.api.inspect_container(backend_id)
    assert info["Name"] == f"/spot-runner-{sub.key}"
    assert info["Config"]["Labels"] == {
        "spot-runner.managed": "1", "spot-runner.job": sub.job_id, "spot-runner.key": sub.key,
        "spot-runner.attempt": "3", "spot-runner.index": "0"}
    env = dict(item.split("=", 1) for item in info["Config"]["Env"])
    assert env["RUNNER_METADATA_URL"] == f"http://host.docker.internal:18169/ns/{sub.key}"
    assert env["RUNNER_CHECKPOINT_URI"] == "file:///checkpoints" and env["RUNNER_ATTEMPT"] == "3"
    host = info["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 * 1024 * 1024
    assert "host.docker.internal:host-gateway" in host["ExtraHosts"]
    assert host["AutoRemove"] is False
    assert [(m["Source"], m["Destination"]) for m in info["Mounts"]] == [(str(folder), "/checkpoints")]

    assert list(backend.logs(backend_id)) == ["hello from the task", "bye"]
    assert list(backend.logs(backend_id, follow=True)) == ["hello from the task", "bye"]


def test_find_adopts_and_submit_is_idempotent(backend: LocalBackend, image: str, tmp_path: Path) -> None:
    sub = make_submission(make_spec(image, ["sleep"]), tmp_path / "ck")
    assert backend.find(sub) is None
    backend_id = backend.submit(sub)
    assert backend.find(sub) == backend_id
    # a restarted watcher, with a new backend, finds it by key and submitting again adopts it
    again = LocalBackend(client=backend.client, home=backend.home)
    assert again.find(sub) == backend_id
    assert again.submit(sub) == backend_id
    assert wait_for(again, backend_id, running).state is AttemptState.RUNNING
    backend.remove(backend_id)
    assert backend.find(sub) is None


def test_a_reset_while_adopting_is_waited_out_not_a_failure(backend: LocalBackend, image: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A create whose answer was lost leaves the container behind; the next submit adopts it. A
    connection reset on that adoption's inspect is transient (CI: it failed the attempt, charged)."""
    from requests.exceptions import ConnectionError as RequestsConnectionError

    from runner.errors import BackendUnavailable

    sub = make_submission(make_spec(image, ["sleep"]), tmp_path / "ck")
    backend_id = backend.submit(sub)
    real, calls = backend.client.api.inspect_container, []

    def reset_once(name: str) -> Any:
        calls.append(name)
        if len(calls) == 1:
            raise RequestsConnectionError(ConnectionResetError(104, "Connection reset by peer"))
        return real(name)

    monkeypatch.setattr(backend.client.api, "inspect_container", reset_once)
    with pytest.raises(BackendUnavailable, match="cannot reach the Docker engine"):
        backend.submit(sub)
    assert backend.submit(sub) == backend_id and len(calls) == 2
    backend.remove(backend_id)


def test_cancel_is_idempotent_and_gives_cancelled(backend: LocalBackend, image: str, tmp_path: Path) -> None:
    backend_id = backend.submit(make_submission(make_spec(image, ["sleep"]), tmp_path / "ck"))
    status = wait_for(backend, backend_id, running)
    assert status.state is AttemptState.RUNNING and status.started_at
    wait_for_line(backend, backend_id, "sleeping")  # PID 1 ignores SIGTERM until it has a handler
    backend.cancel(backend_id)
    backend.cancel(backend_id)
    status = wait_for(backend, backend_id, finished)
    # the task saw SIGTERM and exited 75, but the cancel is what counts
    assert (status.state, status.reason) == (AttemptState.CANCELLED, "cancelled (exit 75)")
    backend.remove(backend_id)
    backend.cancel(backend_id)  # gone: still fine


def test_preempt_gives_preempted_even_after_a_restart(backend: LocalBackend, image: str,
                                                      tmp_path: Path) -> None:
    backend_id = backend.submit(make_submission(make_spec(image, ["sleep"]), tmp_path / "ck"))
    wait_for(backend, backend_id, running)
    assert backend.preempt(backend_id, "bus") is True
    status = wait_for(backend, backend_id, finished)
    assert (status.state, status.reason, status.exit_code) == (
        AttemptState.PREEMPTED, "killed by the preemptor", 137)
    restarted = LocalBackend(client=backend.client, home=backend.home)
    assert restarted.poll([backend_id])[backend_id].state is AttemptState.PREEMPTED
    assert backend.preempt(backend_id, "bus") is False  # no longer running: nothing to kill


def test_failures_oom_and_a_removed_container(backend: LocalBackend, image: str, tmp_path: Path) -> None:
    failing = backend.submit(make_submission(make_spec(image, ["exit", "3"]), tmp_path / "a"))
    hog_spec = make_spec(image, ["oom"], resources={"cpus": 0.5, "memory": "32Mi"})
    hog = backend.submit(make_submission(hog_spec, tmp_path / "b"))
    gone = backend.submit(make_submission(make_spec(image, ["sleep"]), tmp_path / "c"))
    backend.client.api.remove_container(gone, force=True)  # behind the runner's back
    for backend_id in (failing, hog):
        wait_for(backend, backend_id, finished)
    statuses = backend.poll([failing, hog, gone, failing])
    assert set(statuses) == {failing, hog, gone}
    assert (statuses[failing].state, statuses[failing].reason) == (AttemptState.FAILED, "exit 3")
    assert (statuses[hog].state, statuses[hog].reason) == (AttemptState.FAILED, "out of memory (limit 32Mi)")
    assert (statuses[gone].state, statuses[gone].reason) == (
        AttemptState.FAILED, "container not found (removed outside the runner)")


def test_missing_image_is_a_submit_error_without_a_pull(backend: LocalBackend, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pull(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the backend tried to pull an image")

    monkeypatch.setattr(backend.client.api, "pull", no_pull)
    monkeypatch.setattr(backend.client.images, "pull", no_pull)
    name = f"localhost/{RUN}-absent:never"
    sub = make_submission(make_spec(name, []), tmp_path / "ck")
    with pytest.raises(SubmitError) as caught:
        backend.submit(sub)
    assert str(caught.value) == f"image {name} not found locally: run `make image` or docker pull {name}"
    assert backend.find(sub) is None


def test_an_unreachable_engine_gives_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = docker.DockerClient(base_url=f"unix://{tmp_path}/no-docker.sock", version="1.41", timeout=5)
    backend = LocalBackend(client=bogus, home=tmp_path / "home")
    statuses = backend.poll(["abc123", "def456"])
    assert {s.state for s in statuses.values()} == {AttemptState.UNKNOWN}
    assert statuses["abc123"].reason.startswith("cannot reach the Docker engine (")
    assert statuses["abc123"].reason.endswith("start dockerd or set DOCKER_HOST")
    with pytest.raises(BackendError, match="cannot reach the Docker engine"):
        backend.find(make_submission(make_spec("img", ["ok"]), tmp_path / "ck"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(BackendError, match="start dockerd or set DOCKER_HOST"):
        LocalBackend(home=tmp_path / "home")


# ------------------------------------------------------------------------------ the preemptor


def _run_preempted_attempt(ledger: Ledger, job_id: str, backend: LocalBackend, preemptor: Preemptor,
                           spec: JobSpec, folder: Path, cloud: str) -> tuple[AttemptStatus, list[str]]:
    """Submit the job's next attempt, drive the preemptor as the watcher would, until it ends."""
    assert spec.simulate_preemption is not None
    attempt = ledger.reserve_attempt(job_id)
    preemptor.prepare(attempt.key, cloud)
    backend_id = backend.submit(make_submission(spec, folder, job_id, attempt.number, attempt.key))
    ledger.record_submitted(attempt.id, backend_id)
    actions: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = backend.poll([backend_id])[backend_id]
        attempt = ledger.update_attempt(attempt.id, status)
        if status.is_terminal():
            return status, actions
        if status.state is AttemptState.RUNNING:
            action = preemptor.step(ledger.get_job(job_id), attempt, spec.simulate_preemption, cloud)
            if action:
                actions.append(action)
        time.sleep(0.2)
    raise AssertionError(f"attempt {attempt.key} did not end; actions {actions}")


@pytest.fixture
def simulator() -> Iterator[MetadataSimulator]:
    with MetadataSimulator(host="0.0.0.0", port=0) as sim:
        yield sim


def test_parachute_then_bus(engine: docker.DockerClient, image: str, simulator: MetadataSimulator,
                            tmp_path: Path) -> None:
    port = simulator.url.rsplit(":", 1)[1]
    backend = LocalBackend(client=engine, home=tmp_path / "home",
                           simulator_url=f"http://host.docker.internal:{port}")
    preemptor = Preemptor(backend, simulator)
    spec = make_spec(image, ["notices"], simulate_preemption={"every": "1s", "notice": "20s", "mode": "mixed"})
    folder = tmp_path / "ck"
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)

        # attempt 1 (odd, parachute): a GCP notice reaches the NoticeWatcher, which exits 75
        status, actions = _run_preempted_attempt(ledger, job_id, backend, preemptor, spec, folder, "gcp")
        key = f"{job_id}-0-1"
        assert (status.state, status.reason) == (AttemptState.PREEMPTED, "exit 75: stopped after a preemption notice")
        assert actions == [f"{key}: gcp preemption notice, 20s before the kill"]
        assert json.loads((folder / "notice-1.json").read_text()) == {"source": "gcp"}
        assert any(path.startswith("/computeMetadata/v1/instance/preempted") for _, path in simulator.requests(key))

        # attempt 2 (even, bus): killed at once, no notice
        status, actions = _run_preempted_attempt(ledger, job_id, backend, preemptor, spec, folder, "gcp")
        assert (status.state, status.reason) == (AttemptState.PREEMPTED, "killed by the preemptor")
        assert actions == [f"{job_id}-0-2: killed without notice (bus)"]
        assert not (folder / "notice-2.json").exists()
        assert simulator.state(f"{job_id}-0-2")["pending"] is False
        assert ledger.get_job(job_id).preemptions_used == 2


def test_parachute_ignored_ends_in_a_hard_kill(engine: docker.DockerClient, image: str,
                                               simulator: MetadataSimulator, tmp_path: Path) -> None:
    port = simulator.url.rsplit(":", 1)[1]
    backend = LocalBackend(client=engine, home=tmp_path / "home",
                           simulator_url=f"http://host.docker.internal:{port}")
    preemptor = Preemptor(backend, simulator)
    spec = make_spec(image, ["sleep"], simulate_preemption={"every": "1s", "notice": "1s"})
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
        status, actions = _run_preempted_attempt(ledger, job_id, backend, preemptor, spec, tmp_path / "ck", "aws")
    key = f"{job_id}-0-1"
    assert (status.state, status.reason) == (AttemptState.PREEMPTED, "killed by the preemptor")
    assert actions == [f"{key}: aws preemption notice, 1s before the kill",
                       f"{key}: killed after its 1s notice (parachute)"]
    assert simulator.state(key)["cloud"] == "aws" and simulator.state(key)["pending"] is True


def test_resources_are_capped_and_gpus_need_the_nvidia_runtime(backend: LocalBackend, image: str,
                                                               tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """No GPU engine here: check the create options against a host that claims an nvidia runtime."""
    spec = make_spec(image, ["ok"], resources={"cpus": 64, "memory": "4Ti", "gpus": 2})
    sub = make_submission(spec, tmp_path / "ck")
    host = backend._host_info()
    options = backend._run_options(sub)
    assert options["nano_cpus"] == host["cpus"] * 10**9 and options["mem_limit"] == host["memory"]
    assert "device_requests" not in options  # this engine has no nvidia runtime: CPU, with a warning
    assert any("no nvidia runtime" in r.getMessage() for r in caplog.records)
    backend._run_options(sub)
    assert sum("capping" in r.getMessage() for r in caplog.records) == 2  # once per resource

    backend._host = {**host, "runtimes": {"runc", "nvidia"}}
    request = backend._run_options(sub)["device_requests"][0]
    assert request["Count"] == 2 and request["Capabilities"] == [["gpu"]]
