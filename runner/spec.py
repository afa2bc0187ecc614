"""Job specs: YAML -> a validated :class:`JobSpec`; every error is one line naming the field and the fix.

    name: cifar-smoke
    image: localhost/runner-cifar:latest
    args: [--data, synthetic, --epochs, "2"]
    resources: {cpus: 2, memory: 4Gi}
    checkpoint: {uri: file:///tmp/spot-runner/checkpoints/cifar-smoke, every: epoch, keep: 3}

Numbers written in ``args``, ``command`` and ``env`` values become strings; everything else is
strict (``cpus: "2"`` is an error, not a guess). Durations are ``250ms``, ``90s``, ``5m``, ``1.5h``.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from runner.errors import SpecError
from runner.task.context import parse_duration  # one duration grammar for specs and containers

BACKENDS = ("local", "aws", "gcp", "azure")
SCHEMES = ("file", "s3", "gs", "az")
URI_FORMS = "file:///abs/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?$", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET = {
    "s3": re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
    "gs": re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$"),
    "az": re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"),
}
#: Settings each cloud backend cannot run without, checked when ``backend`` names that cloud.
REQUIRED_SETTINGS = {"aws": ("job_queue",), "gcp": ("project", "region"), "azure": ("account_url", "pool_id")}


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
    size = int(float(m.group(1)) * base**power)
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
    if parse_duration(value) <= 0:
        raise ValueError(f"{value!r} must be more than zero; use a duration such as 90s")
    return value


def _check_size(value: str) -> str:
    parse_size(value)
    if value.strip()[-1:].isdigit():
        raise ValueError(f"{value!r} has no unit; use a size such as {value.strip()}Gi or {value.strip()}Mi")
    return value


def _needs_unit(example: str) -> Any:
    """Return a before-validator that turns a bare YAML number into an error naming the unit."""

    def check(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"{value} has no unit; use a string such as {value}{example}")
        return value

    return BeforeValidator(check)


def _numbers_to_str(value: Any) -> Any:
    """Turn YAML numbers into strings (``--epochs 2``); leave everything else to validation."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


#: A positive duration string such as ``90s``; a size string with a unit such as ``8Gi``.
Duration = Annotated[str, _needs_unit("s"), AfterValidator(_check_duration)]
Size = Annotated[str, _needs_unit("Gi"), AfterValidator(_check_size)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Resources(_Model):
    """What one attempt needs from its machine."""

    cpus: float = Field(default=2.0, gt=0)
    memory: Size = "4Gi"
    gpus: int = Field(default=0, ge=0)
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


class Checkpoint(_Model):
    """Where progress lives and how often it is saved."""

    uri: str | None = None
    every: int | str = "auto"
    keep: int = Field(default=3, ge=1)

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


class Retries(_Model):
    """Budgets, counted apart: preemptions are the cloud's doing, failures the job's."""

    preemptions: int = Field(default=20, ge=0)
    failures: int = Field(default=2, ge=0)


class AwsSettings(_Model):
    """AWS Batch settings; ``runner init aws`` can create what they name."""

    region: str | None = None
    job_queue: str | None = None
    compute_environment: str | None = None
    instance_types: list[str] = Field(default_factory=list)
    subnets: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    instance_role: str | None = None
    service_role: str | None = None
    max_vcpus: int | None = Field(default=None, ge=1)
    job_role_arn: str | None = None
    log_group: str | None = None


class GcpSettings(_Model):
    """Google Cloud Batch settings."""

    project: str | None = None
    region: str | None = None
    machine_type: str | None = None
    accelerator_type: str | None = None
    accelerator_count: int | None = Field(default=None, ge=0)
    service_account: str | None = None


class AzureImageReference(_Model):
    """A marketplace image for the Batch pool's nodes."""

    publisher: str
    offer: str
    sku: str
    version: str = "latest"


class AzureSettings(_Model):
    """Azure Batch settings."""

    account_url: str | None = None
    pool_id: str | None = None
    vm_size: str | None = None
    node_agent_sku_id: str | None = None
    image_reference: AzureImageReference | None = None
    low_priority_nodes: int | None = Field(default=None, ge=0)
    region: str | None = None  # for prices; default: the region in account_url

    @field_validator("account_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not a URL; use https://<account>.<region>.batch.azure.com")
        return value


class LocalSettings(_Model):
    """Local Docker engine settings; ``price_per_hour`` imitates a cloud instance for the cost model."""

    price_per_hour: float | None = Field(default=None, gt=0)
    imitates: str | None = None  # [cloud:[region:]]type, e.g. aws:us-east-1:g4dn.xlarge
    network: str | None = None

    @field_validator("imitates")
    @classmethod
    def _check_imitates(cls, value: str | None) -> str | None:
        from runner.cost.prices import parse_machine

        if value is not None:
            parse_machine(value)
        return value


def _iso_date(value: Any) -> Any:
    """Turn a YAML date (``date: 2024-06-01`` unquoted) into its ISO text."""
    import datetime

    return value.isoformat() if isinstance(value, datetime.date) else value


class CostSettings(_Model):
    """Price overrides for this job (see docs/prices.md); each field set wins over tables and live prices."""

    prices_file: str | None = None
    on_demand_per_hour: float | None = Field(default=None, gt=0)
    spot_per_hour: float | None = Field(default=None, gt=0)
    currency: str | None = None
    source: str | None = None
    date: Annotated[str | None, BeforeValidator(_iso_date)] = None

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str | None) -> str | None:
        from runner.cost.prices import check_currency

        return None if value is None else check_currency(value)

    @field_validator("date")
    @classmethod
    def _check_date(cls, value: str | None) -> str | None:
        from runner.cost.prices import check_date

        return None if value is None else check_date(value)


