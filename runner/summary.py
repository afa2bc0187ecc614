"""What a job cost in time and money: wall time, attempts, preemptions, work lost, goodput, spend, v.

Sources: the ledger (when each attempt ran, how it ended), the task's own ``progress.json`` (per
attempt: when it started, took its first step, committed its last checkpoint, stalled on
checkpoints), the price of the machine the spec runs on (:mod:`runner.cost.prices`) and, for a
backend that bills in service units (Slurm), its rate (``service_units(spec)`` on the backend
class). The arithmetic lives in :mod:`runner.cost.accounting`; this module gathers the inputs.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from runner.cost.accounting import JobAccount, ServiceUnits, account_job
from runner.errors import RunnerError
from runner.ledger import Attempt, Job
from runner.states import AttemptState

if TYPE_CHECKING:
    from runner.spec import JobSpec

log = logging.getLogger(__name__)


def format_duration(seconds: float | None) -> str:
    """``-``, ``42.0s``, ``12m05s`` or ``3h20m``: the CLI's and the dashboard's way of writing a duration."""
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def read_progress(job: Job, index: int = 0, spec: JobSpec | None = None) -> dict[str, Any] | None:
    """Return the job's ``progress.json`` from its checkpoint store, or None (``spec``: the job's, parsed)."""
    from runner.stores import open_store
    from runner.task.manifest import read_progress as read

    try:
        return read(open_store((spec or job.spec()).checkpoint_uri_for(index, job.id)))
    except (RunnerError, OSError):
        return None


def job_price(job: Job, spec: JobSpec | None = None) -> tuple[Any, str | None]:
    """Return (the price of the machine the job runs on or imitates, or None; a note when there is none)."""
    from runner.cost.prices import price_for_spec

    try:
        price = price_for_spec(spec or job.spec())
    except RunnerError as exc:
        return None, str(exc)
    return price, None if price is not None else "no price: the spec names no machine (see docs/prices.md)"


def job_units(job: Job, spec: JobSpec | None = None) -> ServiceUnits | None:
    """Return the service-unit rate of the job's backend (clusters), or None for backends billed in money."""
    from runner.plugins import backend_class

    try:
        rate = getattr(backend_class(job.backend), "service_units", None)
        return rate(spec or job.spec()) if rate is not None else None
    except RunnerError:
        return None


def job_account(job: Job, attempts: list[Attempt], progress: dict[str, Any] | None,
                spec: JobSpec | None = None) -> JobAccount:
    """Account for one job: every attempt's machine time, useful and wasted time, spend and v."""
    if spec is None:  # parsed once for the price and every index's progress
        try:
            spec = job.spec()
        except RunnerError:
            spec = None  # job_price says why
    units = job_units(job, spec)
    price, note = job_price(job, spec)
    if price is None and units is not None and units.price is not None:
        price, note = units.as_price(), None
    result = account_job(job, attempts, progress, price, read_progress=lambda i: read_progress(job, i, spec))
    if units is not None:
        result = replace(result, units=units)
        if note and units.price is None:
            note = None  # the cluster bills in service units; a price per unit (e.g. slurm.su_price) is optional
    if note:
        result.notes.append(note)
    return result


def summarize(job: Job, attempts: list[Attempt], progress: dict[str, Any] | None,
              spec: JobSpec | None = None) -> dict[str, Any]:
    """Return the time and money accounting of one job (progress: array index 0's; ``spec``: the job's
    stored spec, if the caller parsed it already)."""
    acct = job_account(job, attempts, progress, spec)
    cost = acct.as_dict()
    steps = (progress or {}).get("step") if progress else None
    return {
        "job_id": job.id, "state": job.state.value, "wall_s": cost["wall_s"],
        "attempts": len(attempts),
        "preemptions": sum(a.state == AttemptState.PREEMPTED for a in attempts),
        "failures": sum(a.state == AttemptState.FAILED for a in attempts),
        "useful_s": cost["useful_s"], "lost_s": cost["lost_s"], "startup_s": cost["startup_s"],
        "goodput": cost["goodput"],
        "step": steps, "total_steps": (progress or {}).get("total_steps") if progress else None,
        "cost": cost,
    }
