"""The inputs and the tables of ``runner simulate``.

The preemption replay is :mod:`runner.cost.simulate` (checkpoint intervals compared); with
``--trace`` the replay of spot availability is :mod:`runner.capacity.replay` (capacity policies
compared against a deadline).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from runner.cost.accounting import format_money
from runner.cost.interval import PRIOR_MTBF_S, estimate_from_ledger
from runner.cost.simulate import Preemptions, Workload, auto_for, compare, load_schedule, workload_from_job
from runner.errors import SpecError
from runner.ledger import Ledger
from runner.task.context import parse_duration


def _seconds(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError:
        raise SpecError(f"--{flag} {text!r}: not a duration; use a duration such as 90s, 5m or 1h") from None


def _hours(seconds: float) -> str:
    if seconds == float("inf"):
        return "never"
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _interval(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_simulation(ledger: Ledger, *, job_id: str | None, mean: str | None, schedule: Path | None,
                   coverage: float | None, intervals: str | None, trials: int, work: str | None,
                   checkpoint_cost: str | None, startup: str | None, resubmit: str | None,
                   spec_file: Path | None, seed: int) -> tuple[Table, list[str]]:
    """Gather the workload, the preemption process and the price; replay; return the table and notes."""
    from runner.cost.prices import price_for_spec

    if mean is not None and schedule is not None:
        raise SpecError("--mean and --schedule: give one preemption process, not both")
    _check_coverage(coverage)
    w, spec, notes = _workload(ledger, job_id, spec_file, work, checkpoint_cost, startup, resubmit)

    estimate = estimate_from_ledger(ledger, spec) if spec is not None else None
    if schedule is not None:
        times = load_schedule(schedule)
        process = Preemptions(schedule=times, notice_coverage=coverage or 0.0)
        what = f"{len(times)} preemptions from {schedule}"
        trials_used = 1
    else:
        mean_s = _seconds("mean", mean) if mean is not None else (estimate.mtbf_s if estimate else PRIOR_MTBF_S)
        if not mean_s:
            raise SpecError("--mean: must be longer than 0 s, e.g. --mean 1h")
        cov = coverage if coverage is not None else (estimate.coverage if estimate and mean is None else 0.0)
        process = Preemptions(mean_s=mean_s, notice_coverage=cov)
        origin = "given" if mean is not None else (f"this ledger: {estimate.describe()}" if estimate else "the prior")
        what = f"exponential, mean {_hours(mean_s)} ({origin})"
        trials_used = trials
    notes.append(f"preemptions: {what}; notice coverage {process.notice_coverage:.2f}; {trials_used} trial(s)")

    price = None
    if spec is not None:
        price = price_for_spec(spec, live=False)
    notes.append(f"price: {price.machine} spot {price.spot_per_hour}/h, on demand {price.on_demand_per_hour}/h "
                 f"{price.currency} ({price.source}, {price.date})" if price else
                 "price: none (name a job or --spec whose machine has a price to see spend and v)")

    auto = auto_for(w, process)
    if intervals:
        chosen = [_seconds("intervals", part.strip()) or 0.0 for part in intervals.split(",") if part.strip()]
    else:
        chosen = [auto * f for f in (0.25, 0.5, 2.0, 4.0)]
        every = spec.checkpoint.every if spec is not None else None
        if isinstance(every, str) and every not in ("auto", "epoch"):
            chosen.append(parse_duration(every))
    rows = compare(w, process, chosen, trials=trials_used, seed=seed, price=price)
    best = min(rows, key=lambda o: o.completion_s)
    notes.append(f"auto interval: {_interval(auto)} (Young-Daly from the checkpoint cost and the preemption rate)")

    currency = price.currency if price else ""
    table = Table(box=None)
    for col in ("interval", "", "completion", "p90", "preemptions", "machine", "spend", "on demand", "v", "goodput"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("interval", "") else "right")
    for o in rows:
        mark = " ".join(m for m, on in (("auto", o.auto), ("best", o is best)) if on)
        table.add_row(_interval(o.interval_s), mark, _hours(o.completion_s), _hours(o.completion_p90_s),
                      f"{o.preemptions:.1f}", _hours(o.machine_s), format_money(o.spend, currency),
                      format_money(o.on_demand_cost, currency), "-" if o.value_ratio is None else f"{o.value_ratio:.2f}",
                      f"{o.goodput:.3f}")
    return table, notes


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


def _check_coverage(coverage: float | None) -> None:
    if coverage is not None and not 0.0 <= coverage <= 1.0:
        raise SpecError(f"--coverage {coverage}: a share of preemptions, between 0 and 1")


def _workload(ledger: Ledger, job_id: str | None, spec_file: Path | None, work: str | None,
              checkpoint_cost: str | None, startup: str | None, resubmit: str | None) -> tuple[Workload, Any, list[str]]:
    """The workload (measured on a job, or given) and the spec that prices it, with a note saying which."""
    from runner.spec import load_spec
    from runner.summary import read_progress

    spec = load_spec(spec_file) if spec_file is not None else None
    measured = None
    source = "given"
    if job_id is not None:
        job = ledger.get_job(job_id)
        spec = spec or job.spec()
        attempts = ledger.attempts(job.id)
        given = None not in (work, checkpoint_cost, startup, resubmit)
        if not given:
            measured = workload_from_job(job, attempts, read_progress(job))
            source = f"measured on job {job.id}"
    elif work is None:
        raise SpecError("runner simulate: name a job to replay, or give its --work (e.g. --work 10h)")
    base = measured or Workload(work_s=1.0, checkpoint_cost_s=0.0)
    w = Workload(
        work_s=_pick(_seconds("work", work), base.work_s),
        checkpoint_cost_s=_pick(_seconds("checkpoint-cost", checkpoint_cost), base.checkpoint_cost_s),
        startup_s=_pick(_seconds("startup", startup), base.startup_s),
        resubmit_s=_pick(_seconds("resubmit", resubmit), base.resubmit_s))
    notes = [f"workload ({source}): {_hours(w.work_s)} of compute, checkpoint cost {w.checkpoint_cost_s:.3f} s, "
             f"startup {w.startup_s:.1f} s, resubmit {w.resubmit_s:.1f} s"]
    return w, spec, notes


def _given_price(spot: float | None, on_demand: float | None, currency: str) -> Any:
    """A Price from --spot-price and --on-demand-price (both, or neither: None)."""
    from runner.cost.table import Price

    if spot is None and on_demand is None:
        return None
    if spot is None or on_demand is None:
        raise SpecError("--spot-price and --on-demand-price: give both (per hour), e.g. --spot-price 0.92 "
                        "--on-demand-price 3.06")
    if not (spot > 0 and on_demand > 0):
        raise SpecError(f"--spot-price {spot:g} / --on-demand-price {on_demand:g}: prices per hour must be > 0")
    if spot > on_demand:
        raise SpecError(f"--spot-price {spot:g} is above --on-demand-price {on_demand:g}; swap them")
    return Price("given", "-", "-", on_demand, spot, currency, "--spot-price/--on-demand-price",
                 datetime.date.today().isoformat())


def run_trace_simulation(ledger: Ledger, *, trace_file: Path, deadline: str | None, policies: str | None,
                         offsets: int, job_id: str | None, work: str | None, checkpoint_cost: str | None,
                         startup: str | None, resubmit: str | None, coverage: float | None,
                         intervals: str | None, poll: str, spot_price: float | None,
                         on_demand_price: float | None, spec_file: Path | None, seed: int) -> tuple[Table, list[str]]:
    """Replay the job against a spot availability trace under each policy; the table and notes."""
    from runner.capacity.policy import POLICIES, describe
    from runner.capacity.replay import TraceJob, replay_trace, trace_interval
    from runner.capacity.trace import load_trace
    from runner.cost.prices import price_for_spec, price_table

    _check_coverage(coverage)
    trace = load_trace(trace_file)
    chosen = [p.strip() for p in (policies or ",".join(POLICIES)).split(",") if p.strip()]
    for p in chosen:
        if p not in POLICIES:
            raise SpecError(f"--policies: {p!r} is not one of {', '.join(POLICIES)}")
    deadline_s = _seconds("deadline", deadline)
    w, spec, notes = _workload(ledger, job_id, spec_file, work, checkpoint_cost, startup, resubmit)
    parts = [_seconds("intervals", p.strip()) for p in (intervals or "").split(",") if p.strip()]
    if len(parts) > 1:
        raise SpecError("--intervals: a trace replay takes one checkpoint interval (or none: the auto one)")
    cov = coverage or 0.0
    interval = parts[0] if parts else trace_interval(trace, w, cov)
    if not interval:
        raise SpecError("--intervals: the checkpoint interval must be longer than 0 s, e.g. 20m")
    job = TraceJob(w, interval, cov, _seconds("poll", poll) or 0.0)

    price = _given_price(spot_price, on_demand_price, "USD")
    if price is None and spec is not None:
        price = price_for_spec(spec, live=False)
    if price is None and trace.machine:
        cloud, _, rest = trace.machine.partition(":")
        region, _, itype = rest.partition(":")
        price = price_table().lookup(cloud, region, itype)
    stats = trace.stats()
    notes.append(f"trace {trace_file}: {_hours(stats['length_s'])}, spot available {stats['available_share']:.0%} "
                 f"of the time, {stats['outages']:.0f} outages (mean {_hours(stats['outage_mean_s'])}, longest "
                 f"{_hours(stats['outage_max_s'])}); {offsets} start offsets; the trace repeats past its end")
    notes.append(f"checkpoint every {_interval(interval)} ({'given' if parts else 'auto: Young-Daly on the trace'}"
                 f"), notice coverage {cov:.2f}; the policy is asked every {_interval(job.poll_s)}")
    alone = job.on_demand_alone_s
    if deadline_s is None:
        notes.append("deadline: none (every policy then runs as spot-only)")
    else:
        notes.append(f"deadline {_hours(deadline_s)}; on-demand alone takes {_hours(alone)}: "
                     + ("it meets the deadline" if alone <= deadline_s else "no policy can meet it"))
    notes.append(f"price: {price.machine} spot {price.spot_per_hour}/h, on demand {price.on_demand_per_hour}/h "
                 f"{price.currency} ({price.source}, {price.date})" if price else
                 "price: none (give --spot-price and --on-demand-price, a --spec, or a '# machine:' line in the trace)")
    rows = replay_trace(trace, job, deadline_s, chosen, offsets, price, seed)

    currency = price.currency if price else ""
    table = Table(box=None)
    for col in ("policy", "mean", "p50", "p90", "max", "missed", "spend", "on-demand share", "v",
                "preemptions", "what it does"):
        table.add_column(col, no_wrap=col != "what it does", justify="left" if col in ("policy", "what it does")
                         else "right")
    for o in rows:
        missed = "-" if deadline_s is None else f"{o.miss_rate:.0%}"
        table.add_row(o.policy, _hours(o.completion_mean_s), _hours(o.completion_p50_s), _hours(o.completion_p90_s),
                      _hours(o.completion_max_s), missed, format_money(o.spend, currency), f"{o.on_demand_share:.0%}",
                      "-" if o.value_ratio is None else f"{o.value_ratio:.2f}",
                      f"{o.preemptions_mean:.1f} (max {o.preemptions_max})", describe(o.policy))
    return table, notes
