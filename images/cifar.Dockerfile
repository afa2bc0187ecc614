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

WORKDIR /workspace
LABEL org.opencontainers.image.title="runner-cifar" \
      org.opencontainers.image.description="spot-runner task: CIFAR-10 training that resumes from RUNNER_CHECKPOINT_URI" \
      org.spot-runner.task="cifar"
ENTRYPOINT ["python", "-m", "runner.tasks.cifar"]
