"""Start moto's server with a Docker client that waits as long as a busy engine needs.

moto runs AWS Batch jobs as real containers and starts every child of an array job at once,
each in its own thread. On a small machine a 1,000-child array queues hundreds of container
creations in the engine, and docker-py's default 60 s request timeout then fails children that
were only waiting their turn (the real service would have queued them for capacity instead).
moto has no setting for that timeout, so this launcher raises it before moto creates its client.
Everything else is moto's own server, unchanged: ``python tests/moto_launcher.py -H 0.0.0.0 -p PORT``.
"""

from __future__ import annotations

import functools
import sys

import docker

DOCKER_TIMEOUT_S = 600

docker.from_env = functools.partial(docker.from_env, timeout=DOCKER_TIMEOUT_S)  # type: ignore[assignment]

from moto.server import main  # noqa: E402  (after the client is configured)

if __name__ == "__main__":
    sys.exit(main())
