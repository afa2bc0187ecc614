# ImageNet (ResNet-50) task image: a thin layer over the shared base (images/base.Dockerfile).
# Built by scripts/build-images.sh from the repository root (see .dockerignore).
#
# The data is not in the image: mount it (-v /data/imagenet:/data/imagenet, train/ and val/
# folders of class sub-folders) or pass --data-uri s3://... to sync it to local disk first.
# torchvision weights (--weights ResNet50_Weights.IMAGENET1K_V2) need the network or a mounted
# file; --data synthetic runs fully offline.
ARG BASE=localhost/runner-base:latest
FROM ${BASE}

COPY pyproject.toml README.md /src/
COPY runner/ /src/runner/
RUN pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps \
        --no-build-isolation /src \
    && rm -rf /src

WORKDIR /workspace
LABEL org.opencontainers.image.title="runner-imagenet" \
      org.opencontainers.image.description="spot-runner task: ImageNet ResNet training that resumes from RUNNER_CHECKPOINT_URI" \
      org.spot-runner.task="imagenet"
ENTRYPOINT ["python", "-m", "runner.tasks.imagenet"]
