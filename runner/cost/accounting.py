"""What each attempt and each job cost: machine time split into useful and wasted, spend, v.

Inputs, per attempt: when the machine ran it (the backend's start and stop times, kept in the
ledger) and what the task did meanwhile (its own ``progress.json`` history: the first training
step, the last committed checkpoint and the time the loop stalled handing checkpoints over).

Every second an attempt ran lands in exactly one bucket, so the buckets add up to machine time:

    machine = useful + startup + stall + lost + other

- ``useful``: training whose result ended in a committed checkpoint or the final result;
- ``startup``: machine start to first step (container start, imports, data, checkpoint load);
- ``stall``: time the loop waited on checkpoints (up to the last commit);
- ``lost``: work after the last commit, thrown away by a preemption, failure or cancel;
- ``other``: after the final commit of a finished attempt (evaluation, exit) and, for an attempt
  still running, the work not committed yet.

Spend is machine time at the price of the attempt's capacity (spot, or on-demand for an attempt
that ran on on-demand capacity; :attr:`JobAccount.spend_by_capacity` splits it); the on-demand
counterfactual is useful time at the on-demand price: the same work on machines that are never
taken away. The value ratio
``v = on_demand_cost / spend``; goodput is useful time over wall time. ``runner simulate`` feeds
its simulated attempts through the same :func:`account` as real jobs.

Clusters bill in service units (core- or GPU-hours), not dollars: a job whose backend declares a
rate (:class:`ServiceUnits`, e.g. Slurm's) also gets ``service_units``: used (each attempt's
machine time at its capacity's rate: the preemptible or the normal partition's), useful, and the
useful work at the on-demand partition's rate; a price per unit, when the
spec gives one, becomes an ordinary :class:`Price` (see :meth:`ServiceUnits.as_price`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from runner.states import AttemptState

if TYPE_CHECKING:
    from runner.cost.prices import Price
    from runner.ledger import Attempt, Job

_ENDED_BADLY = {AttemptState.PREEMPTED.value, AttemptState.FAILED.value, AttemptState.CANCELLED.value}
#: Array jobs larger than this have their children's progress files skipped (one read each).
MAX_PROGRESS_READS = 256


@dataclass(frozen=True)
class ServiceUnits:
    """A cluster's billing rate for one job: units per hour on spot (preemptible) and on demand."""

    per_hour: float                 # units one hour of this job costs on the preemptible partition
    on_demand_per_hour: float       # ... on the normal partition
    unit: str                       # "core-hours", "GPU-hours" or "SU"
    price: float | None = None      # money per unit, when known
    currency: str = "USD"
    machine: str = "slurm"          # a label for the price: "slurm:<cluster>:<partition>"

    def as_price(self) -> Price | None:
        """The unit price as a per-hour Price of this job, or None without a unit price."""
        import datetime

        from runner.cost.table import Price

        if self.price is None:
            return None
        cloud, _, rest = self.machine.partition(":")
        region, _, itype = rest.partition(":")
        return Price(cloud, region, itype, self.on_demand_per_hour * self.price, self.per_hour * self.price,
                     self.currency, f"job spec: {self.price:g} {self.currency} per service unit",
                     datetime.date.today().isoformat())


@dataclass(frozen=True)
class AttemptTimes:
    """When one attempt ran (backend clock, epoch seconds) and what its task did (task clock)."""

    number: int
    index: int
    state: str                      # an AttemptState value
    started_at: float | None
    ended_at: float | None
    first_step_at: float | None = None  # the task's first training step
    saved_at: float | None = None       # when the work in its last committed checkpoint was done
    stall_s: float = 0.0                # checkpoint stalls up to that commit
    reason: str = ""
    capacity: str = "spot"              # "spot" or "on-demand": the rate its machine time is billed at


@dataclass(frozen=True)
class AttemptAccount:
    """One attempt's machine time in buckets (seconds) and money (in the price's currency)."""

    number: int
    index: int
    state: str
    started_at: float | None
    ended_at: float | None
    machine_s: float
    useful_s: float
    startup_s: float
    stall_s: float
    lost_s: float
    other_s: float
    spend: float | None
    on_demand_cost: float | None
    reason: str = ""
    capacity: str = "spot"

    @property
    def wasted_s(self) -> float:
        return self.machine_s - self.useful_s


