# The control plane in a container: the `runner` CLI, watcher and dashboard (`runner ui`), no torch
# (about 415 MB, of which matplotlib and numpy for `runner report` are 170 MB).
# `docker compose up` runs it with the Docker socket mounted so it can start task containers
# (siblings on the host's engine) and with the ledger on a volume.
#
# Build context: a folder with the project (pyproject.toml, README.md, runner/ with the dashboard's
# front-end assets in runner/ui/static/vendor from `make ui-assets`) and, optionally,
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
            --no-index --find-links /ctx/wheelhouse "/ctx[report,ui]"; \
    else \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "/ctx[report,ui]"; \
    fi; \
    /opt/venv/bin/runner --help >/dev/null; \
    /opt/venv/bin/python -c "import matplotlib"; \
    /opt/venv/bin/python -c "import runner.ui; runner.ui.check_ready()"

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
# The default command is the watcher service: every unfinished job in the ledger, until SIGTERM
# (leases released, exit 0), with GET /healthz on 127.0.0.1:$RUNNER_WATCH_HEALTH_PORT.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RUNNER_HOME=/var/lib/spot-runner \
    RUNNER_WATCH_HEALTH_PORT=8765
LABEL org.opencontainers.image.title="runner-control" \
      org.opencontainers.image.description="spot-runner control plane: runner submit/status/watch; mount the Docker socket for the local backend"
# The ledger outlives the container: mount a named volume or a host folder here (for the local
# backend, a host folder at the same path on both sides, with RUNNER_HOME pointing at it).
VOLUME ["/var/lib/spot-runner"]
# Unhealthy when the watcher's last pass is stale (503) or nothing answers; an empty
# RUNNER_WATCH_HEALTH_PORT (a container running `runner submit`/`status`) skips the check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request as u; p = os.environ.get('RUNNER_WATCH_HEALTH_PORT'); p and u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4); sys.exit(0)"]
ENTRYPOINT ["runner"]
CMD ["watch"]
