#!/usr/bin/env bash
# Create ./.venv (if needed) and install mindcv_mobile with its test and viz extras into it.
# Used by both README commands; safe to run again (pip skips what is already there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,viz]"
# mindcv is a test-only peer (checkpoint-compatibility tests); it pins old deps, so no-deps.
.venv/bin/python -m pip install --quiet --no-deps "mindcv==0.3.0"