@dataclass(frozen=True)
class JobAccount:
    """A job's totals over its attempts; ``spend``, ``on_demand_cost`` and ``value_ratio`` need a price."""

    attempts: list[AttemptAccount]
    wall_s: float
    currency: str | None = None
    spot_per_hour: float | None = None
    on_demand_per_hour: float | None = None
    price_source: str | None = None
    price_date: str | None = None
    machine: str | None = None
    notes: list[str] = field(default_factory=list)
    lanes_wall_s: float | None = None  # arrays: the wall time of every index, added up
    units: ServiceUnits | None = None  # a cluster's billing rate, when the backend has one


    def _sum(self, name: str) -> float:
        return sum(getattr(a, name) for a in self.attempts)

    @property
    def machine_s(self) -> float:
        return self._sum("machine_s")

    @property
    def useful_s(self) -> float:
        return self._sum("useful_s")

    @property
    def wasted_s(self) -> float:
        return self.machine_s - self.useful_s

    @property
    def spend(self) -> float | None:
        return None if self.spot_per_hour is None else self._sum("spend")

    @property
    def on_demand_cost(self) -> float | None:
        return None if self.on_demand_per_hour is None else self._sum("on_demand_cost")

    @property
    def spend_by_capacity(self) -> dict[str, float] | None:
        """Spend on spot and on on-demand capacity (they add up to :attr:`spend`); None without a price."""
        if self.spot_per_hour is None:
            return None
        split = {"spot": 0.0, "on-demand": 0.0}
        for a in self.attempts:
            split[a.capacity] = split.get(a.capacity, 0.0) + (a.spend or 0.0)
        return split

    def machine_by_capacity(self) -> dict[str, float]:
        """Machine seconds on spot and on on-demand capacity."""
        split = {"spot": 0.0, "on-demand": 0.0}
        for a in self.attempts:
            split[a.capacity] = split.get(a.capacity, 0.0) + a.machine_s
        return split

    @property
    def value_ratio(self) -> float | None:
        spend, od = self.spend, self.on_demand_cost
        return od / spend if spend and od is not None else None

    @property
    def goodput(self) -> float | None:
        """Useful time over wall time; for an array, over the wall time of each index, added up."""
        wall = self.lanes_wall_s if self.lanes_wall_s is not None else self.wall_s
        return self.useful_s / wall if wall > 0 else None

    def service_units(self) -> dict[str, Any] | None:
        """Service units used (machine time), useful, and the useful work on demand; None without a rate."""
        if self.units is None:
            return None
        u = self.units

        def rate(a: AttemptAccount) -> float:  # each attempt at its own capacity's rate
            return u.on_demand_per_hour if a.capacity == "on-demand" else u.per_hour

        return {"unit": u.unit, "per_hour": u.per_hour, "on_demand_per_hour": u.on_demand_per_hour,
                "used": round(sum(a.machine_s * rate(a) for a in self.attempts) / 3600, 6),
                "useful": round(sum(a.useful_s * rate(a) for a in self.attempts) / 3600, 6),
                "on_demand": round(self.useful_s / 3600 * u.on_demand_per_hour, 6),
                "price": u.price, "currency": u.currency}

    def as_dict(self) -> dict[str, Any]:
        """The totals and the per-attempt rows, rounded for people (seconds to 0.001, money to 1e-6)."""
        totals = {name: round(self._sum(name), 3) for name in ("useful_s", "startup_s", "stall_s", "lost_s", "other_s")}
        money = (lambda x: None if x is None else round(x, 6))
        return {
            "machine_s": round(self.machine_s, 3), **totals, "wasted_s": round(self.wasted_s, 3),
            "wall_s": round(self.wall_s, 3),
            "goodput": None if self.goodput is None else round(self.goodput, 4),
            "currency": self.currency, "spend": money(self.spend), "on_demand_cost": money(self.on_demand_cost),
            "savings": money(None if self.spend is None or self.on_demand_cost is None
                             else self.on_demand_cost - self.spend),
            "spend_by_capacity": None if (split := self.spend_by_capacity) is None else
            {k: money(v) for k, v in split.items()},
            "machine_by_capacity": {k: round(v, 3) for k, v in self.machine_by_capacity().items()},
            "value_ratio": None if self.value_ratio is None else round(self.value_ratio, 3),
            "price": None if self.spot_per_hour is None else {
                "machine": self.machine, "spot_per_hour": self.spot_per_hour,
                "on_demand_per_hour": self.on_demand_per_hour, "currency": self.currency,
                "source": self.price_source, "date": self.price_date},
            "service_units": self.service_units(),
            "notes": list(self.notes),
            # fields() not asdict(): the fields are plain values, and asdict's deep copies made this the
            # slowest step of runner status and runner ui on a big ledger
            "attempts": [{f.name: (round(v, 6) if isinstance(v := getattr(a, f.name), float) else v)
                          for f in fields(a)} for a in self.attempts],
        }


