#!/usr/bin/env bash
# Make sure this machine has a Docker engine that answers, plus docker-compose and debootstrap.
#
#   scripts/ensure-docker.sh            # install what is missing (apt), start dockerd if needed
#   DOCKER_WAIT_SECONDS=120 scripts/ensure-docker.sh
#
# Idempotent: when everything is there and `docker info` answers, it only checks and exits.
# Installing needs root (or sudo). dockerd is started in the background with its log in
# ${DOCKERD_LOG:-/tmp/dockerd.log}.
set -euo pipefail

WAIT_SECONDS="${DOCKER_WAIT_SECONDS:-60}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"

log() { printf '[ensure-docker] %s\n' "$*"; }
die() { printf '[ensure-docker] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $* (run as root or install sudo)"
  fi
}

# Commands a package provides; debootstrap lives in /usr/sbin, outside a user's PATH.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
have docker || missing+=(docker.io)
have dockerd || { [[ " ${missing[*]-} " == *" docker.io "* ]] || missing+=(docker.io); }
have docker-compose || missing+=(docker-compose)
have debootstrap || missing+=(debootstrap)

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing with apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "docker, dockerd, docker-compose and debootstrap are installed"
fi

if docker info >/dev/null 2>&1; then
  log "the Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
  exit 0
fi

# Something may already be starting it (systemd, another run of this script): look first.
if pgrep -x dockerd >/dev/null 2>&1; then
  log "dockerd is running but does not answer yet; waiting up to ${WAIT_SECONDS}s"
else
  log "starting dockerd in the background (log: $DOCKERD_LOG)"
  # From /: the engine outlives this checkout, and a folder removed under it would stop it from being
  # started again the same way (the engine-restart fault case restarts it with its own working folder).
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && exec nohup dockerd) >"$DOCKERD_LOG" 2>&1 &
  else
    as_root sh -c "cd / && nohup dockerd >'$DOCKERD_LOG' 2>&1 &"
  fi
fi

deadline=$(( $(date +%s) + WAIT_SECONDS ))
until docker info >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "last lines of $DOCKERD_LOG:"
    tail -n 20 "$DOCKERD_LOG" 2>/dev/null >&2 || true
    die "the Docker engine did not answer within ${WAIT_SECONDS}s; see $DOCKERD_LOG (raise DOCKER_WAIT_SECONDS to wait longer)"
  fi
  sleep 1
done
log "the Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
