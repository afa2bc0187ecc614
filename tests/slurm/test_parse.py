"""squeue/sacct parsing and Slurm state mapping, from outputs captured on a real Slurm 22.05 (outputs/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.backends import slurm_parse as sp
from runner.states import AttemptState

OUT = Path(__file__).parent / "outputs"


def text(name: str) -> str:
    return (OUT / name).read_text()


def test_ids_carry_the_login_host_and_array_index() -> None:
    assert sp.split_id("123") == (None, "123")
    assert sp.split_id("123_7") == (None, "123_7")
    assert sp.split_id("user@login1.example.org/123_7") == ("user@login1.example.org", "123_7")
    assert sp.base_id("123_7") == "123"
    for bad in ("", "abc", "12_", "a/b/12", "123;rm"):
        with pytest.raises(ValueError, match="not a Slurm job id"):
            sp.split_id(bad)


@pytest.mark.parametrize(("limit", "minutes"), [("1:00", 1), ("30", 30), ("2:00:00", 120), ("1-00:00:00", 1440),
                                                ("0:30", 1), ("UNLIMITED", None), ("Partition_Limit", None)])
def test_time_limits_in_minutes(limit: str, minutes: int | None) -> None:
    assert sp.limit_minutes(limit) == minutes


def test_sacct_duplicates_keep_every_run_oldest_first() -> None:
    records = sp.parse_sacct(text("sacct-D.txt"))
    assert set(records) == {"1", "2_0", "2_1", "2_2", "2_3", "6", "7", "8", "11", "12", "13", "16"}
    assert [r.state for r in records["11"].runs] == ["REQUEUED", "FAILED"]
    assert [r.state for r in records["12"].runs] == ["REQUEUED", "CANCELLED"]
    eight = records["8"].latest
    assert (eight.state, eight.exit_code, eight.batch_exit) == ("PREEMPTED", 0, 0)  # .batch CANCELLED 0:9
    assert records["13"].latest.limit_min == 1 and records["13"].latest.partition == "short"
    assert records["1"].latest.reason == "by 0"


def test_states_map_onto_attempt_states() -> None:
    records = sp.parse_sacct(text("sacct-D.txt"))
    expect = {
        "1": AttemptState.CANCELLED,
        "2_3": AttemptState.FAILED,       # exit 3
        "6": AttemptState.PREEMPTED,      # exit 75 inside the grace time: FAILED 75:0 in Slurm's words
        "7": AttemptState.SUCCEEDED,
        "8": AttemptState.PREEMPTED,      # killed when the grace time ran out
        "11": AttemptState.PREEMPTED,     # its latest run exited 75 too
        "12": AttemptState.CANCELLED,
        "13": AttemptState.FAILED,        # TIMEOUT: it never stopped at the signal
        "16": AttemptState.SUCCEEDED,
    }
    got = {job: sp.classify(records[job]) for job in expect}
    assert {job: s.state for job, s in got.items()} == expect
    assert got["2_3"].reason == "exit 3" and got["2_3"].exit_code == 3
    assert "killed when the grace time ran out" in got["8"].reason and "partition spot" in got["8"].reason
    assert "time limit (1:00)" in got["13"].reason
    assert "requeued by Slurm 1 time(s) before (REQUEUED)" in got["11"].reason
    assert got["16"].started_at == 1796141142 and got["16"].ended_at == 1796141150


def test_the_batch_step_decides_when_slurm_ends_the_allocation() -> None:
    """173: preempted where the batch shell got no signal (no preempt_send_user_signal, no srun); the task
    finished as the grace time ran out: TIMEOUT for the allocation, COMPLETED 0 for the script: done.
    170: an srun step (slurm.srun) took the preemption's SIGTERM and exited 75."""
    records = sp.parse_sacct(text("sacct-D-srun-grace.txt"))
    assert (records["173"].latest.state, records["173"].latest.batch_state) == ("TIMEOUT", "COMPLETED")
    done = sp.classify(records["173"])
    assert done.state == AttemptState.SUCCEEDED and "Slurm recorded TIMEOUT" in done.reason
    assert sp.classify(records["170"]).state == AttemptState.PREEMPTED
    assert sp.classify([sp.Run(job="9", state="TIMEOUT", batch_exit=75)]).state == AttemptState.PREEMPTED
    assert sp.classify([sp.Run(job="9", state="TIMEOUT", batch_exit=0, batch_state="CANCELLED")]).state \
        == AttemptState.FAILED
    assert {"TIMEOUT", "PREEMPTED"} <= sp.NEEDS_BATCH_STEP  # squeue cannot tell these apart: poll asks sacct


