#!/usr/bin/env bash
# Install into ./.venv and run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"   # msrun starts `python` from PATH
exec .venv/bin/python -m pytest "$@"
