#!/usr/bin/env bash
# Fetches the web page's third-party code (xterm.js and its fit addon) from the npm registry
# into target/web-assets/node_modules, at the versions and integrity hashes pinned in
# web/package-lock.json (`npm ci` refuses a tarball whose hash differs). netstack's build
# script embeds the files from there. Idempotent: does nothing when the installed lockfile
# matches. Needs `npm` (Debian: apt-get install npm; image-builder/install-deps.sh does it).
set -euo pipefail

web="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${KEEL_WEB_ASSETS:-$web/../target/web-assets}"

if [ -f "$out/package-lock.json" ] && cmp -s "$web/package-lock.json" "$out/package-lock.json" \
    && [ -f "$out/node_modules/@xterm/xterm/lib/xterm.js" ] \
    && [ -f "$out/node_modules/@xterm/addon-fit/lib/addon-fit.js" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "fetch-assets: error: npm not found: run image-builder/install-deps.sh (or apt-get install npm)" >&2
    exit 1
fi
mkdir -p "$out"
cp "$web/package.json" "$web/package-lock.json" "$out/"
cd "$out"
# --ignore-scripts: nothing from the registry runs here; the packages are plain files.
if ! npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; then
    rm -f "$out/package-lock.json"
    echo "fetch-assets: error: npm ci failed in $out (registry reachable? see npm's message above)" >&2
    exit 1
fi
echo "fetch-assets: xterm.js assets in $out/node_modules"