def test_squeue_exit_codes_are_raw_wait_statuses() -> None:
    rows = sp.parse_squeue(text("squeue-ended.txt"))
    assert rows["17"].exit_code == 75 and rows["17"].state == "FAILED"
    assert sp.classify([rows["17"]]).state == AttemptState.PREEMPTED
    assert sp.classify([rows["16"]]).state == AttemptState.SUCCEEDED


def test_requeued_job_waiting_is_seen_and_its_previous_run_counts() -> None:
    rows = sp.parse_squeue(text("squeue-requeued-pending.txt"))
    requeued = rows["24"]
    assert requeued.restarts == 1 and requeued.state == "PENDING" and requeued.reason == "BeginTime"
    assert sp.is_requeued_waiting(requeued)
    assert not sp.is_requeued_waiting(rows["25"])
    assert sp.classify([rows["25"]]).state == AttemptState.RUNNING
    assert {j for j in rows if j.startswith("26_")} == {"26_0", "26_1", "26_2", "26_3", "26_4"}
    record = sp.parse_sacct(text("sacct-D-requeued-pending.txt"))["24"]
    assert [r.state for r in record.runs] == ["REQUEUED", "PENDING"]
    assert sp.classify(record).state == AttemptState.PENDING
    previous = sp.previous_run_status(record)
    assert previous.state == AttemptState.PREEMPTED and previous.exit_code == 75


def test_pending_array_elements_are_listed_one_by_one() -> None:
    rows = sp.parse_squeue(text("squeue-array-pending.txt"))
    assert sorted(rows) == ["31", "32_0", "32_1", "32_2", "32_3"]
    status = sp.classify([rows["31"]])
    assert status.state == AttemptState.PENDING and status.reason == "pending (Resources)"


@pytest.mark.parametrize(("state", "code", "expected"), [
    ("NODE_FAIL", 0, AttemptState.PREEMPTED), ("BOOT_FAIL", 0, AttemptState.PREEMPTED),
    ("OUT_OF_MEMORY", 0, AttemptState.FAILED), ("DEADLINE", 0, AttemptState.FAILED),
    ("COMPLETING", 0, AttemptState.RUNNING), ("REQUEUE_HOLD", 0, AttemptState.PENDING),
    ("SUSPENDED", 0, AttemptState.RUNNING), ("FAILED", 127, AttemptState.FAILED),
    ("FAILED", 76, AttemptState.HALTED), ("FAILED", 75, AttemptState.PREEMPTED),
    ("WHATEVER", 0, AttemptState.UNKNOWN)])
def test_other_states(state: str, code: int, expected: AttemptState) -> None:
    status = sp.classify([sp.Run(job="9", state=state, exit_code=code)])
    assert status.state == expected
    if code == 127:
        assert "not found on the node" in status.reason


def test_sacct_json_is_never_used() -> None:
    """22.05's `sacct --json` reads every normal exit as 0 (cloud-facts.md): the formats are -P and -O."""
    assert "json" not in sp.sacct_format().lower() and "json" not in sp.squeue_format().lower()
    assert sp.squeue_format().startswith("JobArrayID:|,JobID:|,State:|")
