"""Backends by name, imported lazily so ``runner --help`` works with no cloud SDK installed.

| name   | module                          | runs attempts on                     |
|--------|---------------------------------|--------------------------------------|
| local  | runner.backends.local           | the Docker engine on this machine    |
| aws    | runner.backends.aws_batch       | AWS Batch, spot compute environment  |
| gcp    | runner.backends.gcp_batch       | Google Cloud Batch, SPOT VMs         |
| azure  | runner.backends.azure_batch     | Azure Batch, low-priority nodes      |
"""

from __future__ import annotations

import importlib
from typing import Any

from runner.backends.base import Backend, Submission
from runner.errors import BackendError, SpecError

#: name -> "module:Class". A new backend is one module plus one line here.
REGISTRY: dict[str, str] = {
    "local": "runner.backends.local:LocalBackend",
    "aws": "runner.backends.aws_batch:AwsBatchBackend",
    "gcp": "runner.backends.gcp_batch:GcpBatchBackend",
    "azure": "runner.backends.azure_batch:AzureBatchBackend",
}


def get_backend(name: str, **options: Any) -> Backend:
    """Return an instance of the backend called ``name``."""
    return backend_class(name)(**options)


def backend_class(name: str) -> type[Backend]:
    """Import and return the class of the backend called ``name``."""
    target = REGISTRY.get(name)
    if target is None:
        raise SpecError(f"unknown backend {name!r}: use one of {', '.join(REGISTRY)}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BackendError(f"backend {name!r} is not available in this version") from exc
        raise BackendError(f"backend {name!r} needs the package {exc.name!r}: "
                           f"pip install 'spot-runner[{name}]'") from exc
    cls: type[Backend] = getattr(module, cls_name)
    return cls


__all__ = ["REGISTRY", "Backend", "Submission", "backend_class", "get_backend"]
