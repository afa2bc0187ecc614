"""The listener's own rules, one at a time: error kinds, the backoff cap, the token asked for again,
the fix named when no token can be had, GCP deadlines. The cases table (test_cases.py) covers the rest."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from runner.sim.metadata import MetadataSimulator
from runner.task.notices import NoticeWatcher
from runner.task.notices.aws import AwsPoller
from runner.task.notices.base import MAX_BACKOFF, CloudPoller, Unusable, http_call
from runner.task.notices.gcp import PREEMPT_WINDOW_S


@pytest.fixture
def sim() -> Iterator[MetadataSimulator]:
    with MetadataSimulator() as simulator:
        yield simulator


def watcher(url: str, mode: str = "auto", **kwargs: float) -> NoticeWatcher:
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("request_timeout", 0.5)
    return NoticeWatcher(mode, url, install_signals=False, **kwargs)  # type: ignore[arg-type]


def test_backoff_never_leaves_the_notice_window() -> None:
    poller = CloudPoller(watcher("http://127.0.0.1:9", poll_interval=1.0), "http://x", True, threading.Event())
    delays = []
    for failures in range(1, 40):
        poller.failures = failures
        delays.append(poller.backoff())
    assert delays[0] == 2.0 and max(delays) == MAX_BACKOFF <= 5.0  # the shortest window is 30 s


def test_error_kinds_decide_what_auto_mode_does() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(Unusable) as refused:
        http_call("GET", f"http://127.0.0.1:{port}/", {}, 0.5)
    assert refused.value.kind == "absent"
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(Unusable) as slow:
            http_call("GET", f"http://127.0.0.1:{silent.getsockname()[1]}/", {}, 0.3)
    assert slow.value.kind == "timeout" and slow.value.timed_out


def test_the_token_is_asked_for_again_after_the_imdsv1_fallback(
        sim: MetadataSimulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Hop limit 1: read without a token; once the hop limit is 2, the next token try gets one."""
    monkeypatch.setattr(AwsPoller, "TOKEN_RETRY_S", 0.5)
    caplog.set_level(logging.INFO, logger="runner.notices")
    sim.configure("", "aws", imdsv1=True, hop_limit=1)
    with watcher(sim.url, "aws") as w:
        deadline = time.monotonic() + 10
        while "reading without a token" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        sim.configure("", hop_limit=2)
        while "can be had again" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "can be had again" in caplog.text, caplog.text
        sim.configure("", imdsv1=False)  # from now on only a token reads anything
        sim.preempt("aws", 120)
        notice = w.wait(5)
    assert notice is not None and notice.kind == "terminate"


def test_no_token_and_no_imdsv1_warns_with_the_fix_and_never_invents(
        sim: MetadataSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runner.notices")
    sim.configure("", "aws", hop_limit=1)  # IMDSv2 required (the default)
    sim.preempt("aws", 120)
    with watcher(sim.url) as w:
        assert w.wait(2.5) is None  # nothing can be read: no notice, and none invented
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "HttpPutResponseHopLimit=2" in warned[0] and "runner init aws" in warned[0]


def test_gcp_deadline_counts_from_the_last_false_not_from_the_true(sim: MetadataSimulator) -> None:
    sim.configure("", "gcp")
    with watcher(sim.url, "gcp") as w:
        time.sleep(0.5)
        sim.fault("", "outage", 3.0, answer="reset")  # from here on nothing is known
        outage_at = time.time()
        time.sleep(1.0)
        sim.preempt("gcp", PREEMPT_WINDOW_S)
        notice = w.wait(6)
    assert notice is not None and notice.deadline is not None
    assert notice.deadline <= outage_at + PREEMPT_WINDOW_S + 0.1  # the last FALSE came before the outage
    assert notice.deadline >= outage_at + PREEMPT_WINDOW_S - 1.0  # and not much earlier (polling every 0.2 s)


def test_gcp_true_from_the_first_answer_has_no_known_deadline(sim: MetadataSimulator) -> None:
    sim.preempt("gcp", 30)
    with watcher(sim.url, "gcp") as w:
        notice = w.wait(3)
    assert notice is not None and notice.kind == "preempted" and notice.deadline is None


def test_auto_mode_keeps_asking_a_busy_service_and_says_so_once(
        sim: MetadataSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runner.notices")
    sim.configure("", "azure")
    sim.fault("", "outage", 1.5, answer="503")
    with watcher(sim.url) as w:
        time.sleep(2.0)
        sim.preempt("azure", 30)
        notice = w.wait(3)
    assert notice is not None and notice.source == "azure"
    busy = [r for r in caplog.records if "azure metadata service" in r.getMessage() and "503" in r.getMessage()]
    assert len(busy) == 1 and busy[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
