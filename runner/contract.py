"""The container contract in one place: what a task image and the runner agree on.

``docs/contract.md`` is the same contract for people writing their own images. Standard library
only: both sides import this module (the task containers and the control plane).

Environment of every attempt (set by the runner, read by ``runner.task.context.RunContext``):

| variable                   | meaning                                                           |
|----------------------------|-------------------------------------------------------------------|
| ``RUNNER_JOB_ID``          | the job, stable across attempts                                   |
| ``RUNNER_ATTEMPT``         | 1, 2, ...                                                         |
| ``RUNNER_CHECKPOINT_URI``  | where to resume from and save to                                  |
| ``RUNNER_NOTICE``          | ``auto``, ``aws``, ``gcp``, ``azure`` or ``none``                 |
| ``RUNNER_METADATA_URL``    | base URL of the metadata service (set only to point at a simulator) |
| ``RUNNER_HALT_FILE``       | a path whose appearance is a notice                               |
| ``RUNNER_CHECKPOINT_EVERY``| ``epoch``, a step count, a duration or ``auto``                   |
| ``RUNNER_CHECKPOINT_KEEP`` | committed steps to keep                                           |
| ``RUNNER_THREADS``         | CPU threads (exact resume needs the same count)                   |
| ``RUNNER_DATA_DIR``        | where the job's read-only inputs are, when the spec has ``data:`` |
| ``RUNNER_NOTICE_WINDOW``   | seconds a notice without a deadline (signal, halt) leaves; 30     |
| ``RUNNER_STORE_TIMEOUT``   | seconds one store call may retry without a notice; 300            |

Exit codes: 0 finished, 75 stopped after a notice with a checkpoint committed, 76 stopped after
``runner halt`` with a checkpoint committed, anything else failed. A ``HALT`` object under the
checkpoint URI asks a running attempt to stop as if a notice came (``runner halt``); the task's
notice listener looks for it every few seconds.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

# ---------------------------------------------------------------------------- durations

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Parse ``90s``, ``5m``, ``1.5h``, ``2d``, ``250ms`` into seconds (one grammar for specs and tasks)."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration; use a duration such as 90s, 5m or 1h")
    return float(m.group(1)) * _UNITS[m.group(2)]


# ---------------------------------------------------------------------------- exit codes

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Stopped after a preemption notice; a checkpoint is committed. Never charged to the failure budget.
EXIT_PREEMPTED = 75
#: Stopped at the user's request (``runner halt``: the HALT object); a checkpoint is committed. Not
#: retried in place by any service (their retry rules name 75), never resubmitted until ``runner resume``.
EXIT_HALTED = 76
HALT_SOURCE = "halt-request"  # the notice source of the HALT object


def exit_after(notice_source: str) -> int:
    """The exit code after a notice from ``notice_source`` has been handled (a checkpoint committed)."""
    return EXIT_HALTED if notice_source == HALT_SOURCE else EXIT_PREEMPTED


#: ``progress.json``'s ``state`` after the commit that answers a halt: the store says it too, for
#: backends that lose exit codes (moto's describe_jobs drops them; Slurm 22.05's sacct --json).
STATE_HALTED = "halted"
STATE_PREEMPTED = "preempted"


def progress_state(notice_source: str) -> str:
    """``progress.json``'s state for the checkpoint committed after a notice from ``notice_source``."""
    return STATE_HALTED if notice_source == HALT_SOURCE else STATE_PREEMPTED

# ---------------------------------------------------------------------------- environment