class SimulatePreemption(_Model):
    """Preempt attempts on purpose: on a fixed period (``every``) or at random (``mean``)."""

    every: Duration | None = None
    mean: Duration | None = None
    notice: Duration = "5s"
    mode: Literal["parachute", "bus", "mixed"] = "parachute"
    count: int | None = Field(default=None, ge=0)
    seed: int | None = None

    @model_validator(mode="after")
    def _one_clock(self) -> SimulatePreemption:
        if (self.every is None) == (self.mean is None):
            raise _FieldError(
                "every", "set exactly one of every (a fixed period) or mean (random); e.g. every: 20s"
            )
        return self

    @property
    def every_s(self) -> float | None:
        return None if self.every is None else parse_duration(self.every)

    @property
    def mean_s(self) -> float | None:
        return None if self.mean is None else parse_duration(self.mean)

    @property
    def notice_s(self) -> float:
        return parse_duration(self.notice)

    @classmethod
    def parse_cli(cls, text: str) -> SimulatePreemption:
        """Parse the CLI form ``every=20s,notice=5s,mode=mixed,count=3,seed=1``."""
        data: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise SpecError(f"--simulate-preemption: {part!r} is not key=value; use every=20s,notice=5s")
            key, value = key.strip(), value.strip()
            data[key] = int(value) if key in ("count", "seed") and re.fullmatch(r"-?\d+", value) else value
        return _validate(cls, data, "--simulate-preemption")


