"""``runner simulate``: replay a preemption process against a job and predict time, spend and v.

A run is replayed attempt by attempt. Each attempt's machine starts, spends ``startup_s`` before
its first step, then trains in segments of ``interval`` seconds of work, each followed by a
checkpoint that costs ``checkpoint_cost_s``; the work of a segment counts as committed once its
checkpoint is done. A preemption ends the attempt: without a notice the work since the last
commit is lost; with one (a share ``notice_coverage`` of preemptions, drawn at random) the task
commits a parachute checkpoint and loses nothing. The next attempt starts ``resubmit_s`` later
(detection and scheduling, not billed). The simulated attempts go through the same
:func:`runner.cost.accounting.account` as real jobs, so spend, on-demand cost, v and goodput mean
the same thing in both.

Preemptions come from an exponential process with a given mean (machine time between
preemptions, memoryless) or from a schedule: seconds since the job's start, one per line.
Every interval is replayed against the same preemption draws (common random numbers), so the
comparison between intervals is not blurred by luck.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.cost.accounting import AttemptTimes, JobAccount, account
from runner.errors import SpecError
from runner.task.interval import auto_interval

if TYPE_CHECKING:
    from runner.cost.prices import Price

#: A run that has not finished after this many attempts is reported as not finishing.
MAX_ATTEMPTS = 100_000


@dataclass(frozen=True)
class Workload:
    """What one job needs, measured or given: seconds of pure compute, and its overheads."""

    work_s: float               # compute time of the whole job without any overhead
    checkpoint_cost_s: float    # C: training time lost per checkpoint
    startup_s: float = 60.0     # machine start to first step (billed)
    resubmit_s: float = 30.0    # preemption to the next machine's start (not billed)

    def __post_init__(self) -> None:
        for name in ("work_s", "checkpoint_cost_s", "startup_s", "resubmit_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SpecError(f"simulate: {name} must be a number of seconds >= 0, not {value!r}")
        if self.work_s <= 0:
            raise SpecError("simulate: the job has no work to replay (work_s is 0); give --work 10h")


@dataclass(frozen=True)
class Preemptions:
    """The preemption process: exponential with ``mean_s``, or a fixed ``schedule`` (seconds since start)."""

    mean_s: float | None = None
    schedule: tuple[float, ...] = ()
    notice_coverage: float = 0.0

    def times(self, rng: random.Random, horizon_s: float) -> list[float]:
        """Absolute preemption times (seconds since the job's start) up to ``horizon_s``."""
        if self.mean_s is None:
            return [t for t in self.schedule if t <= horizon_s]
        out, t = [], 0.0
        while True:
            t += rng.expovariate(1.0 / self.mean_s)
            if t > horizon_s:
                return out
            out.append(t)


def load_schedule(path: str | Path) -> tuple[float, ...]:
    """Read preemption times, one number of seconds since the job's start per line (# comments)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the schedule ({type(exc).__name__}); check the path") from None
    times = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value) or value < 0:
            raise SpecError(f"{path}:{number}: {text!r} is not a number of seconds >= 0; one time per line")
        times.append(value)
    if not times:
        raise SpecError(f"{path}: no preemption times; write one number of seconds per line")
    return tuple(sorted(times))


def replay(w: Workload, interval_s: float, preemptions: Sequence[float], rng: random.Random,
           notice_coverage: float = 0.0) -> list[AttemptTimes]:
    """One run of the job against given preemption times: its attempts, as the ledger would hold them."""
    tau, c = max(interval_s, 1e-6), w.checkpoint_cost_s
    attempts: list[AttemptTimes] = []
    done, t, it = 0.0, 0.0, iter(preemptions)
    pending = next(it, math.inf)
    while len(attempts) < MAX_ATTEMPTS:
        start = t
        while pending < start:  # no machine was running: those preemptions hit nothing
            pending = next(it, math.inf)
        first = start + w.startup_s
        left = w.work_s - done
        segments = math.ceil(left / tau)  # checkpoints between segments; none after the last one
        finish = first + left + (segments - 1) * c
        number = len(attempts) + 1
        if pending >= finish:
            attempts.append(AttemptTimes(number, 0, "SUCCEEDED", start, finish, first, finish, (segments - 1) * c))
            return attempts
        end = pending
        pending = next(it, math.inf)
        if end <= first:  # preempted while starting
            attempts.append(AttemptTimes(number, 0, "PREEMPTED", start, end, None, None, 0.0))
        else:
            full = int((end - first) // (tau + c))  # segments trained and checkpointed before the end
            worked = full * tau + min(tau, end - first - full * (tau + c))
            if rng.random() < notice_coverage:  # a notice came: the parachute saves everything
                saved_work, saved_at = worked, end
            else:
                saved_work, saved_at = full * tau, first + full * (tau + c)
            attempts.append(AttemptTimes(number, 0, "PREEMPTED", start, end, first,
                                         saved_at if saved_work > 0 else None, full * c))
            done += saved_work
        t = end + w.resubmit_s
    raise SpecError(f"simulate: the job does not finish within {MAX_ATTEMPTS} attempts at interval "
                    f"{interval_s:.0f} s; preemptions come faster than checkpoints can keep up")


@dataclass(frozen=True)
class Outcome:
    """What one checkpoint interval gives over all trials (means, and the 90th percentile of time)."""

    interval_s: float
    auto: bool
    completion_s: float
    completion_p90_s: float
    preemptions: float
    machine_s: float
    useful_s: float
    spend: float | None
    on_demand_cost: float | None
    value_ratio: float | None
    goodput: float


def evaluate(w: Workload, interval_s: float, draws: Sequence[tuple[list[float], int]], notice_coverage: float,
             price: Price | None, auto: bool = False) -> Outcome:
    """Replay every draw at one interval and summarise the accounts."""
    accounts: list[JobAccount] = []
    for times, seed in draws:
        attempts = replay(w, interval_s, times, random.Random(seed), notice_coverage)
        end = attempts[-1].ended_at or 0.0
        accounts.append(account(attempts, price, wall_s=end, now=end))
    completion = sorted(a.wall_s for a in accounts)
    spend = [a.spend for a in accounts]
    od = [a.on_demand_cost for a in accounts]
    return Outcome(
        interval_s=interval_s, auto=auto, completion_s=statistics.fmean(completion),
        completion_p90_s=completion[min(len(completion) - 1, int(0.9 * len(completion)))],
        preemptions=statistics.fmean(sum(t.state == "PREEMPTED" for t in a.attempts) for a in accounts),
        machine_s=statistics.fmean(a.machine_s for a in accounts),
        useful_s=statistics.fmean(a.useful_s for a in accounts),
        spend=None if price is None else statistics.fmean(spend),  # type: ignore[arg-type]
        on_demand_cost=None if price is None else statistics.fmean(od),  # type: ignore[arg-type]
        value_ratio=None if price is None else statistics.fmean(od) / statistics.fmean(spend),  # type: ignore[arg-type]
        goodput=statistics.fmean(a.goodput or 0.0 for a in accounts),
    )


def draws_for(process: Preemptions, w: Workload, trials: int, seed: int = 0) -> list[tuple[list[float], int]]:
    """The preemption times of every trial (and a seed for its notice draws), shared by all intervals."""
    horizon = 50 * (w.work_s + w.startup_s) + 10 * (process.mean_s or 0.0)
    rng = random.Random(seed)
    count = 1 if process.mean_s is None else trials  # a schedule is one fixed draw
    return [(process.times(random.Random(rng.getrandbits(64)), horizon), rng.getrandbits(64)) for _ in range(count)]


def auto_for(w: Workload, process: Preemptions) -> float:
    """The interval ``every: auto`` picks for this workload and process (Young-Daly, as the task does)."""
    mean = process.mean_s if process.mean_s is not None else _schedule_mtbf(process.schedule, w)
    return auto_interval(w.checkpoint_cost_s, mean, process.notice_coverage)


def _schedule_mtbf(schedule: Sequence[float], w: Workload) -> float:
    if not schedule:
        return math.inf
    return max(schedule[-1], w.work_s) / len(schedule)


def compare(w: Workload, process: Preemptions, intervals: Sequence[float], trials: int = 200, seed: int = 0,
            price: Price | None = None) -> list[Outcome]:
    """Outcomes for the given intervals and the auto one, sorted by interval."""
    draws = draws_for(process, w, trials, seed)
    auto = auto_for(w, process)
    chosen = sorted({round(i, 6) for i in intervals if i > 0} - {round(auto, 6)})
    rows = [evaluate(w, i, draws, process.notice_coverage, price) for i in chosen]
    rows.append(evaluate(w, auto, draws, process.notice_coverage, price, auto=True))
    return sorted(rows, key=lambda o: o.interval_s)


def brute_force_best(w: Workload, process: Preemptions, trials: int = 200, seed: int = 0, points: int = 41,
                     span: float = 8.0) -> tuple[float, list[Outcome]]:
    """The interval with the shortest mean completion over a geometric grid around the auto one."""
    draws = draws_for(process, w, trials, seed)
    auto = auto_for(w, process)
    grid = [auto * span ** (2 * k / (points - 1) - 1) for k in range(points)]
    rows = [evaluate(w, i, draws, process.notice_coverage, None) for i in grid]
    best = min(rows, key=lambda o: o.completion_s)
    return best.interval_s, rows


def workload_from_job(job: Any, attempts: Sequence[Any], progress: dict[str, Any] | None) -> Workload:
    """Measure a job's step time, checkpoint cost, startup and resubmit delay from the ledger and progress."""
    history = (progress or {}).get("attempts") or {}
    total_steps = (progress or {}).get("total_steps")
    step_times, costs, startups, gaps = [], [], [], []
    by_number = {a.number: a for a in attempts if a.array_index == 0}
    for number, h in history.items() if isinstance(history, dict) else ():
        if not isinstance(h, dict):
            continue
        a = by_number.get(int(number)) if str(number).isdigit() else None
        first, saved, stall = h.get("first_step_at"), h.get("checkpoint_at"), float(h.get("stall_s") or 0.0)
        steps = (h.get("checkpoint_step") or 0) - (h.get("resumed_from") or 0)
        if isinstance(first, (int, float)) and isinstance(saved, (int, float)) and steps > 0 and saved > first:
            step_times.append((saved - first - stall) / steps)
        if h.get("checkpoint_cost_s"):
            costs.append(float(h["checkpoint_cost_s"]))
        elif h.get("checkpoints"):
            costs.append(stall / float(h["checkpoints"]))
        if a is not None and a.started_at and isinstance(first, (int, float)):
            startups.append(max(0.0, first - a.started_at))
    ordered = sorted((a for a in attempts if a.array_index == 0), key=lambda a: a.number)
    for prev, nxt in zip(ordered, ordered[1:]):
        if prev.ended_at and nxt.started_at:
            gaps.append(max(0.0, nxt.started_at - prev.ended_at))
    if not step_times or not total_steps:
        raise SpecError(f"job {job.id} has no measured steps yet (no committed checkpoint with timings); "
                        "let it run a while, or give --work, --checkpoint-cost and --startup")
    return Workload(work_s=statistics.median(step_times) * int(total_steps),
                    checkpoint_cost_s=statistics.median(costs) if costs else 0.0,
                    startup_s=statistics.median(startups) if startups else 60.0,
                    resubmit_s=statistics.median(gaps) if gaps else 30.0)
