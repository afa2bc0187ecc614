"""What a job cost in time: wall time, attempts, preemptions, work lost, goodput.

Sources: the ledger (when each attempt ran, how it ended) and the task's own ``progress.json``
(per attempt: when it started, loaded its checkpoint, took its first step and committed its
last checkpoint). Goodput is useful training time over wall time, where useful means time
spent on steps that ended up in a committed checkpoint or the final result.
"""

from __future__ import annotations

import time
from typing import Any

from runner.errors import RunnerError
from runner.ledger import Attempt, Job
from runner.states import AttemptState


def read_progress(job: Job, index: int = 0) -> dict[str, Any] | None:
    """Return the job's ``progress.json`` from its checkpoint store, or None."""
    from runner.stores import open_store
    from runner.task.manifest import read_progress as read

    try:
        return read(open_store(job.spec().checkpoint_uri_for(index, job.id)))
    except (RunnerError, OSError):
        return None


def summarize(job: Job, attempts: list[Attempt], progress: dict[str, Any] | None) -> dict[str, Any]:
    """Return the time accounting of one job (array index 0 for progress)."""
    now = time.time()
    ended = [a.ended_at for a in attempts if a.ended_at]
    end = max(ended) if job.state.is_terminal() and ended else now
    wall = max(0.0, end - job.created_at)
    history = (progress or {}).get("attempts", {}) if isinstance(progress, dict) else {}
    useful = lost = startup = 0.0
    for a in attempts:
        h = history.get(str(a.number)) if isinstance(history, dict) else None
        if not isinstance(h, dict) or a.started_at is None:
            if a.started_at and a.ended_at:
                lost += a.ended_at - a.started_at  # ran, committed nothing we know of
            continue
        first = h.get("first_step_at") or h.get("loaded_at") or a.started_at
        saved = h.get("checkpoint_at") or first
        stop = a.ended_at or now
        startup += max(0.0, first - a.started_at)
        useful += max(0.0, min(saved, stop) - first)
        if a.state in (AttemptState.PREEMPTED, AttemptState.FAILED, AttemptState.CANCELLED):
            lost += max(0.0, stop - saved)
    steps = (progress or {}).get("step") if progress else None
    return {
        "job_id": job.id, "state": job.state.value, "wall_s": round(wall, 3),
        "attempts": len(attempts),
        "preemptions": sum(a.state == AttemptState.PREEMPTED for a in attempts),
        "failures": sum(a.state == AttemptState.FAILED for a in attempts),
        "useful_s": round(useful, 3), "lost_s": round(lost, 3), "startup_s": round(startup, 3),
        "goodput": round(useful / wall, 4) if wall > 0 else None,
        "step": steps, "total_steps": (progress or {}).get("total_steps") if progress else None,
    }