class Sync(_Model):
    """For images that run ``runner exec``: the folder it syncs and the signal a notice becomes."""

    dir: str
    signal: Literal["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP"] = "SIGTERM"

    @field_validator("dir")
    @classmethod
    def _check_dir(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/") or value.rstrip("/") == "":
            raise ValueError(f"{value!r} is not an absolute folder inside the container; use e.g. /workspace/checkpoints")
        return value.rstrip("/")


class JobSpec(_Model):
    """One job: an image, how to run it, what it needs, and where its progress lives."""

    name: str
    image: str
    command: list[str] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Resources()
    spot: bool = True
    checkpoint: Checkpoint = Checkpoint()
    retries: Retries = Retries()
    backend: Literal["local", "aws", "gcp", "azure"] = "local"
    local: LocalSettings | None = None
    cost: CostSettings | None = None
    aws: AwsSettings | None = None
    gcp: GcpSettings | None = None
    azure: AzureSettings | None = None
    array: int = Field(default=1, ge=1, le=10000)
    notice: Literal["auto", "aws", "gcp", "azure", "none"] = "auto"
    simulate_preemption: SimulatePreemption | None = None
    timeout: Duration | None = None
    sync: Sync | None = None

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
                f"{value!r} is not a valid name; use lowercase letters, digits and hyphens, "
                "starting with a letter or digit, at most 63 characters, such as cifar-smoke"
            )
        return value

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value):
            raise ValueError(
                f"{value!r} is not an image reference; use one such as localhost/runner-cifar:latest"
            )
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith("RUNNER_"):
                raise _FieldError(key, "is set by the runner; remove it or use another name")
            if not _ENV_KEY.match(key):
                raise _FieldError(key, "is not a variable name; use letters, digits and underscores")
        return value

    @model_validator(mode="after")
    def _local_price_names_machine(self) -> JobSpec:
        local, cost = self.local, self.cost
        if local and local.price_per_hour is not None and not local.imitates and not (cost and cost.on_demand_per_hour):
            raise _FieldError("local.imitates", "is needed with local.price_per_hour to know the on-demand price; "
                              "name the machine, such as imitates: aws:us-east-1:g4dn.xlarge")
        return self

    @model_validator(mode="after")
    def _backend_settings(self) -> JobSpec:
        if self.backend == "local":
            return self
        section = getattr(self, self.backend)
        for setting in REQUIRED_SETTINGS[self.backend]:
            if section is None or getattr(section, setting) is None:
                raise _FieldError(
                    f"{self.backend}.{setting}",
                    f"is required with backend {self.backend}; add {setting}: ... under {self.backend}:",
                )
        return self

    @property
    def timeout_s(self) -> float | None:
        """Return the timeout in seconds, or None when not set."""
        return None if self.timeout is None else parse_duration(self.timeout)

    def checkpoint_uri_for(self, index: int = 0, job_id: str | None = None) -> str:
        """Return the checkpoint URI of one array child (``<uri>/<index>`` when ``array > 1``).

        Without ``checkpoint.uri`` the job keeps its progress under the data folder, in a folder
        named after ``job_id`` (or the spec's name when no job id is given).
        """
        if not 0 <= index < self.array:
            raise ValueError(f"array index {index} is outside 0..{self.array - 1}")
        uri = self.checkpoint.uri
        if uri is None:
            from runner.ledger import data_dir

            uri = f"file://{data_dir() / 'checkpoints' / (job_id or self.name)}"
        return f"{uri.rstrip('/')}/{index}" if self.array > 1 else uri

    def container_env(self, job_id: str, attempt: int, checkpoint_uri: str) -> dict[str, str]:
        """Return the attempt's environment: ``env`` with the contract's ``RUNNER_*`` on top."""
        return {
            **self.env,
            "RUNNER_JOB_ID": job_id,
            "RUNNER_ATTEMPT": str(attempt),
            "RUNNER_CHECKPOINT_URI": checkpoint_uri,
            "RUNNER_NOTICE": self.notice,
            "RUNNER_CHECKPOINT_EVERY": str(self.checkpoint.every),
            "RUNNER_CHECKPOINT_KEEP": str(self.checkpoint.keep),
            **({"RUNNER_SYNC_DIR": self.sync.dir, "RUNNER_NOTICE_SIGNAL": self.sync.signal} if self.sync else {}),
        }


class _FieldError(ValueError):
    """A validator's error about a field below the one being validated (``sub``, dotted)."""

    def __init__(self, sub: str, message: str) -> None:
        super().__init__(message)
        self.sub = sub


