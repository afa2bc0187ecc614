"""Steer a job between spot and on-demand capacity, to meet its deadline within its budget.

For a job whose capacity policy is not ``spot-only`` (a ``deadline:``, a ``budget:`` or a
``policy:`` in its spec), the watcher asks, every pass:

- what capacity a new attempt gets (:func:`capacity_for`): :func:`runner.capacity.policy.decide`
  on the job's :class:`~runner.capacity.policy.Situation`;
- whether to change course (:func:`steer`): a spot attempt still waiting for a machine when the
  policy now says on-demand is stopped and replaced; an on-demand attempt that runs while the policy
  says spot (one that switches back) is asked to commit and stop (the ``HALT`` object, marked
  ``switch``), and the next attempt runs on spot.

The situation comes from the ledger (when attempts ran, on what) and the task's ``progress.json``
(steps done of the total, and the per-attempt timing that gives the seconds per step): the work
left, the work done, and what one restart costs. Before any progress, the spec's ``work:`` is the
estimate; with neither, a job starts on spot and learns.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from runner.contract import parse_duration
from runner.ledger import Attempt, Job
from runner.spec.model import JobSpec
from runner.states import AttemptState

#: Startup assumed before any attempt measured one (machine start to first step).
DEFAULT_STARTUP_S = 60.0


#: Seconds from an attempt's end to the next one's start (the watcher's pass, scheduling).
RESUBMIT_S = 10.0


@dataclass(frozen=True)
class Rates:
    """What the progress file says about the job's work."""

    work_s: float | None     # compute seconds the whole job needs (None: not known yet)
    done_s: float            # compute seconds committed
    restart_s: float         # one (re)start: resubmit delay plus startup to the first step
    loss_s: float = 0.0      # the most a preemption without notice loses: a checkpoint interval and its cost
    stall_ratio: float = 0.0 # checkpoint stall per second of work

def rates(spec: JobSpec, progress: dict[str, Any] | None) -> Rates:
    """Estimate the job's work from its progress file (per-attempt timing) or the spec's ``work:``."""
    progress = progress or {}
    history = [h for h in (progress.get("attempts") or {}).values() if isinstance(h, dict)]
    spans = [(h["checkpoint_at"] - h["first_step_at"], h["checkpoint_step"] - (h.get("resumed_from") or 0))
             for h in history if _numbers(h, "checkpoint_at", "first_step_at", "checkpoint_step")]
    seconds = sum(s for s, n in spans if n > 0 and s > 0)
    steps = sum(n for s, n in spans if n > 0 and s > 0)
    step_s = seconds / steps if steps else None
    starts = [h["first_step_at"] - h["started_at"] for h in history if _numbers(h, "first_step_at", "started_at")]
    startup = statistics.fmean(starts) if starts else DEFAULT_STARTUP_S
    total, step = progress.get("total_steps"), progress.get("step") or 0
    if step_s is not None and isinstance(total, (int, float)) and total > 0:
        work, done = total * step_s, min(step, total) * step_s
    elif spec.work_s is not None:
        work = spec.work_s
        done = work * min(step, total) / total if isinstance(total, (int, float)) and total > 0 else 0.0
    else:
        work, done = None, 0.0
    every = spec.checkpoint.every
    interval = every * step_s if isinstance(every, int) and step_s else (
        parse_duration(every) if isinstance(every, str) and every not in ("epoch", "auto") else 0.0)
    stall = sum(h.get("stall_s") or 0.0 for h in history if isinstance(h.get("stall_s"), (int, float)))
    stall_ratio = stall / seconds if seconds else 0.0
    return Rates(work, done, RESUBMIT_S + startup, interval * (1 + stall_ratio), stall_ratio)


def _numbers(h: dict[str, Any], *keys: str) -> bool:
    return all(isinstance(h.get(k), (int, float)) for k in keys)


#: How often the watcher asks again (its pass interval, with room): the policies plan one pass ahead.
TICK_S = 5.0


