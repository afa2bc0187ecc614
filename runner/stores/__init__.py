"""Checkpoint stores by URI scheme, imported lazily so no cloud SDK is needed until used.

| scheme   | module                       | needs                  |
|----------|------------------------------|------------------------|
| file://  | runner.stores.file           | nothing                |
| s3://    | runner.stores.s3             | boto3 (extra ``aws``)  |
| gs://    | runner.stores.gcs            | google-cloud-storage   |
| az://    | runner.stores.azure_blob     | azure-storage-blob     |
"""

from __future__ import annotations

import importlib
from urllib.parse import urlparse

from runner.errors import ConfigError
from runner.stores.base import Store

#: scheme -> "module:Class". A new store is one module plus one line here.
REGISTRY: dict[str, str] = {
    "file": "runner.stores.file:FileStore",
    "s3": "runner.stores.s3:S3Store",
    "gs": "runner.stores.gcs:GCSStore",
    "az": "runner.stores.azure_blob:AzureBlobStore",
}


def open_store(uri: str) -> Store:
    """Return the store for ``uri``; a bad or unsupported URI is a one-line ConfigError."""
    scheme = urlparse(uri).scheme
    target = REGISTRY.get(scheme)
    if target is None:
        raise ConfigError(
            f"checkpoint URI {uri!r} has an unsupported scheme {scheme!r}: "
            f"use one of {', '.join(s + '://' for s in REGISTRY)}"
        )
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"checkpoint URI {uri!r} needs a package that is not installed ({exc.name}): "
            f"install the extra for {scheme}://"
        ) from exc
    store: Store = getattr(module, cls_name)(uri)
    return store


__all__ = ["REGISTRY", "Store", "open_store"]
