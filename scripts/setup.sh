#!/usr/bin/env bash
# Create .venv in the clone and install hific with its test, train and eval extras (CPU torch via
# constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# (pip's notices about the machine's extra local indexes are noise: drop them)
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,train,eval]" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
