# CIFAR-10 task image: a thin layer over the shared base (images/base.Dockerfile).
# Built by scripts/build-images.sh from the repository root (see .dockerignore).
#
# The project goes into /opt/venv without any dependency: the task side needs torch and
# friends, which the base has; the control-plane dependencies (typer, pydantic, docker, ...)
# are not needed inside the container.
ARG BASE=localhost/runner-base:latest
FROM ${BASE}

COPY pyproject.toml README.md /src/
COPY runner/ /src/runner/
RUN pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps \
        --no-build-isolation /src \
    && rm -rf /src

# A non-root user (uid:gid 1000:1000) owns /workspace and runs the task. Numeric, so a runner
# started by root can hand a file:// checkpoint folder to it; /workspace is writable by any uid
# (sticky, like /tmp) for a runner started by another user, which runs the container as itself.
# /data (same mode) holds the job's data folders: mounted read-only on local, or staged there from
# an object store by the task itself (the spec's data:).
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin runner \
    && mkdir -p /workspace /data && chown 1000:1000 /workspace && chmod 1777 /workspace /data
WORKDIR /workspace
USER 1000:1000
LABEL org.opencontainers.image.title="runner-cifar" \
      org.opencontainers.image.description="spot-runner task: CIFAR-10 training that resumes from RUNNER_CHECKPOINT_URI" \
      org.spot-runner.task="cifar"
ENTRYPOINT ["python", "-m", "runner.tasks.cifar"]
