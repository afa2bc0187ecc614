"""Backends: where attempts run. The registry is :mod:`runner.plugins`; the interface is :mod:`.base`."""

from __future__ import annotations

from typing import Any

from runner.backends.base import Backend, Submission
from runner.plugins import backend_class, backend_names


def get_backend(name: str, **options: Any) -> Backend:
    """Return an instance of the backend called ``name``."""
    return backend_class(name)(**options)


__all__ = ["Backend", "Submission", "backend_class", "backend_names", "get_backend"]
