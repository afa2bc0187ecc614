# The control plane in a container: the `runner` CLI and watcher, no torch (about 250 MB).
# `docker compose up` runs it with the Docker socket mounted so it can start task containers
# (siblings on the host's engine) and with the ledger on a volume.
#
# Build context: a folder with the project (pyproject.toml, README.md, runner/) and, optionally,
# wheelhouse/ (scripts/build-images.sh makes it: offline). Without a wheelhouse the build
# installs from the package index.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
LABEL org.spot-runner.stage=build
COPY . /ctx/
RUN set -eu; \
    python3 -m venv /opt/venv; \
    if ls /ctx/wheelhouse/*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
            --no-index --find-links /ctx/wheelhouse /ctx; \
    else \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check /ctx; \
    fi; \
    /opt/venv/bin/runner --help >/dev/null

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RUNNER_HOME=/var/lib/spot-runner
LABEL org.opencontainers.image.title="runner-control" \
      org.opencontainers.image.description="spot-runner control plane: runner submit/status/watch; mount the Docker socket for the local backend"
ENTRYPOINT ["runner"]
CMD ["watch"]
