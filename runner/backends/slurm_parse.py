"""What ``squeue`` and ``sacct`` print, read into rows, and Slurm's job states mapped onto AttemptState.

Pure functions, tested against outputs captured from a real Slurm 22.05 (tests/slurm/outputs/).
The commands run with ``SLURM_TIME_FORMAT=%s``, so every time is epoch seconds; fields are
separated by ``|``.

Ids: a job is ``123``, an array element ``123_7`` (Slurm's own ``%A_%a``), each optionally
prefixed with the SSH login host it was submitted through: ``login1/123_7``.

Which runs count: ``sacct -D`` lists every run of a job id (a job Slurm requeued has one row per
run; plain ``sacct`` shows only the latest). The latest run decides the attempt; earlier ones are
named in the reason. Exit codes come from ``sacct -P`` (``75:0``) or ``squeue``'s raw wait status
(``exit_code`` 19200 = exit 75), never from 22.05's ``sacct --json``, which reports every normal
exit as 0.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from runner import contract
from runner.states import AttemptState, AttemptStatus

#: Ends whose meaning depends on the batch step (did the script exit 0 or 75, or was it killed?): sacct says.
NEEDS_BATCH_STEP = frozenset({"TIMEOUT", "PREEMPTED"})
#: squeue -O fields, in order; each followed by "|" (``Field:|``: no padding, a "|" after it).
SQUEUE_FIELDS = ("JobArrayID", "JobID", "State", "Reason", "StartTime", "EndTime", "exit_code",
                 "RestartCnt", "TimeLimit", "Name")
SACCT_FIELDS = ("JobID", "State", "ExitCode", "Start", "End", "ElapsedRaw", "TimelimitRaw", "Partition")

WAITING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
ACTIVE = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "STOPPED", "SUSPENDED"})
LOST_NODE = frozenset({"NODE_FAIL", "BOOT_FAIL"})
YEAR_MIN = 365 * 1440  # a "limit" this long is the partition's INFINITE
_ID = re.compile(r"^(?:(?P<login>[^/\s]+)/)?(?P<job>\d+)(?:_(?P<task>\d+))?$")


def squeue_format() -> str:
    """Return the ``squeue -O`` argument for :data:`SQUEUE_FIELDS`."""
    return ",".join(f"{name}:|" for name in SQUEUE_FIELDS)


def sacct_format() -> str:
    """Return the ``sacct -o`` argument for :data:`SACCT_FIELDS`."""
    return ",".join(SACCT_FIELDS)


def split_id(backend_id: str) -> tuple[str | None, str]:
    """Split ``[login/]job[_task]`` into (login or None, Slurm's id); ValueError when malformed."""
    m = _ID.match(backend_id.strip())
    if not m:
        raise ValueError(f"{backend_id!r} is not a Slurm job id such as 123, 123_7 or login1/123")
    job = m.group("job") + (f"_{m.group('task')}" if m.group("task") else "")
    return m.group("login"), job


def base_id(job: str) -> str:
    """Return the job id an element belongs to: ``123_7`` -> ``123``."""
    return job.split("_", 1)[0]


def _epoch(text: str) -> float | None:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return None  # "N/A", "Unknown", "None"
    return value if value > 0 else None


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def limit_minutes(text: str) -> int | None:
    """Parse a time limit (``1:00``, ``2-00:00:00``, ``30``, ``UNLIMITED``) into minutes; None when unlimited."""
    text = text.strip()
    if text.isdigit():  # sacct's TimelimitRaw: minutes
        return int(text)
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())  # "MM:SS" has no hours
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


@dataclass(frozen=True)
class Run:
    """One run of a job id: the allocation's state and, when it has one, its batch step's exit."""

    job: str                   # "123" or "123_7"
    state: str                 # PENDING, RUNNING, COMPLETED, FAILED, PREEMPTED, ...
    exit_code: int | None = None
    signal: int | None = None
    start: float | None = None
    end: float | None = None
    elapsed_s: float | None = None
    limit_min: int | None = None
    reason: str = ""
    restarts: int = 0
    partition: str = ""
    name: str = ""
    batch_exit: int | None = None  # the batch step's exit code (a PREEMPTED allocation reads 0:0)
    batch_state: str = ""          # the batch step's state (COMPLETED when the script itself exited 0)


@dataclass
class Record:
    """Every run of one job id that a command printed, oldest first."""

    runs: list[Run] = field(default_factory=list)

    @property
    def latest(self) -> Run:
        return self.runs[-1]


# ---------------------------------------------------------------------------- parsing


