"""The container contract's environment, read once into a typed object.

See ``runner.contract`` and docs/contract.md. Every variable has a default so a task also runs by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from runner.contract import (  # noqa: F401 - re-exported for the tasks
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_PREEMPTED,
    EXIT_USAGE,
    NOTICE_CHOICES,
    parse_duration,
)
from runner.errors import ConfigError


@dataclass(frozen=True)
class CheckpointEvery:
    """When to checkpoint: at each epoch end, every N steps, every T seconds, or ``auto``."""

    kind: str  # "epoch" | "steps" | "seconds" | "auto"
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> CheckpointEvery:
        text = str(text).strip()
        if text in ("epoch", "auto"):
            return cls(text)
        if text.isdigit() and int(text) > 0:
            return cls("steps", int(text))
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise ConfigError(
                f"RUNNER_CHECKPOINT_EVERY={text!r} is not valid: use 'epoch', a step count "
                "such as 200, a duration such as 90s, or 'auto'"
            ) from None
        if seconds <= 0:
            raise ConfigError(f"RUNNER_CHECKPOINT_EVERY={text!r} must be positive")
        return cls("seconds", seconds)


def _array_index(env: Mapping[str, str], var: str) -> int:
    """Return this array child's index from the variable the service sets (e.g. AWS's)."""
    value = env.get(var)
    if value is None and var == "AWS_BATCH_JOB_ARRAY_INDEX" and ":" in env.get("AWS_BATCH_JOB_ID", ""):
        value = env["AWS_BATCH_JOB_ID"].rsplit(":", 1)[1]  # moto sets only the child's job id
    if value is None or not value.isdigit():
        raise ConfigError(f"RUNNER_ARRAY_INDEX_VAR names {var}, which is {value!r}, not an array index: "
                          "run this image as an array child or unset RUNNER_ARRAY_INDEX_VAR")
    return int(value)


@dataclass(frozen=True)
class RunContext:
    """What the runner tells one attempt, from the ``RUNNER_*`` environment."""

    job_id: str
    attempt: int
    checkpoint_uri: str
    notice: str
    metadata_url: str | None
    halt_file: str | None
    checkpoint_every: CheckpointEvery
    keep: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RunContext:
        env = os.environ if environ is None else environ
        attempt_text = env.get("RUNNER_ATTEMPT", "1")
        if not attempt_text.isdigit() or int(attempt_text) < 1:
            raise ConfigError(f"RUNNER_ATTEMPT={attempt_text!r} must be a positive integer")
        notice = env.get("RUNNER_NOTICE", "auto").strip().lower()
        if notice not in NOTICE_CHOICES:
            raise ConfigError(
                f"RUNNER_NOTICE={notice!r} is not valid: use one of {', '.join(NOTICE_CHOICES)}"
            )
        keep_text = env.get("RUNNER_CHECKPOINT_KEEP", "3")
        if not keep_text.isdigit() or int(keep_text) < 1:
            raise ConfigError(f"RUNNER_CHECKPOINT_KEEP={keep_text!r} must be an integer >= 1")
        uri = env.get("RUNNER_CHECKPOINT_URI", "file:///checkpoints")
        index_var = env.get("RUNNER_ARRAY_INDEX_VAR")
        if index_var:  # a native array job: one submission, each child reads its index itself
            uri = f"{uri.rstrip('/')}/{_array_index(env, index_var)}"
        return cls(
            job_id=env.get("RUNNER_JOB_ID", "local"),
            attempt=int(attempt_text),
            checkpoint_uri=uri,
            notice=notice,
            metadata_url=env.get("RUNNER_METADATA_URL") or None,
            halt_file=env.get("RUNNER_HALT_FILE", "halt.txt") or None,
            checkpoint_every=CheckpointEvery.parse(env.get("RUNNER_CHECKPOINT_EVERY", "auto")),
            keep=int(keep_text),
        )
