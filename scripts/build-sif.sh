#!/usr/bin/env bash
# Apptainer images (.sif) of the task images, for Slurm clusters (slurm.runtime: apptainer; docs/slurm.md).
#
#   scripts/build-sif.sh                       # images/sif/runner-cifar_latest.sif from the local Docker daemon
#   scripts/build-sif.sh cifar bert            # several tasks
#   scripts/build-sif.sh --archive cifar       # through a `docker save` archive (no daemon access for apptainer)
#   SIF_DIR=/shared/images scripts/build-sif.sh cifar
#
# Commands, as Apptainer's user guide documents them ("Support for Docker and OCI Containers"):
#   apptainer build OUT.sif docker-daemon:localhost/runner-<task>:latest
#   docker save localhost/runner-<task>:latest -o x.tar && apptainer build OUT.sif docker-archive:x.tar
# (`make image` builds the Docker images first.) Where Apptainer (or Singularity) is not installed, it
# says so in one line and exits 1: Debian bookworm packages neither; see https://apptainer.org/docs/admin/main/installation.html
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIF_DIR="${SIF_DIR:-$ROOT/images/sif}"
ARCHIVE=0
TASKS=()
for arg in "$@"; do
  case "$arg" in
    --archive) ARCHIVE=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "build-sif: unknown option $arg (known: --archive, --help)" >&2; exit 2 ;;
    *) TASKS+=("$arg") ;;
  esac
done
[ "${#TASKS[@]}" -gt 0 ] || TASKS=(cifar)

APPTAINER="$(command -v apptainer || command -v singularity || true)"
if [ -z "$APPTAINER" ]; then
  echo "build-sif: apptainer is not installed on this machine (no Debian bookworm package): install it (https://apptainer.org/docs/admin/main/installation.html) or run make sif where it is" >&2
  exit 1
fi

mkdir -p "$SIF_DIR"
for task in "${TASKS[@]}"; do
  image="localhost/runner-$task:latest"
  out="$SIF_DIR/runner-${task}_latest.sif"
  docker image inspect "$image" >/dev/null 2>&1 || { echo "build-sif: no Docker image $image: run make image TASKS=$task" >&2; exit 1; }
  if [ "$ARCHIVE" = 1 ]; then
    archive="$(mktemp -d)/runner-$task.tar"
    docker save "$image" -o "$archive"
    "$APPTAINER" build --force "$out" "docker-archive:$archive"
    rm -rf "$(dirname "$archive")"
  else
    "$APPTAINER" build --force "$out" "docker-daemon:$image"
  fi
  echo "build-sif: $out (copy it to the cluster's shared file system; set slurm.sif to its path there)"
done