def parse_squeue(text: str) -> dict[str, Run]:
    """Read ``squeue -h -r -t all -O <squeue_format()>`` into runs by id (``123`` or ``123_7``)."""
    rows: dict[str, Run] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < len(SQUEUE_FIELDS):
            continue
        array_id, _raw, state, reason, start, end, status, restarts, limit, name = parts[:len(SQUEUE_FIELDS)]
        if not re.fullmatch(r"\d+(_\d+)?", array_id):
            continue  # an unexpanded "123_[0-9]" summary row: -r expands them
        raw = _int(status)
        code, sig = (None, None) if raw is None else _wait_status(raw)
        rows[array_id] = Run(job=array_id, state=state.split()[0].rstrip("+") if state else "",
                             exit_code=code, signal=sig, start=_epoch(start),
                             end=_epoch(end) if state not in ACTIVE | WAITING else None,
                             limit_min=limit_minutes(limit), reason="" if reason == "None" else reason,
                             restarts=_int(restarts) or 0, name=name)
    return rows


def parse_sacct(text: str) -> dict[str, Record]:
    """Read ``sacct -D -n -P -o <sacct_format()>`` into every run of each id, oldest first.

    A ``.batch`` step row gives the exit code of the allocation row before it (a preempted job
    reads ``PREEMPTED 0:0`` with ``.batch FAILED 75:0``); other steps are skipped.
    """
    records: dict[str, Record] = {}
    last: Run | None = None
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < len(SACCT_FIELDS):
            continue
        job, state, exit_text, start, end, elapsed, limit, partition = parts[:len(SACCT_FIELDS)]
        code, sig = _exit_pair(exit_text)
        if "." in job:
            owner, _, step = job.partition(".")
            if step == "batch" and last is not None and last.job == owner:
                record = records[owner]
                record.runs[-1] = _replace(record.runs[-1], batch_exit=code, batch_state=state.split()[0] if state else "")
            continue
        if not re.fullmatch(r"\d+(_\d+)?", job):
            continue
        words = state.split()
        run = Run(job=job, state=words[0].rstrip("+") if words else "", exit_code=code, signal=sig,
                  start=_epoch(start), end=_epoch(end), elapsed_s=_epoch(elapsed), limit_min=limit_minutes(limit),
                  reason=" ".join(words[1:]), partition=partition)
        records.setdefault(job, Record()).runs.append(run)
        last = run
    return records


def _replace(run: Run, **changes: object) -> Run:
    from dataclasses import replace

    return replace(run, **changes)  # type: ignore[arg-type]


