"""Replay a job against a spot availability trace, from many start offsets, under each capacity policy.

One run starts the job at a trace offset and plays it out as the watcher would:

- the policy (:func:`runner.capacity.policy.decide`, the real one) picks each attempt's capacity
  when the attempt is submitted, knowing whether spot is available right then (unless
  ``knows_availability`` is off: then it sees what a watcher that cannot tell sees, ``None``);
- a spot attempt waits while the trace shows no machine, the policy asked every ``poll_s`` (it
  may cancel the wait and go on-demand); it gets its machine when one is available, and is
  preempted when availability drops to 0: the trace's drops are the preemptions. A preemption
  loses the work since the last commit, unless a notice came (a share ``notice_coverage`` of
  them, drawn at random) and the parachute checkpoint saved it;
- an on-demand attempt always gets a machine and is never preempted; policies that return to
  spot are asked every ``poll_s`` while it runs, and when they say spot it checkpoints and stops;
- every attempt pays ``startup_s`` (billed) before its first step, trains in segments of
  ``interval_s`` each followed by a checkpoint of ``checkpoint_cost_s``, and the next attempt
  starts ``resubmit_s`` after one ends.

The attempts go through :func:`runner.cost.accounting.account` with the spot price for spot
attempts and the on-demand price for on-demand ones, so spend, v and goodput mean what they mean
for real jobs. A run past the end of the trace goes on from its start (the trace repeats).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.capacity.policy import (
    ON_DEMAND,
    POLICIES,
    RETURNS_TO_SPOT,
    SPOT,
    Situation,
    decide,
)
from runner.cost.accounting import AttemptTimes, JobAccount, account
from runner.cost.simulate import MAX_ATTEMPTS, Workload
from runner.errors import SpecError
from runner.task.interval import auto_interval

if TYPE_CHECKING:
    from runner.capacity.trace import Trace
    from runner.cost.table import Price


@dataclass(frozen=True)
class TraceJob:
    """A job to replay: its workload, checkpoint interval, notice coverage and the watcher's poll."""

    workload: Workload
    interval_s: float
    notice_coverage: float = 0.0
    poll_s: float = 60.0
    knows_availability: bool = True  # False: policies see spot_available=None, as a watcher that cannot tell

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise SpecError(f"replay: the checkpoint interval must be > 0 s, not {self.interval_s!r}")
        if not 0.0 <= self.notice_coverage <= 1.0:
            raise SpecError(f"replay: notice coverage {self.notice_coverage!r} is a share, between 0 and 1")
        if not (math.isfinite(self.poll_s) and self.poll_s > 0):
            raise SpecError(f"replay: the poll interval must be > 0 s, not {self.poll_s!r}")

    @property
    def restart_s(self) -> float:
        """One (re)start: the resubmit delay and the startup to the first step."""
        return self.workload.resubmit_s + self.workload.startup_s

    @property
    def loss_s(self) -> float:
        """The most a preemption without notice costs: a whole interval and the checkpoint in progress."""
        return self.interval_s + self.workload.checkpoint_cost_s

    @property
    def stall_ratio(self) -> float:
        return self.workload.checkpoint_cost_s / self.interval_s

    @property
    def switch_s(self) -> float:
        """Stopping an on-demand attempt for spot: its last checkpoint, then the resubmit delay."""
        return self.workload.checkpoint_cost_s + self.workload.resubmit_s

    @property
    def on_demand_alone_s(self) -> float:
        """Wall time of the whole job on one on-demand attempt from submission."""
        w = self.workload
        return w.startup_s + w.work_s + (_segments(w.work_s, self.interval_s) - 1) * w.checkpoint_cost_s

    @property
    def horizon_s(self) -> float:
        """A run not finished this long after submission is reported as never finishing."""
        return 50.0 * (self.workload.work_s + self.workload.startup_s)


@dataclass(frozen=True)
class Run:
    """One replay: a policy, a start offset, and what came of it."""

    policy: str
    offset_s: float
    deadline_s: float | None
    finished: bool
    completion_s: float          # submission to the end of the last attempt (inf: never finished)
    account: JobAccount
    preemptions: int
    switches: int                # capacity changes the policy made (pending spot -> on-demand, and back)

    @property
    def missed(self) -> bool:
        return self.deadline_s is not None and not self.completion_s <= self.deadline_s + 1e-6


@dataclass(frozen=True)
class PolicyOutcome:
    """A policy over every start offset: completion, misses, spend, v."""

    policy: str
    runs: int
    completion_mean_s: float
    completion_p50_s: float
    completion_p90_s: float
    completion_max_s: float
    misses: int
    unfinished: int
    spend: float | None          # mean per run
    spend_spot: float | None
    spend_on_demand: float | None
    on_demand_cost: float | None  # mean per run: the useful work at the on-demand price
    value_ratio: float | None
    on_demand_share: float       # share of machine time on on-demand capacity
    preemptions_mean: float
    preemptions_max: int

    @property
    def miss_rate(self) -> float:
        return self.misses / self.runs if self.runs else 0.0