# ---------------------------------------------------------------------------- loading and errors


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges; later keys win
            continue
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"field {key!r} is written twice", key_node.start_mark
            )
        if isinstance(key, typing.Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read a YAML job spec, apply ``overrides`` (dotted keys allowed), and validate it."""
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{label}: no such file; check the path") from None
    except IsADirectoryError:
        raise SpecError(f"{label}: is a folder; give a job spec file such as jobs/cifar.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{label}: cannot be read ({type(exc).__name__}); check the file") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(_one_line(f"{label}: not valid YAML{where}: {problem}; fix the syntax")) from None
    except RecursionError:
        raise SpecError(f"{label}: is nested too deeply to be a job spec; fix the file") from None
    if data is None:
        raise SpecError(f"{label}: is empty; write a mapping with at least name: and image:")
    if not isinstance(data, dict):
        raise SpecError(
            f"{label}: the top level is a {_kind(data)}; write a mapping with fields such as name: and image:"
        )
    return spec_from_dict(_apply_overrides(data, overrides or {}), label)


def parse_settings(pairs: list[str], flag: str) -> dict[str, Any]:
    """Turn ``["aws.max_vcpus=64", "aws.subnets=[a, b]"]`` into dotted overrides (values read as YAML)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", key.strip()):
            raise SpecError(f"{flag} {pair!r}: write a dotted setting and a value, e.g. {flag} aws.max_vcpus=64")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise SpecError(f"{flag} {pair!r}: the value is not valid YAML; quote it or fix it") from None
    return overrides


def spec_from_dict(data: Any, source: str = "<spec>") -> JobSpec:
    """Validate a mapping into a JobSpec, raising one-line SpecErrors that start with ``source``."""
    return _validate(JobSpec, data, source)


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if child is not None and not isinstance(child, dict):
                break  # leave the wrong value for validation to report
            node[part] = dict(child or {})
            node = node[part]
        else:
            node[leaf] = value
    return data


_M = typing.TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], data: Any, source: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A misspelt field also shows as a missing one: name the misspelling first.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise SpecError(_one_line(f"{source}: {_describe(model, errors[0])}")) from None


_FIXES = {
    "int_type": "expected a whole number, got {got}; write it without quotes or decimals",
    "float_type": "expected a number, got {got}; write it without quotes",
    "finite_number": "{got} is not a finite number; use a number such as 2",
    "bool_type": "expected a boolean, got {got}; write true or false",
    "string_type": "expected text, got {got}; quote it",
    "list_type": "expected a list, got {got}; write it as [a, b]",
    "dict_type": "expected a mapping, got {got}; write it as key: value lines",
    "model_type": "expected a mapping, got {got}; write it as key: value lines",
    "greater_than": "{got} is too small; use a number greater than {gt}",
    "greater_than_equal": "{got} is too small; use a number of {ge} or more",
    "less_than_equal": "{got} is too large; use a number of {le} or less",
    "literal_error": "{got} is not allowed; use one of {expected}",
    "invalid_key": "the key {got} is not text; quote it",
}
_EXAMPLES = {"name": "name: cifar-smoke", "image": "image: localhost/runner-cifar:latest"}


def _describe(model: type[BaseModel], error: Any) -> str:
    loc = tuple(error["loc"])
    if len(loc) >= 3 and loc[-1] == "[key]":  # pydantic's marker for an error in a mapping's key
        loc = loc[:-1]
    field = ".".join(str(p) for p in loc)
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden" and loc:
        valid = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        fix = f"did you mean {close[0]!r}?" if close else "remove it or fix its spelling"
        return f"unknown field {field!r} (valid fields: {', '.join(valid)}); {fix}"
    if kind == "missing":
        example = _EXAMPLES.get(field, f"{loc[-1]}: ...")
        return f"field {field!r}: is required; add {example}"
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, _FieldError):
            return _at(".".join([*map(str, loc), cause.sub]), str(cause))
        return _at(field, str(cause or error["msg"]))
    got = _short(error.get("input"))
    values = {k: _number(v) for k, v in ctx.items()}
    values.update(got=got, msg=error["msg"], expected=str(ctx.get("expected", "")).replace(" or ", ", "))
    try:
        fix = _FIXES.get(kind, "{msg}, got {got}; fix the value").format_map(values)
    except (KeyError, IndexError, ValueError):
        fix = f"{error['msg']}; fix the value"
    return _at(field, fix)


def _at(field: str, text: str) -> str:
    return f"field {field!r}: {text}" if field else text


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Return the field names of the model found at ``loc`` inside ``model``."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = _model_in(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
