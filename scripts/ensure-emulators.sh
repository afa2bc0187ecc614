#!/usr/bin/env bash
# Install the cloud emulators the tests start: Azurite (npm) for Azure Blob. moto (AWS S3 and
# Batch) and gcp-storage-emulator come with `make install` (the test extra).
set -euo pipefail
if ! command -v azurite-blob >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm with apt (for Azurite)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends nodejs npm
  fi
  echo "installing azurite with npm"
  npm install -g --no-audit --no-fund azurite
fi
echo "azurite-blob: $(command -v azurite-blob)"