def _exit_pair(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    return _int(code), _int(sig)


def _wait_status(raw: int) -> tuple[int | None, int | None]:
    """Split a raw wait status (``squeue``'s exit_code): 19200 -> exit 75; 9 -> signal 9."""
    if raw & 0x7F:
        return None, raw & 0x7F
    return raw >> 8, 0


# ---------------------------------------------------------------------------- classifying


def classify(record: Record | Sequence[Run]) -> AttemptStatus:
    """Map every run of one job id onto an AttemptStatus; the latest run decides.

    COMPLETED is SUCCEEDED, and so is any end where the batch script itself exited 0. Exit 75 (the
    task committed a checkpoint after Slurm's signal, from a preemption or the approaching time
    limit), PREEMPTED, NODE_FAIL and BOOT_FAIL are PREEMPTED: the watcher submits the next attempt.
    Exit 76 is HALTED (``runner halt``). TIMEOUT is FAILED: the task did not stop at the signal.
    CANCELLED is CANCELLED; any other end is FAILED with Slurm's words.
    """
    runs = list(record.runs if isinstance(record, Record) else record)
    if not runs:
        return AttemptStatus(AttemptState.UNKNOWN, "no run recorded")
    run = runs[-1]
    earlier = _earlier(runs[:-1])
    state, code = run.state, run.exit_code
    times = (run.start, run.end)

    def status(kind: AttemptState, text: str, exit_code: int | None = None) -> AttemptStatus:
        return AttemptStatus(kind, text + earlier, exit_code, *times)

    if state in WAITING:
        why = f" ({run.reason})" if run.reason else ""
        return AttemptStatus(AttemptState.PENDING, f"{state.lower()}{why}{earlier}")
    if state in ACTIVE:
        return AttemptStatus(AttemptState.RUNNING, state.lower() + earlier, None, run.start, None)
    if state == "COMPLETED":
        return status(AttemptState.SUCCEEDED, "completed", 0)
    batch = run.batch_exit if run.batch_exit is not None else code
    ran = _ran(run)
    if run.batch_state == "COMPLETED" and run.batch_exit == 0 and state != "CANCELLED":
        # The script (so the task) exited 0 as Slurm ended the allocation (a grace time or limit ran out).
        return status(AttemptState.SUCCEEDED, f"completed; Slurm recorded {state} as the allocation ended{ran}", 0)
    if batch == contract.EXIT_HALTED and state in ("FAILED", "TIMEOUT", "PREEMPTED"):
        return status(AttemptState.HALTED, f"exit 76: stopped after runner halt with a checkpoint committed{ran}", batch)
    if state == "TIMEOUT" and batch == contract.EXIT_PREEMPTED:
        return status(AttemptState.PREEMPTED, f"exit 75 at the time limit: stopped after Slurm's signal with a "
                                              f"checkpoint committed{ran}", batch)
    if state == "PREEMPTED":
        how = (f"stopped after the preemption signal with a checkpoint committed (exit {batch})"
               if batch == contract.EXIT_PREEMPTED else "killed when the grace time ran out")
        return status(AttemptState.PREEMPTED, f"preempted by a higher-priority job{_on(run)}: {how}{ran}", batch)
    if state in LOST_NODE:
        return status(AttemptState.PREEMPTED, f"{state}: the node was lost{ran}", batch)
    if state == "CANCELLED":
        by = f" {run.reason}" if run.reason else ""
        return status(AttemptState.CANCELLED, f"cancelled{by}{ran}", batch)
    if state == "TIMEOUT":
        return status(AttemptState.FAILED, f"reached its time limit{_limit(run)} without stopping at the signal "
                                            "(a task must commit a checkpoint and exit 75 on SIGTERM)", batch)
    if state == "FAILED" and code == contract.EXIT_PREEMPTED:
        return status(AttemptState.PREEMPTED, "exit 75: stopped after Slurm's signal (preemption or time limit) "
                                              f"with a checkpoint committed{ran}", code)
    if state == "FAILED":
        return status(AttemptState.FAILED, _failure(code, run.signal), code)
    if state == "OUT_OF_MEMORY":
        return status(AttemptState.FAILED, "out of memory (raise resources.memory)", code)
    if state in ("DEADLINE", "REVOKED", "SPECIAL_EXIT"):
        return status(AttemptState.FAILED, f"{state.lower()}", code)
    return AttemptStatus(AttemptState.UNKNOWN, f"unrecognised Slurm state {state!r}{earlier}", code, *times)


def previous_run_status(record: Record) -> AttemptStatus:
    """The status of the run before Slurm requeued a job (the attempt the watcher counts)."""
    finished = [r for r in record.runs if _ended_run(r)]
    if not finished:
        return AttemptStatus(AttemptState.PREEMPTED, "requeued by Slurm (why is not in accounting)")
    run = finished[-1]
    if run.state == "REQUEUED":  # RequeueExit, or scontrol requeue: the exit code says which
        run = _replace(run, state="FAILED" if run.exit_code else "PREEMPTED")
    return classify([run])


def is_requeued_waiting(run: Run) -> bool:
    """Whether Slurm requeued the job (RequeueExit, a node failure) and it waits to run again."""
    return run.restarts > 0 and run.state in WAITING


def _ended_run(run: Run) -> bool:
    """Whether a run (a row of ``sacct -D``) is over; a REQUEUED row is a run that ended in a requeue."""
    return run.state == "REQUEUED" or (run.state not in WAITING and run.state not in ACTIVE)


def _earlier(runs: Iterable[Run]) -> str:
    ended = [r.state for r in runs if _ended_run(r)]
    if not ended:
        return ""
    return f"; requeued by Slurm {len(ended)} time(s) before ({', '.join(ended)})"


def _on(run: Run) -> str:
    return f" on partition {run.partition}" if run.partition else ""


def _ran(run: Run) -> str:
    if run.elapsed_s is None and (run.start is None or run.end is None):
        return ""
    elapsed = run.elapsed_s if run.elapsed_s is not None else (run.end or 0) - (run.start or 0)
    text = f"; ran {_clock(elapsed)}"
    return text + (f" of its {_clock(run.limit_min * 60)} limit" if run.limit_min and run.limit_min < YEAR_MIN else "")


def _limit(run: Run) -> str:
    return f" ({_clock(run.limit_min * 60)})" if run.limit_min and run.limit_min < YEAR_MIN else ""


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _failure(code: int | None, sig: int | None) -> str:
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    if code == 127:
        return "exit 127: a command was not found on the node (the runtime, or the job's command); see runner logs"
    if code == 126:
        return "exit 126: a command could not be run on the node; see runner logs"
    if code is not None and code > 128:
        try:
            return f"exit {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit {code}" if code is not None else "failed"


__all__ = ["ACTIVE", "NEEDS_BATCH_STEP", "SACCT_FIELDS", "SQUEUE_FIELDS", "WAITING", "Record", "Run", "base_id", "classify",
           "is_requeued_waiting", "limit_minutes", "parse_sacct", "parse_squeue", "previous_run_status",
           "sacct_format", "split_id", "squeue_format"]