def trace_interval(trace: Trace, w: Workload, notice_coverage: float = 0.0) -> float:
    """The checkpoint interval ``every: auto`` would pick on this trace (Young-Daly, MTBF = mean uptime)."""
    uptime = trace.stats()["uptime_mean_s"] or trace.length_s
    return auto_interval(w.checkpoint_cost_s, uptime, notice_coverage)


def offsets_for(trace: Trace, count: int) -> list[float]:
    """``count`` start offsets spread evenly over the trace."""
    if count < 1:
        raise SpecError(f"--offsets {count}: replay from at least one start offset")
    return [k * trace.length_s / count for k in range(count)]


def replay_one(trace: Trace, job: TraceJob, policy: str, offset_s: float, deadline_s: float | None,
               price: Price | None = None, seed: int = 0) -> Run:
    """One run of ``job`` submitted at ``offset_s`` into the trace, ``policy`` choosing capacity."""
    return _Replay(trace, job, policy, offset_s, deadline_s, random.Random(seed)).run(price)


def replay_trace(trace: Trace, job: TraceJob, deadline_s: float | None, policies: Sequence[str] = POLICIES,
                 offsets: int = 100, price: Price | None = None, seed: int = 0) -> list[PolicyOutcome]:
    """Every policy from the same ``offsets`` start offsets (and the same notice draws per offset)."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise SpecError(f"policy {unknown[0]!r} is not one of {', '.join(POLICIES)}")
    starts = offsets_for(trace, offsets)
    outcomes = []
    for policy in policies:
        runs = [replay_one(trace, job, policy, o, deadline_s, price, seed=seed * 1_000_003 + k)
                for k, o in enumerate(starts)]
        outcomes.append(summarize(policy, runs))
    return outcomes


def summarize(policy: str, runs: Sequence[Run]) -> PolicyOutcome:
    """Means and percentiles over runs (completion of a run that never finished counts as infinite)."""
    completion = sorted(r.completion_s for r in runs)
    n = len(completion)
    priced = runs[0].account.spot_per_hour is not None if runs else False

    def mean(values: Sequence[float]) -> float:
        return statistics.fmean(values) if values else 0.0

    spend = mean([r.account.spend or 0.0 for r in runs]) if priced else None
    od = mean([r.account.on_demand_cost or 0.0 for r in runs]) if priced else None
    splits = [r.account.spend_by_capacity or {} for r in runs]
    machine = sum(r.account.machine_s for r in runs)
    on_demand_machine = sum(r.account.machine_by_capacity()["on-demand"] for r in runs)
    return PolicyOutcome(
        policy=policy, runs=n,
        completion_mean_s=mean(completion) if all(map(math.isfinite, completion)) else math.inf,
        completion_p50_s=_percentile(completion, 0.5), completion_p90_s=_percentile(completion, 0.9),
        completion_max_s=completion[-1] if completion else 0.0,
        misses=sum(r.missed for r in runs), unfinished=sum(not r.finished for r in runs),
        spend=spend, spend_spot=mean([s.get("spot", 0.0) for s in splits]) if priced else None,
        spend_on_demand=mean([s.get("on-demand", 0.0) for s in splits]) if priced else None,
        on_demand_cost=od, value_ratio=(od / spend) if od is not None and spend else None,
        on_demand_share=on_demand_machine / machine if machine else 0.0,
        preemptions_mean=mean([r.preemptions for r in runs]), preemptions_max=max((r.preemptions for r in runs), default=0),
    )


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _segments(left: float, interval: float) -> int:
    return max(1, math.ceil(left / interval - 1e-9))


class _Replay:
    """The state of one run as it is played out."""

    def __init__(self, trace: Trace, job: TraceJob, policy: str, offset_s: float, deadline_s: float | None,
                 rng: random.Random) -> None:
        self.trace, self.job, self.policy, self.rng = trace, job, policy, rng
        self.t0 = offset_s
        self.deadline_s = deadline_s
        self.done = 0.0
        self.attempts: list[AttemptTimes] = []
        self.switches = 0
        w = job.workload
        self.tau, self.c, self.startup, self.resubmit = job.interval_s, w.checkpoint_cost_s, w.startup_s, w.resubmit_s
        self.base: dict[str, Any] = {"deadline": None if deadline_s is None else offset_s + deadline_s, "work_s": w.work_s,
                     "restart_s": job.restart_s, "submitted_at": offset_s, "loss_s": job.loss_s,
                     "stall_ratio": job.stall_ratio, "tick_s": job.poll_s, "switch_s": job.switch_s}

    def ask(self, now: float, current: str | None, pending_s: float = 0.0, extra_done: float = 0.0) -> str:
        return decide(self.policy, Situation(now=now, done_s=self.done + extra_done, current=current,
                                             pending_s=pending_s, spot_available=self.trace.up(now)
                                             if self.job.knows_availability else None, **self.base))

    def add(self, state: str, start: float | None, end: float | None, first: float | None = None,
            saved_at: float | None = None, stall: float = 0.0, capacity: str = SPOT, reason: str = "") -> None:
        self.attempts.append(AttemptTimes(len(self.attempts) + 1, 0, state, start, end, first, saved_at, stall,
                                          reason, capacity))

    def run(self, price: Price | None) -> Run:
        horizon = self.t0 + self.job.horizon_s
        t = self.t0
        capacity = self.ask(t, None)
        finished_at: float | None = None
        while finished_at is None and t <= horizon and len(self.attempts) < MAX_ATTEMPTS:
            if capacity == SPOT:
                t, capacity, finished_at = self.spot_attempt(t, horizon)
            else:
                t, capacity, finished_at = self.on_demand_attempt(t)
        end = finished_at if finished_at is not None else \
            min(horizon, max([t] + [a.ended_at or 0.0 for a in self.attempts]))
        acct = account(self.attempts, price, wall_s=end - self.t0, now=end)
        return Run(self.policy, self.t0, self.deadline_s, finished_at is not None,
                   (finished_at - self.t0) if finished_at is not None else math.inf, acct,
                   sum(a.state == "PREEMPTED" for a in self.attempts), self.switches)

    def spot_attempt(self, t: float, horizon: float) -> tuple[float, str, float | None]:
        """Wait for a machine (asking the policy), train until done or preempted."""
        machine_at = self.trace.next_up(t)
        poll = t + self.job.poll_s
        while poll < machine_at and poll <= horizon:
            if self.ask(poll, SPOT, pending_s=poll - t) == ON_DEMAND:
                self.add("CANCELLED", None, None, reason="spot pending: on-demand instead")
                self.switches += 1
                return poll, ON_DEMAND, None
            poll += self.job.poll_s
        if machine_at > horizon:
            return machine_at, SPOT, None
        preempted_at = self.trace.next_down(machine_at)
        noticed = self.rng.random() < self.job.notice_coverage
        left = self.job.workload.work_s - self.done
        first = machine_at + self.startup
        finish = first + left + (_segments(left, self.tau) - 1) * self.c
        if preempted_at >= finish:
            self.add("SUCCEEDED", machine_at, finish, first, finish, (_segments(left, self.tau) - 1) * self.c)
            self.done = self.job.workload.work_s
            return finish, SPOT, finish
        if preempted_at <= first:
            self.add("PREEMPTED", machine_at, preempted_at, reason="preempted while starting")
        else:
            full, phase = divmod(preempted_at - first, self.tau + self.c)
            if noticed:  # the parachute checkpoint saves what was trained
                saved, saved_at = full * self.tau + min(self.tau, phase), preempted_at
                stall = full * self.c + max(0.0, phase - self.tau)
            else:
                saved, saved_at, stall = full * self.tau, first + full * (self.tau + self.c), full * self.c
            self.add("PREEMPTED", machine_at, preempted_at, first, saved_at if saved > 0 else None, stall,
                     reason="notice" if noticed else "no notice")
            self.done += saved
        t = preempted_at + self.resubmit
        return t, self.ask(t, None), None

    def on_demand_attempt(self, t: float) -> tuple[float, str, float | None]:
        """Train to the end, unless a policy that returns to spot asks it to checkpoint and stop."""
        left = self.job.workload.work_s - self.done
        first = t + self.startup
        segments = _segments(left, self.tau)
        finish = first + left + (segments - 1) * self.c
        if self.policy in RETURNS_TO_SPOT:
            poll = t + self.job.poll_s
            while poll < finish:
                committed = 0.0 if poll <= first else min(left, ((poll - first) // (self.tau + self.c)) * self.tau)
                if self.ask(poll, ON_DEMAND, extra_done=committed) == SPOT:
                    return self.stop_on_demand(t, first, poll, left)
                poll += self.job.poll_s
        self.add("SUCCEEDED", t, finish, first, finish, (segments - 1) * self.c, ON_DEMAND)
        self.done = self.job.workload.work_s
        return finish, ON_DEMAND, finish

    def stop_on_demand(self, start: float, first: float, at: float, left: float) -> tuple[float, str, float | None]:
        """Checkpoint and stop at ``at``; the next attempt goes on spot after the resubmit delay."""
        self.switches += 1
        if at <= first:
            self.add("HALTED", start, at, capacity=ON_DEMAND, reason="back to spot")
            return at + self.resubmit, SPOT, None
        full, phase = divmod(at - first, self.tau + self.c)
        if phase < self.tau:  # training: one more checkpoint, of what it has
            end, saved = at + self.c, full * self.tau + phase
        else:  # checkpointing already: that commit is the last
            end, saved = first + (full + 1) * (self.tau + self.c), (full + 1) * self.tau
        saved = min(saved, left)
        self.add("HALTED", start, end, first, end, (full + 1) * self.c, ON_DEMAND, reason="back to spot")
        self.done += saved
        if self.done >= self.job.workload.work_s - 1e-9:
            return end, SPOT, end
        return end + self.resubmit, SPOT, None
