"""Fixtures for integration tests that talk to the real Docker engine.

- ``docker_client``: a ``docker`` SDK client. Skips with the reason when the SDK, the engine or a
  required image is missing; with ``RUNNER_REQUIRE_DOCKER=1`` (CI) it fails instead.
- ``docker_containers``: start containers that carry this session's label and are removed
  (forcibly, running or not) when the test ends, whether it passed or failed.
- ``remove_labelled(client, labels)``: the cleanup itself, usable anywhere.

Every container a test creates must carry ``TEST_LABEL``; its value is unique to the pytest
process, so concurrent sessions never remove each other's containers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: The label on every container the tests create; the value names the pytest session.
TEST_LABEL = "org.spot-runner.test-session"
#: A second label that names the test, so one test's cleanup leaves the others' alone.
TEST_ID_LABEL = "org.spot-runner.test-id"
SESSION_ID = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
#: Images the integration tests run. ``RUNNER_TEST_IMAGES`` (comma-separated) overrides it.
REQUIRED_IMAGES = tuple(
    i.strip() for i in os.environ.get("RUNNER_TEST_IMAGES", "localhost/runner-cifar:latest").split(",")
    if i.strip())
CIFAR_IMAGE = "localhost/runner-cifar:latest"


def _unavailable(reason: str) -> None:
    """Skip the test for ``reason``, or fail it when the environment demands Docker."""
    if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
        pytest.fail(f"RUNNER_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def remove_labelled(client: Any, labels: dict[str, str]) -> list[str]:
    """Remove every container carrying all ``labels`` (running ones too); return their names."""
    import docker

    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    removed = []
    try:
        found = client.containers.list(all=True, filters=filters)
    except docker.errors.APIError:
        return removed
    for container in found:
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # e.g. removal already in progress
            if "in progress" not in str(exc):
                raise
    return removed


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """Return a client for the local engine with the required images present."""
    try:
        import docker
    except ImportError:
        docker = None
    if docker is None:
        _unavailable("the docker Python package is not installed (pip install 'docker>=7')")
    reason = None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        reason = (f"no Docker engine is reachable ({type(exc).__name__}: {str(exc)[:160]}); "
                  "start one with scripts/ensure-docker.sh")
    if reason:
        _unavailable(reason)
    missing = []
    for image in REQUIRED_IMAGES:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        _unavailable(f"image(s) {', '.join(missing)} missing: build them with scripts/build-images.sh "
                     "(no registry is needed)")
    try:
        yield client
    finally:
        remove_labelled(client, {TEST_LABEL: SESSION_ID})
        client.close()


@pytest.fixture
def docker_containers(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """Return ``start(image, command, **run_kwargs)``: a detached, labelled container.

    Every container started through it is removed when the test ends, even on failure.
    """
    test_id = uuid.uuid4().hex[:12]
    labels = {TEST_LABEL: SESSION_ID, TEST_ID_LABEL: test_id}

    def start(image: str, command: list[str] | str | None = None, **kwargs: Any) -> Any:
        kwargs["labels"] = {**kwargs.get("labels", {}), **labels}
        kwargs.setdefault("detach", True)
        return docker_client.containers.run(image, command, **kwargs)

    try:
        yield start
    finally:
        remove_labelled(docker_client, labels)


__all__ = ["CIFAR_IMAGE", "REQUIRED_IMAGES", "SESSION_ID", "TEST_ID_LABEL", "TEST_LABEL",
           "remove_labelled"]
