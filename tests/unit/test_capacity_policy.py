"""Capacity policies from tables of situations: no deadline, late, zero slack, pending spot, hysteresis, safety."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest

from runner.capacity.policy import (
    ON_DEMAND,
    POLICIES,
    RETURNS_TO_SPOT,
    SPOT,
    Situation,
    decide,
    safe_slack,
)
from runner.errors import SpecError

H = 3600.0
T0 = 1_000_000.0  # submission, on the watcher's clock
DEADLINE_POLICIES = ("greedy", "uniform-progress", "auto")


def sit(**kw) -> Situation:
    """A 10 h job due 15 h after T0; restart 150 s, a preemption loses up to 900 s, asked every 60 s."""
    base = {"now": T0, "deadline": T0 + 15 * H, "work_s": 10 * H, "done_s": 0.0, "current": None,
            "restart_s": 150.0, "loss_s": 900.0, "tick_s": 60.0, "submitted_at": T0, "switch_s": 50.0}
    base.update(kw)
    return Situation(**base)


def at_slack(slack: float, **kw) -> Situation:
    """A situation whose slack for an attempt started now (restart included) is ``slack``."""
    s = sit(**kw)
    return replace(s, now=s.deadline - s.restart_s - s.left_s * (1 + s.stall_ratio) - slack)


def test_safe_slack_counts_the_restart_unless_on_demand_runs():
    s = sit(now=T0 + H, done_s=2 * H, stall_ratio=0.02)
    expected = 14 * H - 150.0 - 8 * H * 1.02
    assert safe_slack(s) == pytest.approx(expected)
    assert safe_slack(replace(s, current=SPOT, pending_s=30.0)) == pytest.approx(expected)
    assert safe_slack(replace(s, current=ON_DEMAND)) == pytest.approx(expected + 150.0)  # running: no restart
    assert safe_slack(replace(s, current=ON_DEMAND, pending_s=10.0)) == pytest.approx(expected)
    assert safe_slack(replace(s, deadline=None)) == math.inf
    assert safe_slack(replace(s, now=s.deadline + 60)) < 0


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("current,pending", [(None, 0.0), (SPOT, 600.0), (SPOT, 0.0), (ON_DEMAND, 0.0)])
def test_no_deadline_is_spot_only(policy, current, pending):
    assert decide(policy, sit(deadline=None, current=current, pending_s=pending, spot_available=False)) == SPOT


@pytest.mark.parametrize("policy", DEADLINE_POLICIES)
@pytest.mark.parametrize("s", [
    sit(now=T0 + 16 * H),                                          # past the deadline
    sit(now=T0 + 6 * H, done_s=H),                                 # on-demand alone can no longer make it
    at_slack(0.0),                                                 # slack exactly zero
    at_slack(0.0, current=SPOT, pending_s=3 * H, spot_available=False),
    at_slack(150 + 900 + 60, spot_available=True),                 # exactly the spot margin: not more
    at_slack(-5.0, current=ON_DEMAND),
], ids=["past", "late", "zero", "zero-pending", "at-margin", "late-on-demand"])
def test_late_or_no_slack_means_on_demand(policy, s):
    assert decide(policy, s) == ON_DEMAND
    assert decide("spot-only", s) == SPOT  # for contrast: spot-only never moves


@pytest.mark.parametrize("policy", POLICIES)
def test_a_running_spot_attempt_is_kept_until_preempted(policy):
    assert decide(policy, at_slack(10.0, current=SPOT, pending_s=0.0)) == SPOT


@pytest.mark.parametrize("policy", DEADLINE_POLICIES)
def test_plenty_of_slack_and_spot_there_means_spot(policy):
    assert decide(policy, at_slack(4 * H, spot_available=True)) == SPOT
    assert decide(policy, at_slack(4 * H)) == SPOT  # availability unknown at a start: try spot


@pytest.mark.parametrize("policy", DEADLINE_POLICIES)
def test_a_pending_spot_attempt_switches_once_as_the_wait_eats_the_slack(policy):
    """Ask every 5 s while a spot attempt waits; the answer flips to on-demand once and stays."""
    answers = []
    current = SPOT
    for step in range(0, int(5 * H), 5):
        s = sit(now=T0 + step, current=current, pending_s=step if current == SPOT else 0.0,
                spot_available=False if current == SPOT else None)
        answer = decide(policy, s)
        answers.append((step, answer))
        if answer != current:
            current = answer
    flips = [step for (step, a), (_, b) in itertools.pairwise(answers) if a != b]
    assert len(flips) == 1, flips
    switched_at = flips[0] + 5
    # never later than the last safe moment: slack - tick > restart + loss while it waited
    last_safe = 15 * H - 150 - 10 * H - (150 + 900) - 60
    assert switched_at <= last_safe + 5
    if policy == "greedy":
        assert switched_at >= last_safe - 5  # greedy waits exactly that long
    if policy == "uniform-progress":
        assert switched_at <= 60  # behind the line at once: nothing done yet


def test_greedy_and_spot_only_never_leave_on_demand():
    assert RETURNS_TO_SPOT == {"uniform-progress", "auto"}
    for policy in set(POLICIES) - RETURNS_TO_SPOT:
        for slack, available in itertools.product((0.0, H, 20 * H), (True, False, None)):
            s = at_slack(slack, current=ON_DEMAND, spot_available=available)
            assert decide(policy, s) == (SPOT if policy == "spot-only" else ON_DEMAND)


def test_uniform_progress_rules():
    up = "uniform-progress"
    behind = sit(now=T0 + 5 * H, done_s=2 * H)     # the line says 10 * 5/15 = 3.33 h by now
    ahead = sit(now=T0 + 5 * H, done_s=4 * H)
    assert decide(up, replace(behind, spot_available=False)) == ON_DEMAND   # 1: idle and behind
    assert decide(up, replace(behind, current=SPOT, pending_s=300.0)) == ON_DEMAND  # pending: spot is missing
    assert decide(up, replace(behind, spot_available=True)) == SPOT         # 2: taking risks
    assert decide(up, replace(ahead, spot_available=False)) == SPOT         # ahead: wait for spot
    # 3: hysteresis: on on-demand, stay until ahead of the line 2 * restart later
    line_now = 10 * H * 5 / 15
    just_ahead = replace(behind, done_s=line_now + 1.0, current=ON_DEMAND, spot_available=True)
    assert decide(up, just_ahead) == ON_DEMAND
    well_ahead = replace(just_ahead, done_s=line_now + 10 * H * 300 / (15 * H) + 1.0)
    assert decide(up, well_ahead) == SPOT
    assert decide(up, replace(well_ahead, spot_available=False)) == ON_DEMAND
    # without the submission time there is no line: it decides as greedy
    no_line = replace(behind, submitted_at=None, spot_available=False)
    assert decide(up, no_line) == decide("greedy", no_line) == SPOT


def test_auto_waits_above_its_reserve_and_returns_to_spot_when_it_is_back():
    # early on, a big slack: wait for spot
    assert decide("auto", sit(now=T0 + 600, current=SPOT, pending_s=600.0, spot_available=False)) == SPOT
    # the reserve shrinks towards the deadline, so auto goes on demand before greedy does but after uniform-progress
    switch = {}
    for policy in DEADLINE_POLICIES:
        switch[policy] = next(step for step in range(0, int(5 * H), 60)
                              if decide(policy, sit(now=T0 + step, current=SPOT, pending_s=step + 1.0,
                                                    spot_available=False)) == ON_DEMAND)
    assert switch["uniform-progress"] < switch["auto"] < switch["greedy"], switch
    # on on-demand: back to spot when it is known to be there and the next spot attempt stays safe
    back = 150 + 900 + 60 + 50
    assert decide("auto", at_slack(back + 1.0, current=ON_DEMAND, spot_available=True)) == SPOT
    assert decide("auto", at_slack(back - 1.0, current=ON_DEMAND, spot_available=True)) == ON_DEMAND
    assert decide("auto", at_slack(3 * H, current=ON_DEMAND, spot_available=False)) == ON_DEMAND
    # availability unknown: it tries spot only when that attempt could wait for a machine a while
    # (without the submission time auto keeps no reserve: the threshold is its floor)
    floor = back + 150 + 2 * 60
    assert decide("auto", at_slack(floor + 60 + 50 + 60, current=ON_DEMAND, submitted_at=None)) == SPOT
    assert decide("auto", at_slack(floor + 60 + 50 - 1, current=ON_DEMAND, submitted_at=None)) == ON_DEMAND
    # ... and the spot attempt it starts then waits for a machine, rather than flapping back at once
    assert decide("auto", at_slack(floor + 60 + 60, current=SPOT, pending_s=5.0, submitted_at=None)) == SPOT
    assert decide("auto", at_slack(floor + 60, current=SPOT, pending_s=5.0, submitted_at=None)) == ON_DEMAND


@pytest.mark.parametrize("policy", sorted(RETURNS_TO_SPOT))
def test_calls_seconds_apart_do_not_flap(policy):
    """The watcher follows every answer (the answer becomes the attempt's capacity); with availability
    fixed, calls 5 s apart around each threshold change course at most once."""
    for start_slack, available in itertools.product((1200.0, 1300.0, 2400.0, 3 * H), (True, False, None)):
        s = at_slack(start_slack, current=ON_DEMAND, spot_available=available, done_s=6 * H)
        current, changes = ON_DEMAND, 0
        for k in range(120):
            answer = decide(policy, replace(s, now=s.now + 5 * k, current=current,
                                            pending_s=(5 * k + 1.0) if current == SPOT and available is not True else 0.0))
            if answer != current:
                changes += 1
                current = answer
        assert changes <= 1, (policy, start_slack, available)


def test_a_deadline_policy_never_chooses_spot_when_it_is_not_safe():
    """Over random situations: whenever a deadline policy starts or keeps waiting for spot, the slack
    covers the worst a spot attempt can cost (restart + loss) until the next call."""
    rng = random.Random(7)
    for _ in range(4000):
        s = sit(now=T0 + rng.uniform(0, 16 * H), done_s=rng.uniform(0, 10 * H),
                current=rng.choice((None, SPOT, ON_DEMAND)), restart_s=rng.uniform(0, 900),
                loss_s=rng.uniform(0, 3600), tick_s=rng.uniform(0, 300), stall_ratio=rng.uniform(0, 0.1),
                spot_available=rng.choice((True, False, None)), switch_s=rng.choice((None, rng.uniform(0, 300))))
        if s.current == SPOT:
            s = replace(s, pending_s=rng.uniform(1.0, 3 * H))  # a running spot attempt is never re-decided
        for policy in DEADLINE_POLICIES:
            if decide(policy, s) == SPOT:
                fresh = s.deadline - s.now - s.restart_s - s.left_s * (1 + s.stall_ratio)
                assert fresh - s.tick_s > s.restart_s + s.loss_s, (policy, s)


def test_bad_input_is_one_line():
    with pytest.raises(SpecError, match="capacity policy 'cheapest' is not one of spot-only, greedy"):
        decide("cheapest", sit())
    with pytest.raises(SpecError, match="capacity 'spot-ish' is not one of spot, on-demand"):
        decide("auto", sit(current="spot-ish"))
