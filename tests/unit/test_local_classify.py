"""classify() against real ``docker inspect --format '{{json .State}}'`` payloads.

Captured from Docker Engine 20.10.24 (cgroup v1, overlay2) with containers of
localhost/py311-base:bookworm: ``docker create``; ``docker run -d ... sleep``; ``exit 0``;
``raise SystemExit(75)``; ``docker kill`` (137); ``--memory 32m`` filling 200 MiB (OOMKilled);
``docker pause``; ``--restart always`` caught between restarts; a missing entrypoint; and
``dead``, made by ``chattr +i`` on a file in the container's upper dir before ``docker rm``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runner.backends.local import classify
from runner.states import AttemptState

CREATED = {"Status": "created", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False,
           "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "", "StartedAt": "0001-01-01T00:00:00Z",
           "FinishedAt": "0001-01-01T00:00:00Z"}
RUNNING = {"Status": "running", "Running": True, "Paused": False, "Restarting": False, "OOMKilled": False,
           "Dead": False, "Pid": 26337, "ExitCode": 0, "Error": "",
           "StartedAt": "2026-11-26T20:05:10.531615218Z", "FinishedAt": "0001-01-01T00:00:00Z"}
EXITED_0 = {"Status": "exited", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False,
            "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "",
            "StartedAt": "2026-11-26T20:05:10.718799941Z", "FinishedAt": "2026-11-26T20:05:10.729375933Z"}
EXITED_75 = {"Status": "exited", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False,
             "Dead": False, "Pid": 0, "ExitCode": 75, "Error": "",
             "StartedAt": "2026-11-26T20:05:10.997178682Z", "FinishedAt": "2026-11-26T20:05:11.009619668Z"}
EXITED_137 = {"Status": "exited", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False,
              "Dead": False, "Pid": 0, "ExitCode": 137, "Error": "",
              "StartedAt": "2026-11-26T20:05:11.278563453Z", "FinishedAt": "2026-11-26T20:05:12.309036923Z"}
EXITED_1 = {"Status": "exited", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False,
            "Dead": False, "Pid": 0, "ExitCode": 1, "Error": "",
            "StartedAt": "2026-11-26T20:05:12.582985923Z", "FinishedAt": "2026-11-26T20:05:12.592840271Z"}
OOM = {"Status": "exited", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": True,
       "Dead": False, "Pid": 0, "ExitCode": 137, "Error": "",
       "StartedAt": "2026-11-26T20:05:12.867192713Z", "FinishedAt": "2026-11-26T20:05:12.899013013Z"}
PAUSED = {"Status": "paused", "Running": True, "Paused": True, "Restarting": False, "OOMKilled": False,
          "Dead": False, "Pid": 26922, "ExitCode": 0, "Error": "",
          "StartedAt": "2026-11-26T20:05:13.191739602Z", "FinishedAt": "0001-01-01T00:00:00Z"}
RESTARTING = {"Status": "restarting", "Running": True, "Paused": False, "Restarting": True, "OOMKilled": False,
              "Dead": False, "Pid": 0, "ExitCode": 3, "Error": "",
              "StartedAt": "2026-11-26T20:05:21.33006536Z", "FinishedAt": "2026-11-26T20:05:21.680166871Z"}
START_FAILED = {"Status": "created", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False,
                "Dead": False, "Pid": 0, "ExitCode": 127,
                "Error": "failed to create shim task: OCI runtime create failed: runc create failed: unable to "
                         "start container process: exec: \"/nonexistent\": stat /nonexistent: no such file or "
                         "directory: unknown",
                "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"}
DEAD = {"Status": "dead", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False,
        "Dead": True, "Pid": 0, "ExitCode": 0,
        "Error": "container ced23ed2bba93e82ce86bcf93e8fe3b5f393b55631fa69be1366253ad9f0e307: driver "
                 "\"overlay2\" failed to remove root filesystem: unlinkat /var/lib/docker/overlay2/"
                 "831b4d28a75f36527832f76a7248271cd02595ed6708592744e5b6ed1b46fcbf/diff/marker: "
                 "operation not permitted",
        "StartedAt": "2026-11-26T20:05:22.269706939Z", "FinishedAt": "2026-11-26T20:05:22.271840932Z"}


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("payload", "preempted", "cancelled", "state", "reason"),
    [
        (CREATED, False, False, AttemptState.PENDING, "created, not started yet"),
        (RUNNING, False, False, AttemptState.RUNNING, "running"),
        (PAUSED, False, False, AttemptState.RUNNING, "paused"),
        (RESTARTING, False, False, AttemptState.RUNNING, "restarting"),
        (EXITED_0, False, False, AttemptState.SUCCEEDED, "exit 0"),
        (EXITED_75, False, False, AttemptState.PREEMPTED, "exit 75: stopped after a preemption notice"),
        (EXITED_137, True, False, AttemptState.PREEMPTED, "killed by the preemptor"),
        (EXITED_137, False, False, AttemptState.FAILED, "exit 137 (SIGKILL)"),
        (EXITED_1, False, False, AttemptState.FAILED, "exit 1"),
        (EXITED_1, True, False, AttemptState.FAILED, "exit 1"),  # ended on its own, not by the kill
        (OOM, False, False, AttemptState.FAILED, "out of memory (no limit set)"),
        (EXITED_137, False, True, AttemptState.CANCELLED, "cancelled (exit 137)"),
        (EXITED_75, False, True, AttemptState.CANCELLED, "cancelled (exit 75)"),
        (EXITED_0, False, True, AttemptState.SUCCEEDED, "exit 0"),  # finished before the cancel
        (CREATED, False, True, AttemptState.CANCELLED, "cancelled before it started"),
    ],
)
def test_classify(payload: dict[str, Any], preempted: bool, cancelled: bool, state: AttemptState,
                  reason: str) -> None:
    status = classify(payload, preempted=preempted, cancelled=cancelled)
    assert (status.state, status.reason) == (state, reason)


def test_oom_names_the_limit() -> None:
    status = classify(OOM, memory_limit=32 * 1024 * 1024)
    assert (status.state, status.reason, status.exit_code) == (AttemptState.FAILED, "out of memory (limit 32Mi)", 137)


def test_dead_is_a_failure_with_the_engine_error() -> None:
    status = classify(DEAD)
    assert status.state is AttemptState.FAILED
    assert status.reason.startswith("container is dead: container ced23ed2")
    assert "\n" not in status.reason


def test_a_container_that_could_not_start_failed() -> None:
    status = classify(START_FAILED)
    assert status.state is AttemptState.FAILED
    assert status.reason.startswith("could not start: failed to create shim task")
    assert status.exit_code == 127 and status.started_at is None


def test_times_are_epoch_floats_and_the_zero_time_is_none() -> None:
    done = classify(EXITED_75)
    assert done.started_at == pytest.approx(_epoch("2026-11-26T20:05:10.997178"))
    assert done.ended_at == pytest.approx(_epoch("2026-11-26T20:05:11.009619"))
    assert done.exit_code == 75
    running = classify(RUNNING)
    assert running.started_at == pytest.approx(_epoch("2026-11-26T20:05:10.531615"))
    assert running.ended_at is None and running.exit_code is None
    pending = classify(CREATED)
    assert pending.started_at is None and pending.ended_at is None


def test_terminal_states_are_terminal() -> None:
    assert not classify(RUNNING).is_terminal() and not classify(CREATED).is_terminal()
    for payload in (EXITED_0, EXITED_75, EXITED_137, OOM, DEAD):
        assert classify(payload).is_terminal()


def test_an_unknown_status_is_unknown_not_failed() -> None:
    status = classify({**RUNNING, "Status": "hibernating"})
    assert status.state is AttemptState.UNKNOWN and "hibernating" in status.reason