def situation(job: Job, spec: JobSpec, current: Attempt | None, progress: dict[str, Any] | None,
              now: float, spot_available: bool | None = None) -> Any:
    """The :class:`runner.capacity.policy.Situation` of a job (``progress``: its array index's)."""
    from runner.capacity.policy import Situation

    r = rates(spec, progress)
    pending = 0.0
    if current is not None and not current.state.is_terminal() and current.started_at is None:
        pending = max(1e-3, now - (current.submitted_at or current.reserved_at))
    return Situation(now=now, deadline=spec.deadline_at(job.created_at),
                     work_s=r.work_s if r.work_s is not None else 0.0, done_s=r.done_s,
                     current=None if current is None or current.state.is_terminal() else current.capacity,
                     pending_s=pending, restart_s=r.restart_s, spot_available=spot_available,
                     submitted_at=job.created_at, loss_s=r.loss_s, stall_ratio=r.stall_ratio, tick_s=TICK_S)


def capacity_for(job: Job, spec: JobSpec, progress: dict[str, Any] | None, now: float | None = None,
                 spot_available: bool | None = None) -> str:
    """The capacity of a new attempt of ``job``: on demand, spot, or what its policy decides now."""
    policy = spec.capacity_policy
    if policy in ("spot-only", "on-demand"):
        return "spot" if policy == "spot-only" else "on-demand"
    if rates(spec, progress).work_s is None:  # nothing known of the work yet: start cheap, learn
        return "spot"
    from runner.capacity.policy import decide

    return str(decide(policy, situation(job, spec, None, progress, time.time() if now is None else now,
                                        spot_available)))


@dataclass(frozen=True)
class Change:
    """Stop ``attempt`` (``why``) so the next one runs on ``capacity``; ``commit``: ask it to checkpoint
    first (a running attempt), else cancel it (one still waiting for a machine)."""

    attempt: Attempt
    capacity: str
    commit: bool
    why: str


def steer(job: Job, spec: JobSpec, attempt: Attempt, progress: dict[str, Any] | None,
          now: float | None = None, spot_available: bool | None = None) -> Change | None:
    """Whether the open ``attempt`` should give way to one on the other capacity, now."""
    if spec.capacity_policy in ("spot-only", "on-demand") or attempt.state.is_terminal():
        return None
    if attempt.stop_requested is not None or rates(spec, progress).work_s is None:
        return None
    from runner.capacity.policy import decide

    now = time.time() if now is None else now
    wanted = str(decide(spec.capacity_policy, situation(job, spec, attempt, progress, now, spot_available)))
    if wanted == attempt.capacity:
        return None
    if attempt.capacity == "spot" and attempt.started_at is None and attempt.state != AttemptState.RUNNING:
        waited = now - (attempt.submitted_at or attempt.reserved_at)
        return Change(attempt, "on-demand", False, f"spot capacity not found in {waited:.0f}s; the deadline "
                                                   "needs on-demand now")
    if attempt.capacity == "on-demand" and attempt.state == AttemptState.RUNNING:
        return Change(attempt, "spot", True, "ahead of the deadline: back to spot, from a checkpoint now")
    if attempt.capacity == "spot" and attempt.state == AttemptState.RUNNING:
        return Change(attempt, "on-demand", True, "behind the deadline: on to on-demand, from a checkpoint now")
    return None


#: A running attempt is asked to stop when the spend is this many seconds of its machine from the budget
#: (time to commit a checkpoint and stop), and no attempt starts with less left than that.
BUDGET_MARGIN_S = 30.0


def over_budget(job: Job, spec: JobSpec, attempts: list[Attempt], progress: dict[str, Any] | None,
                now: float | None = None) -> str | None:
    """Why the job must stop spending (its budget is reached, within the margin), or None."""
    if spec.budget is None:
        return None
    from runner.cost.accounting import format_money
    from runner.summary import job_account

    acct = job_account(job, attempts, progress, spec)
    spend = acct.as_dict().get("spend")
    if spend is None:
        return None  # no price to count with: submit refuses a budget without one
    running = [a for a in attempts if not a.state.is_terminal()]
    rate = max((acct.on_demand_per_hour or 0.0) if a.capacity == "on-demand" else (acct.spot_per_hour or 0.0)
               for a in running) if running else (acct.spot_per_hour or 0.0)
    if spend + rate * BUDGET_MARGIN_S / 3600 < spec.budget:
        return None
    return (f"budget reached: {format_money(spend, acct.currency)} of {format_money(spec.budget, acct.currency)} "
            f"spent; its checkpoint is kept: raise it with `runner resume {job.id} --budget <more>`")


__all__ = ["BUDGET_MARGIN_S", "Change", "Rates", "capacity_for", "over_budget", "rates", "situation", "steer"]
