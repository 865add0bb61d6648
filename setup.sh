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
