# The shared base of every task image: Python 3.11 and a virtual environment at /opt/venv with
# torch, torchvision, numpy and pillow (the list is images/base-requirements.txt).
#
# Build context: a small folder holding base-requirements.txt and, optionally, wheelhouse/.
#   - offline (this repository's way): scripts/build-images.sh fills .cache/wheelhouse with
#     `pip download` on the host and builds from a context of just this file, the
#     requirements and the wheelhouse, on top of BASE_IMAGE=localhost/py311-base:bookworm
#     (made with debootstrap + docker import);
#   - with a registry: `docker build -f images/base.Dockerfile -t localhost/runner-base:latest images/`
#     installs from the package index on top of the default python:3.11-slim.
#
# The wheels are only in the build stage: the final stage copies /opt/venv alone, so the
# image does not carry a second copy of torch in a layer of wheels.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Marks the build stage, which the classic builder keeps as an untagged image (wheels + venv,
# about 9 GB): scripts/build-images.sh deletes it once the final stage is built.
LABEL org.spot-runner.stage=build
COPY . /ctx/
RUN set -eu; \
    python3 -m venv /opt/venv; \
    if ls /ctx/wheelhouse/*.whl >/dev/null 2>&1; then \
        echo "installing from the wheelhouse in the build context"; \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
            --no-index --find-links /ctx/wheelhouse -r /ctx/base-requirements.txt; \
    else \
        echo "no wheelhouse in the build context: installing from the package index"; \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
            -r /ctx/base-requirements.txt; \
    fi; \
    /opt/venv/bin/python -c "import torch, torchvision, numpy, PIL; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
# OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, so training on a shared
# or busy machine does not collapse (seen here: 8 s -> 127 s under contention); same weights.
ENV PATH=/opt/venv/bin:$PATH \
    OMP_WAIT_POLICY=PASSIVE \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
LABEL org.opencontainers.image.title="runner-base" \
      org.opencontainers.image.description="Python 3.11 with torch, torchvision, numpy and pillow in /opt/venv: the shared base of the spot-runner task images"
