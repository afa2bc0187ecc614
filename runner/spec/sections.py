"""The spec's sections other than the backends': resources, checkpoint, retries, cost, simulate_preemption, sync."""


from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from runner.contract import parse_duration
from runner.spec.fields import (
    MAX_COUNT,
    Duration,
    Size,
    SpecModel,
    _check_duration,
    _FieldError,
    check_uri,
    parse_outages,
    parse_size,
)


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

