"""The job spec's model: a validated :class:`JobSpec`; every error is one line naming the field and the fix.

    name: cifar-smoke
    image: localhost/runner-cifar:latest
    args: [--data, synthetic, --epochs, "2"]
    resources: {cpus: 2, memory: 4Gi}
    checkpoint: {uri: file:///tmp/spot-runner/checkpoints/cifar-smoke, every: epoch, keep: 3}
    data: {cifar10: ~/datasets/cifar10}

Numbers written in ``args``, ``command`` and ``env`` values become strings; everything else is
strict (``cpus: "2"`` is an error, not a guess). Durations are ``250ms``, ``90s``, ``5m``, ``1.5h``,
``2d``. Every number has an upper bound a real job stays far below, so a typo never reaches the
ledger or a cloud API as a 70-bit integer.

Each backend's own section (``aws:``, ``gcp:``, ``slurm:``, ...) is declared by the backend
itself (its ``settings_model``); :func:`runner.spec.load.job_spec_model` adds them to
:class:`JobSpec` from the registry, so nothing here names a backend.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    field_validator,
    model_validator,
)

from runner import contract
from runner.contract import parse_duration
from runner.spec.fields import (
    _DATA_NAME,
    _ENV_KEY,
    _NAME,
    MAX_DURATION_S,
    MAX_ITEMS,
    OBJECT_SCHEMES,
    Duration,
    SpecModel,
    _check_text,
    _FieldError,
    _numbers_to_str,
    check_uri,
)
from runner.spec.sections import (
    Checkpoint,
    CostSettings,
    Resources,
    Retries,
    SimulatePreemption,
    Sync,
)


class JobSpec(SpecModel):
    """One job: an image, how to run it, what it needs, and where its progress lives.

    The backends' own sections (``local:``, ``aws:``, ...) are added by
    :func:`runner.spec.load.job_spec_model`; read one with :meth:`section`.
    """

    name: str
    image: str
    command: list[str] | None = Field(default=None, max_length=MAX_ITEMS)
    args: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    env: dict[str, str] = Field(default_factory=dict, max_length=MAX_ITEMS)
    data: dict[str, str] = Field(default_factory=dict, max_length=64)
    resources: Resources = Resources()
    spot: bool = True
    checkpoint: Checkpoint = Checkpoint()
    retries: Retries = Retries()
    backend: str = "local"
    cost: CostSettings | None = None
    array: int = Field(default=1, ge=1, le=10000)
    notice: Literal["auto", "aws", "gcp", "azure", "none"] = "auto"
    simulate_preemption: SimulatePreemption | None = None
    timeout: Duration | None = None
    sync: Sync | None = None
    deadline: str | None = None
    budget: float | None = Field(default=None, gt=0, le=1e9)
    policy: Literal["spot-only", "greedy", "uniform-progress", "auto"] | None = None
    work: Duration | None = None

    @field_validator("command", "args", mode="before")
    @classmethod
    def _list_numbers(cls, value: Any) -> Any:
        return [_numbers_to_str(v) for v in value] if isinstance(value, list) else value

    @field_validator("env", mode="before")
    @classmethod
    def _env_numbers(cls, value: Any) -> Any:
        return {k: _numbers_to_str(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value[:80]!r} is not a valid name; use lowercase letters, digits and hyphens, "
                "starting with a letter or digit, at most 63 characters, such as cifar-smoke"
            )
        return value

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value) or "\x00" in value or len(value) > 1024:
            raise ValueError(
                f"{value[:80]!r} is not an image reference; use one such as localhost/runner-cifar:latest"
            )
        return value

    @field_validator("command", "args")
    @classmethod
    def _check_words(cls, value: list[str] | None) -> list[str] | None:
        for i, word in enumerate(value or []):
            try:
                _check_text(word, "this word")
            except ValueError as exc:
                raise _FieldError(str(i), str(exc)) from None
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if key.startswith(contract.RESERVED_PREFIX):
                raise _FieldError(key, "is set by the runner; remove it or use another name")
            if not _ENV_KEY.match(key) or len(key) > 256:
                raise _FieldError(key[:80], "is not a variable name; use letters, digits and underscores")
            try:
                _check_text(text, "the value")
            except ValueError as exc:
                raise _FieldError(key, str(exc)) from None
        return value

    @field_validator("data")
    @classmethod
    def _check_data(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: _check_data_source(name, source) for name, source in value.items()}

    @field_validator("deadline")
    @classmethod
    def _check_deadline(cls, value: str | None) -> str | None:
        if value is not None:
            _deadline_seconds(value)
        return value

    @model_validator(mode="after")
    def _policy_needs_spot(self) -> JobSpec:
        if not self.spot and self.policy not in (None, "spot-only"):
            raise _FieldError("policy", f"{self.policy} chooses between spot and on-demand, but spot: false runs "
                                        "every attempt on demand; remove policy: or set spot: true")
        return self

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        from runner.plugins import backend_names

        names = backend_names()
        if value not in names:
            raise ValueError(f"{value[:40]!r} is not a backend here; use one of {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _fits_backend(self) -> JobSpec:
        """Check what the chosen backend (and every backend section present) requires."""
        from runner.plugins import backend_class, backend_names

        for name in backend_names():
            section = self.section(name)
            if section is not None or name == self.backend:
                problem = backend_class(name).check_spec(self, chosen=name == self.backend)
                if problem is not None:
                    raise _FieldError(*problem)
        return self

    def section(self, name: str) -> BaseModel | None:
        """Return the spec's section for backend ``name`` (``aws:``, ``slurm:``, ...), or None."""
        value = getattr(self, name, None)
        return value if isinstance(value, BaseModel) else None

    @property
    def timeout_s(self) -> float | None:
        """Return the timeout in seconds, or None when not set."""
        return None if self.timeout is None else parse_duration(self.timeout)

    @property
    def capacity_policy(self) -> str:
        """The policy that picks each attempt's capacity: the spec's, else ``auto`` with a deadline or a
        budget, else ``spot-only``; ``on-demand`` when ``spot: false``."""
        if not self.spot:
            return "on-demand"
        if self.policy is not None:
            return self.policy
        return "auto" if self.deadline is not None or self.budget is not None else "spot-only"

    def deadline_at(self, submitted_at: float) -> float | None:
        """The deadline as epoch seconds, for a job submitted at ``submitted_at``; None without one."""
        if self.deadline is None:
            return None
        kind, value = _deadline_seconds(self.deadline)
        return submitted_at + value if kind == "duration" else value

    @property
    def work_s(self) -> float | None:
        """The compute time the spec says the job needs (``work:``), until its progress says."""
        return None if self.work is None else parse_duration(self.work)

    @property
    def threads(self) -> int:
        """CPU threads a task uses by default: the whole CPUs asked for (at least 1)."""
        return max(1, int(self.resources.cpus))

    def local_data(self) -> dict[str, str]:
        """Return the data folders that live on this machine (name -> absolute path)."""
        return {name: src for name, src in self.data.items() if src.startswith("/")}

    def remote_data(self) -> dict[str, str]:
        """Return the data prefixes in object stores (name -> URI), staged by the task itself."""
        return {name: src for name, src in self.data.items() if not src.startswith("/")}

    def checkpoint_uri_for(self, index: int = 0, job_id: str | None = None) -> str:
        """Return the checkpoint URI of one array child (``<uri>/<index>`` when ``array > 1``).

        Without ``checkpoint.uri`` the job keeps its progress under the data folder, in a folder
        named after ``job_id`` (or the spec's name when no job id is given).
        """
        if not 0 <= index < self.array:
            raise ValueError(f"array index {index} is outside 0..{self.array - 1}")
        uri = self.checkpoint.uri
        if uri is None:
            from runner.paths import data_dir

            uri = f"file://{data_dir() / 'checkpoints' / (job_id or self.name)}"
        return f"{uri.rstrip('/')}/{index}" if self.array > 1 else uri

    def container_env(self, job_id: str, attempt: int, checkpoint_uri: str) -> dict[str, str]:
        """Return the attempt's environment: ``env`` with the contract's ``RUNNER_*`` on top."""
        extra = {contract.THREADS: str(self.threads)}
        if self.data:
            extra[contract.DATA_DIR] = contract.CONTAINER_DATA_DIR
            if self.remote_data():
                import json

                extra[contract.DATA_SOURCES] = json.dumps(self.remote_data(), sort_keys=True)
        if self.sync:
            extra.update({contract.SYNC_DIR: self.sync.dir, contract.NOTICE_SIGNAL: self.sync.signal})
        return {**self.env, **contract.attempt_env(
            job_id=job_id, attempt=attempt, checkpoint_uri=checkpoint_uri, notice=self.notice,
            every=self.checkpoint.every, keep=self.checkpoint.keep, extra=extra)}


