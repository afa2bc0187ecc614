"""NoticeWatcher against the metadata simulator and misbehaving servers, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ConfigError
from runner.sim.metadata import MetadataSimulator
from runner.task.notices import Notice, NoticeWatcher

CLOUDS = ("aws", "gcp", "azure")
IDENTIFY_PATHS = {"aws": "/latest/api/token", "gcp": "/computeMetadata/v1/instance/preempted",
                  "azure": "/metadata/scheduledevents"}
AWS_ACTION = "/latest/meta-data/spot/instance-action"
GCP_PREEMPTED = "/computeMetadata/v1/instance/preempted"
AZURE_EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def sim() -> Iterator[MetadataSimulator]:
    with MetadataSimulator() as simulator:
        yield simulator


def make_watcher(url: str | None, mode: str = "auto", **kwargs: Any) -> NoticeWatcher:
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("install_signals", False)
    kwargs.setdefault("request_timeout", 1.0)
    return NoticeWatcher(mode=mode, metadata_url=url, **kwargs)


def call(method: str, url: str, headers: dict[str, str] | None = None,
         data: bytes | None = None, timeout: float = 5.0) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def aws_token(base: str) -> str:
    status, _, body = call("PUT", base + "/latest/api/token",
                           {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert status == 200
    return body.decode()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith("runner.notices") and r.levelno >= logging.WARNING]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- detection and notices -----------------------------------------------------------------

@pytest.mark.parametrize("cloud", CLOUDS)
def test_auto_mode_detects_the_cloud_and_sees_its_notice(
        sim: MetadataSimulator, cloud: str, caplog: pytest.LogCaptureFixture) -> None:
    sim.configure("", cloud)
    caplog.set_level(logging.DEBUG, logger="runner.notices")
    with make_watcher(sim.url) as watcher:
        time.sleep(0.5)
        assert watcher.notice is None
        sim.preempt(cloud, 20)
        notice = watcher.wait(2.0)
    assert notice is not None and notice.source == cloud
    assert notice.deadline is not None
    expected = 30 if cloud == "gcp" else 20
    assert abs(notice.deadline - (time.time() + expected)) < 3
    assert notice.detail == {"aws": "terminate", "gcp": "preempted"}.get(cloud, notice.detail)
    assert not warnings_of(caplog)
    log = sim.requests()
    for other in CLOUDS:  # the other pollers tried once and stopped
        if other != cloud:
            assert sum(p.startswith(IDENTIFY_PATHS[other]) for _, p in log) == 1, other


def test_azure_notice_carries_the_event_id_and_acknowledge_reaches_the_simulator(
        sim: MetadataSimulator) -> None:
    sim.configure("", "azure")
    with make_watcher(sim.url) as watcher:
        sim.preempt("azure", 30)
        notice = watcher.wait(2.0)
        assert notice is not None and notice.source == "azure"
        assert sim.acknowledged() == []
        watcher.acknowledge()
        assert sim.acknowledged() == [notice.detail]
        assert sim.state()["pending"] is False
        watcher.acknowledge()  # nothing left to acknowledge: no second POST
    assert sum(m == "POST" for m, _ in sim.requests()) == 1


def test_namespaces_keep_jobs_apart(sim: MetadataSimulator) -> None:
    sim.configure("job1-a2", "azure")  # the runner sets a namespace's cloud before the attempt starts
    sim.configure("job2-a1", "gcp")
    with make_watcher(sim.url + "/ns/job1-a2") as one, make_watcher(sim.url + "/ns/job2-a1") as two:
        sim.preempt("azure", 30, namespace="job1-a2")
        notice = one.wait(2.0)
        assert notice is not None and notice.source == "azure"
        time.sleep(0.3)
        assert two.notice is None
        sim.preempt("gcp", 30, namespace="job2-a1")
        assert (two.wait(2.0) or Notice("", 0, None, "")).source == "gcp"
    assert sim.requests() == []
    assert sim.requests("job1-a2") and sim.requests("job2-a1")


@pytest.mark.parametrize("cloud", CLOUDS)
def test_explicit_mode_polls_only_its_cloud(sim: MetadataSimulator, cloud: str) -> None:
    sim.configure("", cloud)
    with make_watcher(sim.url, mode=cloud) as watcher:
        time.sleep(0.3)
        sim.preempt(cloud, 10)
        notice = watcher.wait(2.0)
    assert notice is not None and notice.source == cloud
    others = [IDENTIFY_PATHS[c] for c in CLOUDS if c != cloud]
    assert not [p for _, p in sim.requests() if p.startswith(tuple(others))]


def test_explicit_mode_warns_once_and_keeps_retrying_an_absent_service(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runner.notices")
    with make_watcher(f"http://127.0.0.1:{closed_port()}", mode="aws") as watcher:
        time.sleep(1.5)
        assert watcher.notice is None
    warned = warnings_of(caplog)
    assert len(warned) == 1 and "aws" in warned[0].getMessage()
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) >= 2  # backoff 0.4, 0.8, ...: still trying, quietly


def test_aws_token_is_renewed_after_a_401(sim: MetadataSimulator) -> None:
    with make_watcher(sim.url, mode="aws") as watcher:
        time.sleep(0.3)
        sim.expire_tokens()
        sim.preempt("aws", 120)
        notice = watcher.wait(2.0)
    assert notice is not None and notice.detail == "terminate"
    assert sum(p == "/latest/api/token" for _, p in sim.requests()) >= 2


def test_mode_none_ignores_the_clouds(sim: MetadataSimulator, tmp_path: Path) -> None:
    with make_watcher(sim.url, mode="none", halt_file=str(tmp_path / "halt")) as watcher:
        sim.preempt("aws", 10)
        time.sleep(0.5)
        assert watcher.notice is None
        watcher.acknowledge()  # a no-op, never raises
    assert sim.requests() == []


def test_unknown_mode_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="auto, aws, gcp, azure, none"):
        NoticeWatcher(mode="ec2")


def test_first_notice_wins() -> None:
    watcher = NoticeWatcher(mode="none", install_signals=False)
    watcher.trigger("halt-file", "first")
    watcher.trigger("aws", "second", deadline=1.0)
    assert watcher.notice is not None and watcher.notice.detail == "first"
    assert watcher.wait(0) is watcher.notice


# -- halt file and signals -----------------------------------------------------------------

def test_halt_file_relative_to_the_cwd_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with make_watcher(None, mode="none", halt_file="halt.txt") as watcher:
        monkeypatch.chdir(tmp_path.parent)
        time.sleep(0.3)
        assert watcher.notice is None
        (tmp_path / "halt.txt").touch()
        notice = watcher.wait(2.0)
    assert notice is not None and notice.source == "halt-file"
    assert notice.detail == str(tmp_path / "halt.txt")


def test_sigterm_is_a_notice_and_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    watcher = NoticeWatcher(mode="none", install_signals=True)
    try:
        watcher.start()
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        notice = watcher.wait(2.0)
        assert notice is not None and notice.source == "signal:SIGTERM"
        assert notice.deadline is None
    finally:
        watcher.stop()
        for signum, handler in before.items():
            if signal.getsignal(signum) != handler:
                signal.signal(signum, handler)
                pytest.fail(f"handler of {signum} was not restored")


def test_a_second_sigint_interrupts_as_usual() -> None:
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = NoticeWatcher(mode="none").start()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert (watcher.wait(2.0) or Notice("", 0, None, "")).source == "signal:SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
    finally:
        watcher.stop()
        signal.signal(signal.SIGINT, before)


def test_no_signal_handlers_outside_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    watcher = NoticeWatcher(mode="none", install_signals=True)
    thread = threading.Thread(target=watcher.start)
    thread.start()
    thread.join()
    assert signal.getsignal(signal.SIGTERM) == before
    thread = threading.Thread(target=watcher.stop)
    thread.start()
    thread.join()


# -- absent and misbehaving services -------------------------------------------------------

def test_absent_service_in_auto_mode_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runner.notices")
    with make_watcher(f"http://127.0.0.1:{closed_port()}") as watcher:
        time.sleep(0.8)
        assert watcher.notice is None
    assert not warnings_of(caplog)
    quiet = [r.getMessage() for r in caplog.records if "not polling it" in r.getMessage()]
    assert sorted(re.match(r"no (.+?) metadata service", m).group(1) for m in quiet) == [  # type: ignore[union-attr]
        "aws", "azure", "gcp maintenance-event", "gcp preempted"]


class _BadHandler(BaseHTTPRequestHandler):
    behaviour = "garbage"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        if self.behaviour == "slow":
            time.sleep(1.5)
        if self.behaviour == "reset":
            self.close_connection = True
            return
        if self.behaviour == "not-http":
            self.wfile.write(b"\x00\xffnot an HTTP reply\r\n\r\n")
            return
        status, body = (500, b"Internal Server Error") if self.behaviour == "500" else (200, b"garbage{")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if self.behaviour == "flavored":  # looks like GCP, Azure and AWS, answers nonsense
            self.send_header("Metadata-Flavor", "Google")
            body = b'{"DocumentIncarnation": 1, "Events": "x"}' if "scheduled" in self.path else body
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = _answer


def serve(behaviour: str) -> ThreadingHTTPServer:
    handler = type("Handler", (_BadHandler,), {"behaviour": behaviour})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.mark.parametrize("behaviour", ["garbage", "500", "slow", "reset", "not-http", "flavored"])
def test_misbehaving_service_never_invents_a_notice(
        behaviour: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runner.notices")
    server = serve(behaviour)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    watchers = [make_watcher(url, mode, request_timeout=0.3).start() for mode in ("auto", *CLOUDS)]
    try:
        started = time.perf_counter()
        seen = [w.notice for _ in range(50_000) for w in watchers[:1]]  # the training loop's read
        assert time.perf_counter() - started < 1.0
        time.sleep(0.9)
        seen += [w.notice for w in watchers]
        assert seen.count(None) == len(seen)
    finally:
        for w in watchers:
            w.stop()
        server.shutdown()
        server.server_close()
    warned = warnings_of(caplog)
    by_poller = [r.getMessage().split(" metadata service")[0] for r in warned]
    assert sorted(by_poller) == sorted(set(by_poller))  # at most one per poller
    assert {p.split()[0] for p in by_poller} <= set(CLOUDS)  # only the explicit-mode watchers warn


def test_events_for_other_azure_vms_are_ignored() -> None:
    event = {"EventId": "e-1", "EventType": "Preempt", "Resources": ["vm7"], "EventStatus": "Scheduled",
             "NotBefore": email.utils.formatdate(time.time() + 30, usegmt=True)}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            doc: Any = {"DocumentIncarnation": 2, "Events": [event]}
            body = b"vm0" if "/compute/name" in self.path else json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with make_watcher(f"http://127.0.0.1:{server.server_address[1]}", "azure") as watcher:
            assert watcher.wait(0.7) is None
            event["Resources"] = ["vm0"]
            notice = watcher.wait(2.0)
        assert notice is not None and notice.detail == "e-1"
    finally:
        server.shutdown()
        server.server_close()


def test_service_lost_after_detection_warns_at_most_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runner.notices")
    simulator = MetadataSimulator(cloud="aws").start()
    with make_watcher(simulator.url) as watcher:
        time.sleep(0.4)
        simulator.stop()
        time.sleep(1.0)
        assert watcher.notice is None
    assert len(warnings_of(caplog)) == 1


def test_acknowledge_never_raises_when_the_service_is_gone(
        sim: MetadataSimulator, caplog: pytest.LogCaptureFixture) -> None:
    sim.configure("", "azure")
    watcher = make_watcher(sim.url, "azure").start()
    sim.preempt("azure", 30)
    assert watcher.wait(2.0) is not None
    watcher.stop()
    sim.stop()
    watcher.acknowledge()
    assert "could not acknowledge" in caplog.text


# -- the simulator speaks like the clouds --------------------------------------------------

def test_simulator_aws_header_checks(sim: MetadataSimulator) -> None:
    assert call("PUT", sim.url + "/latest/api/token")[0] == 400
    assert call("PUT", sim.url + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "0"})[0] == 400
    token = aws_token(sim.url)
    assert call("GET", sim.url + AWS_ACTION)[0] == 401
    assert call("GET", sim.url + AWS_ACTION, {"X-aws-ec2-metadata-token": "forged"})[0] == 401
    assert call("GET", sim.url + AWS_ACTION, {"X-aws-ec2-metadata-token": token})[0] == 404
    sim.preempt("aws", 120)
    status, _, body = call("GET", sim.url + AWS_ACTION, {"X-aws-ec2-metadata-token": token})
    doc = json.loads(body)
    assert status == 200 and doc["action"] == "terminate"
    assert abs(time.mktime(time.strptime(doc["time"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
               - (time.time() + 120)) < 3
    assert call("GET", sim.url + GCP_PREEMPTED, {"Metadata-Flavor": "Google"})[0] == 404
    assert call("GET", sim.url + AZURE_EVENTS, {"Metadata": "true"})[0] == 404


def test_simulator_gcp_flavor_and_hanging_get(sim: MetadataSimulator) -> None:
    sim.configure("", "gcp")
    url, flavor = sim.url + GCP_PREEMPTED, {"Metadata-Flavor": "Google"}
    assert call("GET", url)[0] == 403
    status, headers, body = call("GET", url, flavor)
    assert (status, headers["Metadata-Flavor"], body) == (200, "Google", b"FALSE")
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    assert call("PUT", sim.url + "/latest/api/token", ttl)[0] == 404
    sim.hang_seconds = 0.4  # the real server gives up after about a minute
    started = time.monotonic()
    assert call("GET", url + "?wait_for_change=true", flavor)[2] == b"FALSE"
    assert 0.3 < time.monotonic() - started < 2
    threading.Timer(0.2, sim.preempt, ("gcp", 30)).start()
    sim.hang_seconds = 10
    started = time.monotonic()
    assert call("GET", url + "?wait_for_change=true", flavor)[2] == b"TRUE"
    assert time.monotonic() - started < 2
    status, headers, body = call("GET", url + "?wait_for_change=true&last_etag=stale", flavor)
    assert body == b"TRUE"  # a changed etag answers at once


def test_simulator_azure_document_and_acknowledgement(sim: MetadataSimulator) -> None:
    sim.configure("", "azure")
    url = sim.url + AZURE_EVENTS
    assert call("GET", url)[0] == 400
    assert call("GET", sim.url + "/metadata/scheduledevents", {"Metadata": "true"})[0] == 400
    status, _, body = call("GET", url, {"Metadata": "true"})
    assert (status, json.loads(body)) == (200, {"DocumentIncarnation": 1, "Events": []})
    sim.preempt("azure", 30)
    doc = json.loads(call("GET", url, {"Metadata": "true"})[2])
    assert doc["DocumentIncarnation"] == 2
    (event,) = doc["Events"]
    assert set(event) == {"EventId", "EventType", "ResourceType", "Resources", "EventStatus", "NotBefore",
                          "Description", "EventSource", "DurationInSeconds"}
    assert (event["EventType"], event["EventStatus"]) == ("Preempt", "Scheduled")
    assert event["NotBefore"].endswith(" GMT")
    assert abs(email.utils.parsedate_to_datetime(event["NotBefore"]).timestamp() - time.time() - 30) < 3
    assert call("POST", url, {"Metadata": "true"}, b"not json")[0] == 400
    ack = json.dumps({"StartRequests": [{"EventId": event["EventId"]}]}).encode()
    assert call("POST", url, {"Metadata": "true"}, ack)[0] == 200
    assert sim.acknowledged() == [event["EventId"]]
    assert json.loads(call("GET", url, {"Metadata": "true"})[2]) == {"DocumentIncarnation": 3, "Events": []}


def test_simulator_control_api(sim: MetadataSimulator) -> None:
    def control(method: str, action: str) -> tuple[int, Any]:
        status, _, body = call(method, f"{sim.url}/_sim/{action}", data=b"" if method == "POST" else None)
        return status, json.loads(body)

    status, state = control("POST", "configure?cloud=gcp&ns=a")
    assert status == 200 and {k: state[k] for k in ("namespace", "cloud", "pending", "deadline", "acknowledged")} \
        == {"namespace": "a", "cloud": "gcp", "pending": False, "deadline": None, "acknowledged": []}
    status, state = control("POST", "preempt?cloud=azure&notice=5&ns=a")
    assert status == 200 and state["cloud"] == "azure" and state["pending"]
    assert abs(state["deadline"] - time.time() - 5) < 2
    assert control("GET", "state?ns=a")[1] == state
    assert json.loads(call("GET", sim.url + "/ns/a/_sim/state")[2]) == state
    assert sim.state("b")["cloud"] == "aws" and not sim.state("b")["pending"]
    assert control("POST", "clear?ns=a")[1]["pending"] is False
    status, error = control("POST", "preempt?cloud=ibm")
    assert status == 400 and "aws, gcp, azure" in error["error"]
    assert control("GET", "preempt?cloud=aws")[0] == 405


def test_simulator_command_line_runs_until_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-m", "runner.sim.metadata", "--port", "0", "--cloud", "gcp"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split("(")[-1].rstrip(")\n")
        assert url.startswith("http://127.0.0.1:")
        assert json.loads(call("GET", url + "/_sim/state")[2])["cloud"] == "gcp"
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def test_halt_request_object_under_the_checkpoint_uri_is_a_notice(tmp_path: Path) -> None:
    """`runner halt` writes HALT under the checkpoint URI; the listener sees it within its period."""
    uri = f"file://{tmp_path}/ck"
    watcher = NoticeWatcher(mode="none", install_signals=False, halt_uri=uri, halt_every=0.05).start()
    try:
        assert watcher.wait(0.3) is None
        (tmp_path / "ck").mkdir(exist_ok=True)  # the file store may have made it
        (tmp_path / "ck" / "HALT").write_text("{}")
        notice = watcher.wait(5)
        assert notice is not None and notice.source == "halt-request"
        assert notice.detail.endswith("/ck/HALT")
    finally:
        watcher.stop()
