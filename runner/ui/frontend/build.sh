#!/usr/bin/env bash
# Build the dashboard's front-end assets: install the pinned npm packages (package-lock.json)
# into .cache/ui-frontend, outside the Python package, and copy the few files the pages load
# into runner/ui/static/vendor/ (package data, not in git). Needs npm and the npm registry once;
# afterwards npm's cache makes it work offline. `make ui-assets` (part of `make install`) runs it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
work="$root/.cache/ui-frontend"
vendor="$(cd "$here/.." && pwd)/static/vendor"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: install nodejs and npm (apt-get install nodejs npm), then run make ui-assets" >&2
  exit 1
fi
mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
rm -rf "$vendor.tmp"
mkdir -p "$vendor.tmp"
cp "$work/node_modules/htmx.org/dist/htmx.min.js" "$vendor.tmp/htmx.min.js"
cp "$work/node_modules/chart.js/dist/chart.umd.min.js" "$vendor.tmp/chart.umd.min.js"
cp "$work/node_modules/htmx.org/LICENSE" "$vendor.tmp/htmx.LICENSE"
cp "$work/node_modules/chart.js/LICENSE.md" "$vendor.tmp/chart.js.LICENSE.md"
node -e 'const l=require(process.argv[1]).packages;const v=k=>l["node_modules/"+k].version;
  console.log(JSON.stringify({"htmx.org":v("htmx.org"),"chart.js":v("chart.js")}))' \
  "$work/package-lock.json" >"$vendor.tmp/versions.json"
rm -rf "$vendor"
mv "$vendor.tmp" "$vendor"
echo "ui assets: $(cat "$vendor/versions.json") in ${vendor#"$root/"}"