def _deadline_seconds(text: str) -> tuple[str, float]:
    """Parse a deadline: ("duration", seconds from submission) or ("time", epoch seconds)."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        if not 0 < seconds <= MAX_DURATION_S:
            raise ValueError(f"{text!r} must be more than zero and at most a year; use a duration such as 15h")
        return "duration", seconds
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text[:60]!r} is neither a duration nor a time; write 15h (from submission) or "
                         "2026-12-02T09:00:00Z") from None
    if when.tzinfo is None:
        raise ValueError(f"{text[:60]!r} has no time zone; write it in UTC with a Z, such as 2026-12-02T09:00:00Z")
    return "time", when.timestamp()


def _check_data_source(name: str, source: str) -> str:
    """Check one ``data:`` entry: a folder on this machine (absolute) or an object-store prefix."""
    if not _DATA_NAME.match(str(name)):
        raise _FieldError(str(name)[:80], "is not a data folder name; use lowercase letters, digits, '.', '_' "
                                          "and '-', such as cifar10 (it appears at /data/<name> in the task)")
    _check_text(source, "the source")
    if source.startswith("file://"):
        source = source[len("file://"):]
    if "://" in source:
        scheme = source.split("://", 1)[0]
        if scheme not in OBJECT_SCHEMES:
            raise _FieldError(name, f"scheme {scheme!r} is not supported for data; use a folder such as "
                                    "/srv/datasets/cifar10, or s3://, gs:// or az:// prefix")
        try:
            return check_uri(source)
        except ValueError as exc:
            raise _FieldError(name, str(exc)) from None
    if not source.startswith("/"):
        raise _FieldError(name, f"{source[:80]!r} is not an absolute folder; write /path/to/{name}, ~/{name} or a "
                                "path relative to the spec file")
    parts = [p for p in source.split("/") if p]
    if ".." in parts or not parts:
        raise _FieldError(name, f"{source[:80]!r} is not a usable folder; write /path/to/{name}")
    return "/" + "/".join(parts)