def account_attempt(t: AttemptTimes, price: Price | None = None, now: float | None = None) -> AttemptAccount:
    """Split one attempt's machine time into the buckets; price it when a price is given."""
    zero = AttemptAccount(t.number, t.index, t.state, t.started_at, t.ended_at, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                          0.0 if price else None, 0.0 if price else None, t.reason, t.capacity)
    if t.started_at is None:
        return zero  # never ran: no machine time
    start = t.started_at
    end = t.ended_at if t.ended_at is not None else (time.time() if now is None else now)
    end = max(end, start)
    machine = end - start

    def clamp(x: float | None, lo: float, hi: float) -> float | None:
        return None if x is None else min(max(x, lo), hi)

    first = clamp(t.first_step_at, start, end)
    if first is None:  # never trained: all of it was getting there
        useful = stall = lost = other = 0.0
        startup = machine
    else:
        startup = first - start
        saved = clamp(t.saved_at, first, end) if t.saved_at is not None else first
        assert saved is not None
        stall = min(max(0.0, t.stall_s), saved - first)
        useful = saved - first - stall
        after = end - saved
        if t.state in _ENDED_BADLY:
            lost, other = after, 0.0
        else:
            lost, other = 0.0, after
    spend = on_demand = None
    if price is not None:
        rate = price.on_demand_per_hour if t.capacity == "on-demand" else price.spot_per_hour
        spend = machine / 3600.0 * rate
        on_demand = useful / 3600.0 * price.on_demand_per_hour
    return AttemptAccount(t.number, t.index, t.state, t.started_at, t.ended_at, machine, useful, startup,
                          stall, lost, other, spend, on_demand, t.reason, t.capacity)


def account(times: Iterable[AttemptTimes], price: Price | None = None, wall_s: float = 0.0,
            now: float | None = None) -> JobAccount:
    """Account for a job's attempts (real ones from the ledger, or simulated ones)."""
    rows = [account_attempt(t, price, now) for t in times]
    if price is None:
        return JobAccount(rows, wall_s)
    return JobAccount(rows, wall_s, price.currency, price.spot_per_hour, price.on_demand_per_hour,
                      price.source, price.date, price.machine)


def times_from_ledger(attempts: Sequence[Attempt], progress_by_index: dict[int, dict[str, Any] | None]) -> list[AttemptTimes]:
    """Join the ledger's attempts with the per-attempt history in each index's ``progress.json``."""
    out = []
    for a in attempts:
        progress = progress_by_index.get(a.array_index) or {}
        history = progress.get("attempts") if isinstance(progress, dict) else None
        h = history.get(str(a.number)) if isinstance(history, dict) else None
        h = h if isinstance(h, dict) else {}
        out.append(AttemptTimes(
            a.number, a.array_index, a.state.value, a.started_at, a.ended_at,
            first_step_at=_num(h.get("first_step_at")), saved_at=_num(h.get("checkpoint_at")),
            stall_s=_num(h.get("stall_s")) or 0.0, reason=a.reason,
            capacity=getattr(a, "capacity", None) or "spot"))  # ledgers before per-attempt capacity: spot
    return out


def job_wall_s(job: Job, attempts: Sequence[Attempt], now: float | None = None) -> float:
    """Wall time from submission to the last attempt's end (or now while it runs)."""
    ended = [a.ended_at for a in attempts if a.ended_at]
    end = max(ended) if job.state.is_terminal() and ended else (time.time() if now is None else now)
    return max(0.0, end - job.created_at)


def account_job(job: Job, attempts: Sequence[Attempt], progress: dict[str, Any] | None = None,
                price: Price | None = None, read_progress: Any = None) -> JobAccount:
    """Account for a job from the ledger; ``progress`` is index 0's, ``read_progress(index)`` reads others."""
    now = time.time()
    by_index: dict[int, dict[str, Any] | None] = {0: progress}
    indexes = sorted({a.array_index for a in attempts} - {0})
    notes = []
    if read_progress is not None and indexes:
        if len(indexes) <= MAX_PROGRESS_READS:
            by_index.update({i: read_progress(i) for i in indexes})
        else:
            notes.append(f"useful time of {len(indexes)} array children not read (over {MAX_PROGRESS_READS})")
    result = account(times_from_ledger(attempts, by_index), price, job_wall_s(job, attempts, now), now)
    result.notes.extend(notes)
    if job.array_size > 1:
        lanes = sum(job_wall_s(job, [a for a in attempts if a.array_index == i], now)
                    for i in sorted({a.array_index for a in attempts}))
        result = replace(result, lanes_wall_s=lanes)
    return result


def format_money(amount: float | None, currency: str | None) -> str:
    """Money for people: ``$0.0123``, ``$12.34``, ``12.34 CHF``; ``-`` when unknown."""
    if amount is None:
        return "-"
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency or "", "")
    text = f"{amount:.2f}" if abs(amount) >= 1 else f"{amount:.4f}"
    return f"{symbol}{text}" if symbol else f"{text} {currency or ''}".strip()


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
