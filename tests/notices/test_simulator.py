"""The metadata simulator plays each case on request, over real HTTP, and its control API drives it."""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from runner.sim.metadata import MetadataSimulator
from tests.notices.sdk import call

TTL = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
FLAVOR = {"Metadata-Flavor": "Google"}
AZ = {"Metadata": "true"}
EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"


@pytest.fixture
def sim() -> Iterator[MetadataSimulator]:
    with MetadataSimulator() as simulator:
        yield simulator


def control(sim: MetadataSimulator, action: str) -> tuple[int, Any]:
    status, _, body = call("POST", f"{sim.url}/_sim/{action}", data=b"")
    return status, json.loads(body)


def test_aws_tokens_imdsv1_and_the_items_clients_read(sim: MetadataSimulator) -> None:
    base = sim.url + "/latest/meta-data/"
    assert call("GET", base + "instance-id")[0] == 401  # HttpTokens=required by default
    assert call("PUT", sim.url + "/2021-03-23/api/token", TTL)[0] == 403  # versioned token paths are refused
    token = {"X-aws-ec2-metadata-token": call("PUT", sim.url + "/latest/api/token", TTL)[2].decode()}
    status, headers, body = call("GET", base + "instance-id", token)
    assert (status, headers["Content-Type"], body.decode()[:2]) == (200, "text/plain", "i-")
    assert call("GET", base + "placement/availability-zone/", token)[2] == b"us-east-1a"
    assert call("GET", base + "spot/termination-time", token)[0] == 404
    control(sim, "configure?imdsv1=true")
    assert call("GET", base + "instance-id")[0] == 200  # optional: tokenless reads work
    assert call("GET", base + "instance-id", {"X-aws-ec2-metadata-token": "forged"})[0] == 401  # bad tokens never
    assert control(sim, "preempt?cloud=aws&notice=120&action=stop")[0] == 200
    assert json.loads(call("GET", base + "spot/instance-action")[2])["action"] == "stop"
    assert call("GET", base + "spot/termination-time")[0] == 404  # only for terminate
    control(sim, "preempt?cloud=aws&notice=120")
    assert call("GET", base + "spot/termination-time")[2].endswith(b"Z")
    control(sim, "rebalance")
    assert "noticeTime" in json.loads(call("GET", base + "events/recommendations/rebalance")[2])


def test_aws_hop_limit_1_loses_the_token_answer_until_it_is_2(sim: MetadataSimulator) -> None:
    control(sim, "configure?hop_limit=1")
    started = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        call_with_timeout("PUT", sim.url + "/latest/api/token", TTL, 0.5)
    assert time.monotonic() - started < 2
    control(sim, "configure?hop_limit=2&token_status=405")
    assert call("PUT", sim.url + "/latest/api/token", TTL)[0] == 405
    control(sim, "configure?token_status=0")
    assert call("PUT", sim.url + "/latest/api/token", TTL)[0] == 200


def call_with_timeout(method: str, url: str, headers: dict[str, str], timeout: float) -> Any:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, headers=headers, method=method), timeout=timeout) as r:
        return r.read()


def test_gcp_root_keys_and_the_maintenance_event_hang(sim: MetadataSimulator) -> None:
    sim.configure("", "gcp")
    status, headers, body = call("GET", sim.url + "/")
    assert (status, headers["Metadata-Flavor"], body) == (200, "Google", b"0.1/\ncomputeMetadata/\n")
    url = sim.url + "/computeMetadata/v1/instance/maintenance-event"
    status, headers, body = call("GET", url, FLAVOR)
    assert (status, body) == (200, b"NONE")
    etag = headers["ETag"]
    sim.hang_seconds = 5
    started = time.monotonic()
    status, headers, body = call("GET", url + f"?wait_for_change=true&timeout_sec=1&last_etag={etag}", FLAVOR)
    assert body == b"NONE" and 0.8 < time.monotonic() - started < 3  # timeout_sec is honoured
    control(sim, "preempt?cloud=gcp&kind=maintenance&maintenance=TERMINATE_ON_HOST_MAINTENANCE")
    assert call("GET", url + f"?wait_for_change=true&last_etag={etag}", FLAVOR)[2] == b"TERMINATE_ON_HOST_MAINTENANCE"
    assert call("GET", sim.url + "/computeMetadata/v1/instance/preempted", FLAVOR)[2] == b"FALSE"
    assert call("GET", sim.url + "/computeMetadata/v1/project/project-id", FLAVOR)[2] == b"sim-project"


def test_azure_events_of_every_kind_and_the_name_lookup(sim: MetadataSimulator) -> None:
    sim.configure("", "azure", vm_name="vm5")
    assert call("GET", sim.url + "/metadata/instance/compute/name?api-version=2021-02-01&format=text", AZ)[2] == b"vm5"
    assert control(sim, "preempt?cloud=azure&type=Redeploy&status=Started&notice=0")[1]["pending"] is True
    assert control(sim, "preempt?cloud=azure&type=Preempt&resources=vm7,vm8")[1]["pending"] is True
    events = json.loads(call("GET", sim.url + EVENTS, AZ)[2])["Events"]
    assert [(e["EventType"], e["EventStatus"], e["NotBefore"], e["Resources"]) for e in events][0] == \
        ("Redeploy", "Started", "", ["vm5"])
    assert events[1]["Resources"] == ["vm7", "vm8"] and events[1]["NotBefore"].endswith(" GMT")
    assert control(sim, "preempt?cloud=azure&type=Nap")[0] == 400
    control(sim, "fault?kind=name&seconds=30&answer=503")
    assert call("GET", sim.url + "/metadata/instance/compute/name?api-version=2021-02-01&format=text", AZ)[0] == 503
    control(sim, "clear")
    assert json.loads(call("GET", sim.url + EVENTS, AZ)[2])["Events"] == []


def test_outages_slow_answers_and_a_restart_on_the_same_port(sim: MetadataSimulator) -> None:
    sim.configure("x", "azure")
    url = f"{sim.url}/ns/x{EVENTS}"
    assert control(sim, "fault?ns=x&kind=outage&seconds=30&answer=429")[0] == 200
    assert call("GET", url, AZ)[0] == 429
    control(sim, "fault?ns=x&kind=outage&seconds=30&answer=reset")
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        call("GET", url, AZ)
    control(sim, "clear?ns=x")
    control(sim, "fault?ns=x&kind=slow&seconds=0.6&delay=5")  # held until the slow period ends
    started = time.monotonic()
    assert call("GET", url, AZ)[0] == 200
    assert 0.4 < time.monotonic() - started < 2
    assert control(sim, "fault?kind=nap")[0] == 400
    before = sim.url
    sim.stop()
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        call("GET", url, AZ)
    sim.start()
    assert sim.url == before and call("GET", url, AZ)[0] == 200
