#!/usr/bin/env bash
# Install the headless browser the dashboard tests (tests/ui/) drive: Debian's chromium and
# chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver). Never a browser download.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
fi
echo "chromium: $(command -v chromium) ($(chromium --version 2>/dev/null || echo '?'))"
echo "chromedriver: $(command -v chromedriver)"
