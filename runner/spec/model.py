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

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from runner import contract
from runner.contract import parse_duration

SCHEMES = ("file", "s3", "gs", "az")
OBJECT_SCHEMES = ("s3", "gs", "az")
URI_FORMS = "file:///abs/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?$", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DATA_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET = {
    "s3": re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
    "gs": re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$"),
    "az": re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"),
}
#: Upper bounds: far above any real job, far below what SQLite, YAML or a cloud API chokes on.
MAX_SIZE = 1 << 60                # 1 EiB
MAX_DURATION_S = 366 * 86400.0    # a year
MAX_ITEMS = 4096                  # args, command words, env entries, data folders
MAX_TEXT = 32 * 1024              # one arg, one env value, one path
MAX_COUNT = 1_000_000             # retries, keep, steps


def parse_size(text: str | int) -> int:
    """Parse ``8Gi``, ``512Mi``, ``16GB``, ``1.5G`` or a byte count into bytes.

    ``Ki/Mi/Gi/Ti/Pi`` are powers of 1024; ``K/M/G/T/P`` with or without ``B`` are powers of 1000.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"{text!r} is not a size; use a size such as 8Gi, 512Mi or 16GB")
    m = _SIZE.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a size; use a size such as 8Gi, 512Mi or 16GB")
    unit = (m.group(2) or "B").upper().rstrip("B") or "B"
    power = "BKMGTP".index(unit[0])
    base = 1024 if unit.endswith("I") else 1000
    number = float(m.group(1))
    if not math.isfinite(number) or number * base**power > MAX_SIZE:
        raise ValueError(f"{text!r} is too large; use a size such as 8Gi (at most 1Ei)")
    size = int(number * base**power)
    if size <= 0:
        raise ValueError(f"{text!r} must be more than zero; use a size such as 8Gi")
    return size


def check_uri(uri: str) -> str:
    """Check a checkpoint URI's scheme and shape; return it without a trailing slash."""
    if "://" not in uri:
        fix = f"file://{uri}" if uri.startswith("/") else URI_FORMS
        raise ValueError(f"{uri!r} has no scheme; use {fix}")
    scheme, rest = uri.split("://", 1)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {scheme!r} is not supported; use {URI_FORMS}")
    if any(c in rest for c in "?#") or any(c.isspace() for c in rest):
        raise ValueError(f"{uri!r} has a query, fragment or space; use {URI_FORMS}")
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"{uri!r} is not absolute; use file:///absolute/path (three slashes)")
        path = "/" + rest.strip("/")
        if path == "/" or "//" in path or ".." in path.split("/"):
            raise ValueError(f"{uri!r} is not a usable folder; use file:///absolute/path")
        return f"file://{path}"
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    what = "container" if scheme == "az" else "bucket"
    if not bucket:
        raise ValueError(f"{uri!r} names no {what}; use {scheme}://{what}/prefix")
    if not _BUCKET[scheme].match(bucket):
        raise ValueError(
            f"{what} {bucket!r} is not a valid {scheme} {what} name; use 3-63 lowercase letters, "
            f"digits and hyphens, such as {scheme}://my-{what}/prefix"
        )
    if "//" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"prefix {prefix!r} has an empty or '..' part; use {scheme}://{bucket}/a/b")
    return f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"


def _check_duration(value: str) -> str:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be more than zero; use a duration such as 90s")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than a year; use a duration such as 12h or 30d")
    return value


def _check_size(value: str) -> str:
    parse_size(value)
    if value.strip()[-1:].isdigit():
        raise ValueError(f"{value!r} has no unit; use a size such as {value.strip()}Gi or {value.strip()}Mi")
    return value


def _needs_unit(example: str) -> Any:
    """Return a before-validator that turns a bare YAML number into an error naming the unit."""

    def check(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number; use a string such as 8{example}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown = value if abs(value) < 1e12 else 8
            raise ValueError(f"{value:.6g} has no unit; use a string such as {shown}{example}")
        return value

    return BeforeValidator(check)


def _numbers_to_str(value: Any) -> Any:
    """Turn YAML numbers into strings (``--epochs 2``); leave everything else to validation."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _check_text(value: str, what: str) -> str:
    """Refuse text no process can be given: a NUL byte (execve, environments), or more than MAX_TEXT."""
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte, which no command or environment can carry; remove it")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is {len(value)} characters long, more than {MAX_TEXT}; "
                         "pass large inputs as a file instead")
    return value


#: A positive duration string such as ``90s``; a size string with a unit such as ``8Gi``.
Duration = Annotated[str, _needs_unit("s"), AfterValidator(_check_duration)]
Size = Annotated[str, _needs_unit("Gi"), AfterValidator(_check_size)]


class SpecModel(BaseModel):
    """The base of every spec section: strict types, unknown fields refused, no inf or nan."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Resources(SpecModel):
    """What one attempt needs from its machine."""

    cpus: float = Field(default=2.0, gt=0, le=4096)
    memory: Size = "4Gi"
    gpus: int = Field(default=0, ge=0, le=256)
    gpu_type: str | None = None
    disk: Size | None = None

    @model_validator(mode="after")
    def _gpu_type_needs_gpus(self) -> Resources:
        if self.gpu_type and self.gpus == 0:
            raise _FieldError("gpu_type", f"{self.gpu_type!r} is set but gpus is 0; set gpus: 1 or more")
        return self

    @property
    def memory_bytes(self) -> int:
        """Return the memory in bytes."""
        return parse_size(self.memory)

    @property
    def disk_bytes(self) -> int | None:
        """Return the disk size in bytes, or None when not set."""
        return None if self.disk is None else parse_size(self.disk)


class Checkpoint(SpecModel):
    """Where progress lives and how often it is saved."""

    uri: str | None = None
    every: int | str = "auto"
    keep: int = Field(default=3, ge=1, le=MAX_COUNT)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_uri(value)

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: int | str) -> int | str:
        if isinstance(value, int) or value.isdigit():
            if int(value) < 1:
                raise ValueError(f"{value} steps must be 1 or more; use a step count such as 200")
            if len(str(value)) > 12 or int(value) > 10**12:
                raise ValueError(f"{str(value)[:20]} steps is too large; use a step count such as 200")
            return int(value)
        if value in ("epoch", "auto"):
            return value
        try:
            _check_duration(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not valid; use 'epoch', a step count such as 200, "
                "a duration such as 90s, or 'auto'"
            ) from None
        return value


