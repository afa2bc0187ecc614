"""The backend registry: names -> classes, imported lazily, open to other packages.

| name   | class                                       | runs attempts on                     |
|--------|---------------------------------------------|--------------------------------------|
| local  | runner.backends.local:LocalBackend          | the Docker engine on this machine    |
| aws    | runner.backends.aws_batch:AwsBatchBackend   | AWS Batch, spot compute environment  |
| gcp    | runner.backends.gcp_batch:GcpBatchBackend   | Google Cloud Batch, SPOT VMs         |
| azure  | runner.backends.azure_batch:AzureBatchBackend | Azure Batch, low-priority nodes    |
| slurm  | runner.backends.slurm:SlurmBackend          | a Slurm cluster (here or over SSH)   |

A backend is one module holding one :class:`runner.backends.base.Backend` subclass that declares
everything the rest of the runner needs to know about it (its spec section, checkpoint schemes,
price mapping, notice kind, capacity types). Another package adds one with an entry point in the
``spot_runner.backends`` group, e.g. in its pyproject.toml::

    [project.entry-points."spot_runner.backends"]
    toy = "toy_backend:ToyBackend"

Nothing else in the runner names a backend: the spec's ``backend`` choices and sections, the
CLI's checks and the price lookup all come from here. This module imports no backend until one
is asked for, so ``runner --help`` works without any cloud SDK.
"""

from __future__ import annotations

import functools
import importlib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from runner.errors import BackendError, SpecError

if TYPE_CHECKING:
    from runner.backends.base import Backend

log = logging.getLogger(__name__)

GROUP = "spot_runner.backends"
#: The backends that ship with the runner; others come from the entry-point group.
BUILTIN: dict[str, str] = {
    "local": "runner.backends.local:LocalBackend",
    "aws": "runner.backends.aws_batch:AwsBatchBackend",
    "gcp": "runner.backends.gcp_batch:GcpBatchBackend",
    "azure": "runner.backends.azure_batch:AzureBatchBackend",
    "slurm": "runner.backends.slurm:SlurmBackend",
}


@functools.cache
def targets() -> dict[str, str]:
    """Return every backend's ``module:Class``: the built-in ones, then the entry points."""
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        if ep.name in BUILTIN:
            if ep.value != BUILTIN[ep.name]:
                log.warning("ignoring the entry point %s = %s: %r is a built-in backend", ep.name, ep.value, ep.name)
            continue
        found[ep.name] = ep.value
    return found


def backend_names() -> list[str]:
    """Return the names of every backend this runner can use, built-in first."""
    return list(targets())


@functools.cache
def backend_class(name: str) -> type[Backend]:
    """Import and return the class of the backend called ``name``; one-line errors otherwise."""
    target = targets().get(name)
    if target is None:
        raise SpecError(f"unknown backend {name!r}: use one of {', '.join(targets())}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BackendError(f"backend {name!r} ({target}) is registered but its module is missing; "
                               "reinstall the package that provides it") from exc
        raise BackendError(f"backend {name!r} needs the package {exc.name!r}: "
                           f"pip install 'spot-runner[{name}]'") from exc
    cls = getattr(module, cls_name, None)
    if cls is None or getattr(cls, "name", None) != name:
        raise BackendError(f"backend {name!r} ({target}) is not a backend class named {name!r}; "
                           "fix the entry point")
    return cls  # type: ignore[no-any-return]
