"""Capacity decisions: spot when it pays, on-demand when a deadline needs it, and availability traces.

- :mod:`runner.capacity.policy`: the policies (``spot-only``, ``greedy``, ``uniform-progress``,
  ``auto``) as one pure function, ``decide(policy, situation) -> "spot" | "on-demand"``;
- :mod:`runner.capacity.trace`: spot availability traces (CSV ``time,available``), loading and converting;
- :mod:`runner.capacity.replay`: a job replayed against a trace from many start offsets under each
  policy, through the real accounting (``runner simulate --trace``).
"""
