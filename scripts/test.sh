#!/usr/bin/env bash
# The README's test command: install into .venv (idempotent), lint, run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check hificli tests benchmarks scripts
.venv/bin/python -m pytest -q -n 2 "$@"
