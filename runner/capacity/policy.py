"""Spot or on-demand, now: the capacity policies as one pure function of a job's situation.

    decide("auto", Situation(now=t, deadline=t0 + 15 * 3600, work_s=36000, done_s=12000,
                             current="spot", pending_s=1800, restart_s=210, loss_s=1830))

The watcher asks when it starts an attempt (its capacity), while a spot attempt is pending (it is
cancelled and replaced by an on-demand one when the answer is ``on-demand``) and while an
on-demand attempt runs (asked to checkpoint and stop, the next attempt on spot, when the answer
is ``spot``). ``runner simulate --trace`` asks the same function (:mod:`runner.capacity.replay`).

The model. Slack is what is left of the deadline after the work left on on-demand:
``deadline - now - restart_s - left * (1 + stall_ratio)`` for an attempt started now. A spot
attempt that gets a machine can cost at most ``restart_s + loss_s`` of slack before the next
attempt starts (its startup and resubmit delay, the work since its last commit when a preemption
comes without notice, the checkpoint in progress); while it runs, committed work keeps pace with
time, so its slack does not drain. Spot is therefore safe while ``slack - tick_s > restart_s +
loss_s``: whatever happens to that attempt before decide() is asked again, on-demand can still
finish in time. Every deadline policy keeps to that bound, so none misses a deadline that
on-demand alone could meet (and none ever leaves a running spot attempt: it stays until preempted).

- ``spot-only``: always spot.
- ``greedy`` (Wu et al., "Can't Be Late: Optimizing Spot Instance Savings under Deadlines", NSDI
  2024, the greedy baseline): spot while it is safe, waiting for capacity as long as it is; on-demand
  at the last safe moment, and stay there until the end.
- ``uniform-progress`` (the same paper's policy): the expected progress is a straight line from
  submission (``submitted_at``) to the deadline. (1) Idle or pending and behind the line: on-demand;
  (2) spot whenever it is there, even when behind, kept until preempted; (3) on on-demand, stay
  until progress is ahead of the line ``2 * restart_s`` later (hysteresis), then back to spot when it
  is there; (4) safety net: on-demand until the end once spot is no longer safe. The paper's
  restart overhead ``d`` is ``restart_s`` here; its safety net ``2d`` is ``restart_s + loss_s``.
- ``auto`` (ours): greedy's waiting, but not down to the last safe moment. While spot is missing it
  waits only while its slack is above a floor (what starting on-demand and coming back costs: the
  on-demand startup, its last checkpoint, the resubmit delay, a new spot start) plus a reserve
  (half the initial room, at most 15% of the work, shrinking linearly to 0 at the deadline), then
  goes on-demand. On on-demand it goes back to spot as soon as capacity is known to be there and the
  spot attempt after the stop is safe (uniform-progress waits until it is ahead of its line); when
  availability is unknown (``spot_available=None``), it tries spot whenever its slack is enough for
  that attempt to wait for a machine a while (the reserve shrinking frees that slack). The
  reserve is what lets it come back after later preemptions, where greedy pays on-demand to the
  end; being smaller than uniform-progress's line, it buys on-demand less often early on. A spot
  attempt starts whenever spot is there and safe, as greedy's does.

Decisions are stable: every switch has a threshold on slack (or on the uniform-progress line)
with a gap on the way back, so calls a few seconds apart give the same answer unless capacity came
or went. Only policies that switch back (``uniform-progress``, ``auto``) ever answer ``spot`` for
a running on-demand attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runner.errors import SpecError

POLICIES = ("spot-only", "greedy", "uniform-progress", "auto")
SPOT = "spot"
ON_DEMAND = "on-demand"
CAPACITIES = (SPOT, ON_DEMAND)
#: The policies that may move a running on-demand attempt back to spot (the others never answer
#: ``spot`` for one, so the watcher need not ask them while on-demand runs).
RETURNS_TO_SPOT = frozenset({"uniform-progress", "auto"})
#: auto's reserve: this share of the initial room (slack beyond its floor), at most this share of the
#: work, shrinking linearly to 0 at the deadline. Chosen on the shipped traces (docs/deadlines.md):
#: any share from 0.4 to 0.6 met the goal there; without a cap it overspends on loose deadlines.
RESERVE_SHARE = 0.5
RESERVE_CAP = 0.15


@dataclass(frozen=True)
class Situation:
    """What a capacity decision needs to know about a job, on one clock (seconds)."""

    now: float                 # the simulator's trace time, the watcher's time.time()
    deadline: float | None     # same clock; None: no deadline (every policy then behaves as spot-only)
    work_s: float              # compute seconds the whole job needs
    done_s: float              # compute seconds already committed (checkpointed)
    current: str | None        # capacity of the attempt now pending or running: "spot", "on-demand", or None
    pending_s: float = 0.0     # how long the current attempt has waited for a machine (0 when running or none)
    restart_s: float = 0.0     # overhead of one (re)start: resubmit delay plus startup to the first step
    spot_available: bool | None = None   # known availability (the simulator knows; the watcher: None)
    submitted_at: float | None = None    # when the job was submitted: the uniform-progress line starts there
    loss_s: float = 0.0        # the most progress a preemption can cost: checkpoint interval + checkpoint cost
    stall_ratio: float = 0.0   # checkpoint stall per second of work (checkpoint cost / interval)
    tick_s: float = 0.0        # how long until decide() is asked again
    switch_s: float | None = None  # on-demand -> spot: its last checkpoint + resubmit delay (None: restart_s + loss_s)

    @property
    def left_s(self) -> float:
        """Compute seconds still to do."""
        return max(0.0, self.work_s - self.done_s)

    @property
    def running(self) -> bool:
        """True when the current attempt has a machine (it is not waiting for one)."""
        return self.current is not None and self.pending_s <= 0.0


def safe_slack(s: Situation) -> float:
    """Seconds to spare before on-demand alone would miss the deadline (``inf`` without a deadline).

    On-demand from now needs the work left, its checkpoint stalls, and a (re)start unless an
    on-demand attempt already runs. Negative: on-demand alone can no longer make it.
    """
    if s.deadline is None:
        return math.inf
    restart = 0.0 if s.current == ON_DEMAND and s.running else s.restart_s
    return s.deadline - s.now - restart - s.left_s * (1.0 + s.stall_ratio)


def decide(policy: str, s: Situation) -> str:
    """What the job should be on now: ``"spot"`` or ``"on-demand"``."""
    rule = _RULES.get(policy)
    if rule is None:
        raise SpecError(f"capacity policy {policy!r} is not one of {', '.join(POLICIES)}; pick one of those")
    if s.current not in (None, SPOT, ON_DEMAND):
        raise SpecError(f"capacity {s.current!r} is not one of {', '.join(CAPACITIES)}")
    if s.deadline is None:
        return SPOT  # no deadline: every policy is spot-only
    if s.left_s <= 0.0:
        return SPOT if s.current is None else s.current  # nothing left to hurry: stay as it is
    return rule(s)


def describe(policy: str) -> str:
    """One line about a policy, for tables and help."""
    return _DESCRIPTIONS[policy]


# ----------------------------------------------------------------------------- the rules


def _fresh_slack(s: Situation) -> float:
    """Slack if an attempt were started now (restart included, whatever runs now)."""
    assert s.deadline is not None
    return s.deadline - s.now - s.restart_s - s.left_s * (1.0 + s.stall_ratio)


def _margin(s: Situation) -> float:
    """The most slack one spot attempt can cost: its (re)start and the work a preemption loses."""
    return s.restart_s + s.loss_s


def _spot_is_safe(s: Situation) -> bool:
    """A spot attempt started (or getting a machine) before the next call leaves on-demand in time."""
    return _fresh_slack(s) - s.tick_s > _margin(s)


def _back_threshold(s: Situation) -> float:
    """Slack a running on-demand attempt needs to stop and leave the next spot attempt safe."""
    switch = s.switch_s if s.switch_s is not None else _margin(s)
    return _margin(s) + s.tick_s + switch


def _known_unavailable(s: Situation) -> bool:
    """Spot is known to be missing: the simulator says so, or our own spot attempt is pending."""
    if s.spot_available is not None:
        return not s.spot_available
    return s.current == SPOT and s.pending_s > 0.0


def _spot_only(s: Situation) -> str:
    return SPOT


def _greedy(s: Situation) -> str:
    if s.current == SPOT and s.running:
        return SPOT  # kept until preempted: it was safe when it started and stays so
    if s.current == ON_DEMAND:
        return ON_DEMAND  # switched for good
    return SPOT if _spot_is_safe(s) else ON_DEMAND


def _expected(s: Situation, at: float) -> float:
    """The uniform-progress line: the work that should be committed at time ``at``."""
    assert s.deadline is not None and s.submitted_at is not None
    span = s.deadline - s.submitted_at
    if span <= 0:
        return s.work_s
    return s.work_s * min(1.0, max(0.0, (at - s.submitted_at) / span))


def _uniform_progress(s: Situation) -> str:
    if s.current == SPOT and s.running:
        return SPOT  # rule 2: stay on spot until preempted
    if not _spot_is_safe(s):
        return ON_DEMAND  # rule 4, the safety net
    if s.submitted_at is None:
        return _greedy(s)  # no line without the submission time
    if s.current == ON_DEMAND:  # rule 3: hysteresis
        ahead = s.done_s >= _expected(s, s.now + 2.0 * s.restart_s)
        if ahead and s.spot_available is not False and _fresh_slack(s) >= _back_threshold(s):
            return SPOT
        return ON_DEMAND
    if _known_unavailable(s) and s.done_s < _expected(s, s.now):
        return ON_DEMAND  # rule 1: idle and behind
    return SPOT  # rule 2: spot when it is there (or may be), and waiting for it while ahead


def _reserve(s: Situation) -> float:
    """Slack auto keeps for later spot attempts: part of the initial room, shrinking to 0 at the deadline."""
    if s.submitted_at is None or s.deadline is None or s.deadline <= s.submitted_at:
        return 0.0
    initial = s.deadline - s.submitted_at - s.restart_s - s.work_s * (1.0 + s.stall_ratio)
    room = max(0.0, initial - _leave_floor(s))
    share = max(0.0, min(1.0, (s.deadline - s.now) / (s.deadline - s.submitted_at)))
    return min(RESERVE_SHARE * room, RESERVE_CAP * s.work_s) * share


def _leave_floor(s: Situation) -> float:
    """The least slack auto waits for spot with: enough to start on-demand and still come back."""
    return _back_threshold(s) + s.restart_s + 2.0 * s.tick_s


def _auto(s: Situation) -> str:
    if s.current == SPOT and s.running:
        return SPOT
    fresh = _fresh_slack(s)
    leave = _leave_floor(s) + _reserve(s)
    if s.current == ON_DEMAND:
        if s.spot_available is not None:
            # back to spot as soon as it is known to be there, if the spot attempt after the stop is safe
            return SPOT if s.spot_available and fresh >= _back_threshold(s) else ON_DEMAND
        # availability unknown: try spot whenever the slack lets that attempt wait for a machine a while
        switch = s.switch_s if s.switch_s is not None else _margin(s)
        return SPOT if fresh - s.tick_s - switch > leave else ON_DEMAND
    if s.spot_available is True or (s.spot_available is None and s.current is None):
        return SPOT if _spot_is_safe(s) else ON_DEMAND  # a machine now (or maybe): as greedy
    # waiting for capacity: only while the slack is above the floor plus the reserve
    return SPOT if fresh - s.tick_s > leave else ON_DEMAND


_RULES = {"spot-only": _spot_only, "greedy": _greedy, "uniform-progress": _uniform_progress, "auto": _auto}
_DESCRIPTIONS = {
    "spot-only": "spot always; waits for capacity however long it takes",
    "greedy": "spot while safe; on-demand at the last safe moment, to the end",
    "uniform-progress": "on-demand while behind a straight line to the deadline and spot is gone",
    "auto": "waits for spot while slack is above a shrinking reserve; returns to spot when it can",
}
