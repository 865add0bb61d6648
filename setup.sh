#!/usr/bin/env bash
# Sets up everything the studio needs in ./.venv (idempotent: a second run is quick).
#   bash setup.sh          runtime dependencies
#   bash setup.sh --dev    runtime + test dependencies
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

req=requirements.txt
[[ "${1:-}" == "--dev" ]] && req=requirements-dev.txt

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt requirements-nodeps.txt "$req" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
  touch "$stamp"
fi

# The studio page: React Flow and React from npm (pinned in package-lock.json) into
# node_modules/, bundled with the page's own modules (ui/web/src) by esbuild into
# ui/static/dist/, which the studio serves. Rebuilt when the sources or the lock change.
npm_stamp="node_modules/.installed-$(sha256sum package-lock.json | cut -c1-16)"
if ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: npm is missing; install Node.js (apt-get install -y npm) and run again." >&2
  echo "          Workflows run headless and over the HTTP API until then; the page needs it." >&2
else
  if [[ ! -f "$npm_stamp" ]]; then
    npm ci --no-audit --no-fund --loglevel=error
    touch "$npm_stamp"
  fi
  page_hash="$(cat package-lock.json ui/web/build.mjs $(find ui/web/src -type f | LC_ALL=C sort) | sha256sum | cut -c1-16)"
  if [[ ! -f ui/static/dist/studio.js || "$(cat ui/static/dist/.built 2>/dev/null)" != "$page_hash" ]]; then
    npm run --silent build
    echo "$page_hash" > ui/static/dist/.built
  fi
fi

# Browser tests drive Debian's chromium through Playwright (never a downloaded browser).
if [[ "${1:-}" == "--dev" && ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update && apt-get install -y chromium
  else
    echo "setup.sh: /usr/bin/chromium is missing; the browser tests will be skipped." >&2
  fi
fi