JOB_ID = "RUNNER_JOB_ID"
ATTEMPT = "RUNNER_ATTEMPT"
CHECKPOINT_URI = "RUNNER_CHECKPOINT_URI"
NOTICE = "RUNNER_NOTICE"
METADATA_URL = "RUNNER_METADATA_URL"
HALT_FILE = "RUNNER_HALT_FILE"
CHECKPOINT_EVERY = "RUNNER_CHECKPOINT_EVERY"
CHECKPOINT_KEEP = "RUNNER_CHECKPOINT_KEEP"
THREADS = "RUNNER_THREADS"
DATA_DIR = "RUNNER_DATA_DIR"
#: JSON {name: "s3://b/p", ...}: data prefixes the task downloads into DATA_DIR/<name> before it starts.
DATA_SOURCES = "RUNNER_DATA_SOURCES"
#: A folder that outlives attempts on one machine, for staged data (mounted by backends that can).
DATA_CACHE = "RUNNER_DATA_CACHE"
#: Native array jobs: the variable the service sets to the child's index (e.g. AWS_BATCH_JOB_ARRAY_INDEX).
ARRAY_INDEX_VAR = "RUNNER_ARRAY_INDEX_VAR"
#: ``runner exec``: the folder it syncs, the signal a notice becomes, the file holding seconds_left.
SYNC_DIR = "RUNNER_SYNC_DIR"
NOTICE_SIGNAL = "RUNNER_NOTICE_SIGNAL"
NOTICE_FILE = "RUNNER_NOTICE_FILE"
#: ``every: auto``: the runner's estimate of the mean time between preemptions and notice coverage.
MTBF_S = "RUNNER_MTBF_S"
NOTICE_COVERAGE = "RUNNER_NOTICE_COVERAGE"
#: Seconds a notice without a named deadline (a signal, a halt file) is assumed to leave; default 30.
NOTICE_WINDOW = "RUNNER_NOTICE_WINDOW"
DEFAULT_NOTICE_WINDOW_S = 30.0
#: Seconds one checkpoint store call may take, retries included, when no notice is pending.
STORE_TIMEOUT = "RUNNER_STORE_TIMEOUT"

#: Every variable the runner sets; a spec's ``env`` may not set any ``RUNNER_*`` name.
RESERVED_PREFIX = "RUNNER_"
NOTICE_CHOICES = ("auto", "aws", "gcp", "azure", "none")

# ---------------------------------------------------------------------------- inside the container

#: Where a backend that mounts folders (local Docker, Slurm containers) puts the job's checkpoint
#: folder inside the container. Fixed, so it never depends on the host's paths or their permissions.
CONTAINER_CHECKPOINT_DIR = "/checkpoints"
#: Where the job's read-only inputs (the spec's ``data:``) appear inside the container.
CONTAINER_DATA_DIR = "/data"

# ---------------------------------------------------------------------------- checkpoint layout

MANIFEST = "MANIFEST.json"
FINAL = "final"
PROGRESS = "progress.json"
PROGRESS_CSV = "checkpoint.txt"
#: The object under the checkpoint URI that asks a running attempt to stop (``runner halt``).
HALT_KEY = "HALT"
#: ``runner exec``: put beside a step's manifest when the command failed right after restoring that
#: step and committed nothing; the next attempt restores the step below it first.
RESTORE_FAILED = "RESTORE_FAILED.json"


def step_prefix(step: int) -> str:
    """Return the folder name of a step: ``step-000120``."""
    return f"step-{step:06d}"


class Progress(TypedDict, total=False):
    """The fields of ``progress.json`` (every one optional for a reader)."""

    task: str               # "cifar", "imagenet", "bert", "exec", ...
    epoch: int
    total_epochs: int
    step: int
    total_steps: int
    metrics: dict[str, float]
    updated_at: float       # epoch seconds
    attempt: int
    state: str              # "training", "checkpointed", "preempted", "halted", "done", ...


def is_preempted_exit(code: Any) -> bool:
    """Return whether an exit code means "stopped after a notice, checkpoint committed"."""
    return code == EXIT_PREEMPTED


def attempt_env(*, job_id: str, attempt: int, checkpoint_uri: str, notice: str, every: str | int, keep: int,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the contract's variables for one attempt (``extra``: other ``RUNNER_*`` ones)."""
    return {
        JOB_ID: job_id,
        ATTEMPT: str(attempt),
        CHECKPOINT_URI: checkpoint_uri,
        NOTICE: notice,
        CHECKPOINT_EVERY: str(every),
        CHECKPOINT_KEEP: str(keep),
        **(extra or {}),
    }
