"""The local backend's settings and checks: the ``local:`` section, what is checked before a
submit (the image is on the engine, the data folders can be read by the task's user), the
machine a local run is priced as, and how the Docker engine's errors read.

The calls to the engine are in :mod:`runner.backends.local`; a container's options and state in
:mod:`runner.backends.local_container`.
"""

from __future__ import annotations

import docker
from docker.errors import APIError, DockerException, NotFound
from pydantic import Field, field_validator
from requests.exceptions import RequestException

from runner.backends.local_container import check_data_folder, container_user
from runner.cost.table import DEFAULT_REGIONS, PriceError, PriceTable, parse_machine
from runner.errors import (
    BackendError,
    BackendUnavailable,
    SpecError,
    SubmitError,
    one_line,
)
from runner.spec.model import JobSpec, SpecModel

#: What a call to an engine that is down, restarting or unreachable raises.
ENGINE_ERRORS = (DockerException, RequestException, OSError)
#: Engine answers that mean "busy, ask again": throttling, or a proxy in front of a remote engine.
BUSY = frozenset({429, 502, 503, 504})


class LocalSettings(SpecModel):
    """The ``local:`` section; ``price_per_hour`` and ``imitates`` price a run as a cloud machine."""

    price_per_hour: float | None = Field(default=None, gt=0, le=1e6)
    imitates: str | None = None  # [cloud:[region:]]type, e.g. aws:us-east-1:g4dn.xlarge
    network: str | None = None

    @field_validator("imitates")
    @classmethod
    def _check_imitates(cls, value: str | None) -> str | None:
        if value is not None:
            parse_machine(value)
        return value


def check_image_and_data(spec: JobSpec) -> None:
    """The image is on this engine and every ``data:`` folder can be read by the task's user.

    An engine that does not answer is not the spec's fault: the watcher waits for it.
    """
    try:
        client = docker.from_env()
    except ENGINE_ERRORS:
        return
    try:
        image = client.api.inspect_image(spec.image)
    except NotFound:
        raise SpecError(f"field 'image': {spec.image} is not on this machine's Docker engine; build it "
                        f"(make image) or pull it (docker pull {spec.image})") from None
    except ENGINE_ERRORS:
        return
    finally:
        client.close()
    user = container_user(str((image.get("Config") or {}).get("User") or ""))
    for name, folder in spec.local_data().items():
        try:
            check_data_folder(name, folder, user)
        except SubmitError as exc:
            raise SpecError(str(exc)) from None


def imitated_machine(imitates: str | None, table: PriceTable) -> tuple[str, str, str] | None:
    """(cloud, region, type) of the machine ``local.imitates`` names, cloud and region filled in from the table."""
    if not imitates:
        return None
    cloud, region, itype = parse_machine(imitates)
    if cloud is None:
        clouds = sorted({p.cloud for p in table.select(instance_type=itype)})
        if len(clouds) > 1:
            raise PriceError(f"local.imitates {itype!r} is priced on {', '.join(clouds)}; "
                             f"write cloud:region:type, such as {clouds[0]}:{DEFAULT_REGIONS[clouds[0]]}:{itype}")
        if not clouds:
            raise PriceError(f"local.imitates {itype!r} is in no price table; write cloud:region:type and add "
                             "it to a prices file (see docs/prices.md), or set cost.on_demand_per_hour")
        cloud = clouds[0]
    if region is None:
        regions = [p.region for p in table.select(cloud, instance_type=itype)]
        region = DEFAULT_REGIONS[cloud] if DEFAULT_REGIONS[cloud] in regions or not regions else regions[0]
    return cloud, region, itype


def refused(exc: BaseException, text: str) -> BackendError:
    """SubmitError for the engine's refusal; BackendUnavailable (waited out) when it is busy or unreachable."""
    if isinstance(exc, APIError) and exc.status_code not in BUSY:
        return SubmitError(text)
    return BackendUnavailable(text if isinstance(exc, APIError) else unreachable(exc))


def explain(exc: APIError) -> str:
    """The engine's own words for an error answer."""
    return str(exc.explanation or exc)


def engine_error(exc: BaseException, what: str) -> str:
    """Return one line for an engine error: the engine's answer, or that it cannot be reached."""
    if isinstance(exc, APIError):
        return one_line(f"{what}: {explain(exc)}")
    return unreachable(exc)


def unreachable(exc: BaseException) -> str:
    """One line for an engine that cannot be reached, with the fix."""
    return one_line(f"cannot reach the Docker engine ({exc}): start dockerd or set DOCKER_HOST")


__all__ = ["ENGINE_ERRORS", "LocalSettings", "check_image_and_data", "engine_error", "explain", "imitated_machine",
           "refused", "unreachable"]