class Retries(SpecModel):
    """Budgets, counted apart: preemptions are the cloud's doing, failures the job's."""

    preemptions: int = Field(default=20, ge=0, le=MAX_COUNT)
    failures: int = Field(default=2, ge=0, le=MAX_COUNT)


def _iso_date(value: Any) -> Any:
    """Turn a YAML date (``date: 2024-06-01`` unquoted) into its ISO text."""
    import datetime

    return value.isoformat() if isinstance(value, datetime.date) else value


class CostSettings(SpecModel):
    """Price overrides for this job (see docs/prices.md); each field set wins over tables and live prices."""

    prices_file: str | None = None
    on_demand_per_hour: float | None = Field(default=None, gt=0, le=1e6)
    spot_per_hour: float | None = Field(default=None, gt=0, le=1e6)
    currency: str | None = None
    source: str | None = None
    date: Annotated[str | None, BeforeValidator(_iso_date)] = None

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str | None) -> str | None:
        from runner.cost.table import check_currency

        return None if value is None else check_currency(value)

    @field_validator("date")
    @classmethod
    def _check_date(cls, value: str | None) -> str | None:
        from runner.cost.table import check_date

        return None if value is None else check_date(value)


class SimulatePreemption(SpecModel):
    """Preempt attempts on purpose: on a fixed period (``every``), at random (``mean``), and/or when
    spot capacity runs out (``outages``: spot attempts wait while one lasts and are preempted when
    one begins; on-demand attempts never are)."""

    every: Duration | None = None
    mean: Duration | None = None
    outages: str | None = None  # "30s-90s, 5m-8m": spot capacity gone, from job submission
    notice: Duration = "5s"
    mode: Literal["parachute", "bus", "mixed"] = "parachute"
    count: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _one_clock(self) -> SimulatePreemption:
        if self.every is not None and self.mean is not None:
            raise _FieldError("every", "set one of every (a fixed period) or mean (random), not both")
        if self.every is None and self.mean is None and self.outages is None:
            raise _FieldError(
                "every", "set every (a fixed period), mean (random) or outages (spot capacity gone); e.g. every: 20s"
            )
        return self

    @field_validator("outages")
    @classmethod
    def _check_outages(cls, value: str | None) -> str | None:
        if value is not None:
            parse_outages(value)
        return value

    @property
    def outage_spans(self) -> list[tuple[float, float]]:
        """The outages as (start, end) seconds from the job's submission, sorted."""
        return parse_outages(self.outages) if self.outages else []

    @property
    def every_s(self) -> float | None:
        return None if self.every is None else parse_duration(self.every)

    @property
    def mean_s(self) -> float | None:
        return None if self.mean is None else parse_duration(self.mean)

    @property
    def notice_s(self) -> float:
        return parse_duration(self.notice)


class Sync(SpecModel):
    """For images that run ``runner exec``: the folder it syncs and the signal a notice becomes."""

    dir: str
    signal: Literal["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP"] = "SIGTERM"

    @field_validator("dir")
    @classmethod
    def _check_dir(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/") or value.rstrip("/") == "":
            raise ValueError(f"{value!r} is not an absolute folder inside the container; use e.g. /workspace/checkpoints")
        return value.rstrip("/")


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


def parse_outages(text: str) -> list[tuple[float, float]]:
    """Parse ``"30s-90s, 5m-8m"`` (``;`` too, for the CLI) into sorted (start, end) seconds."""
    spans = []
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        start, sep, end = part.partition("-")
        try:
            a, b = parse_duration(start.strip() or "x"), parse_duration(end.strip() or "x")
        except ValueError:
            raise ValueError(f"{part[:40]!r} is not an outage; write start-end durations from submission, "
                             "such as 30s-90s, 5m-8m") from None
        if not sep or not 0 <= a < b <= MAX_DURATION_S:
            raise ValueError(f"{part[:40]!r} must end after it starts; write e.g. 30s-90s")
        spans.append((a, b))
    if not spans or len(spans) > 1000:
        raise ValueError(f"{text[:40]!r} holds no outages (or more than 1000); write e.g. 30s-90s, 5m-8m")
    return sorted(spans)


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


class _FieldError(ValueError):
    """A validator's error about a field below the one being validated (``sub``, dotted)."""

    def __init__(self, sub: str, message: str) -> None:
        super().__init__(message)
        self.sub = sub


