#!/usr/bin/env bash
# GPU check of `--device cuda` (issue #17): cross-device latents, pixels and timings, as markdown.
# Needs a CUDA GPU and a Python with torch (CUDA build), numpy, Pillow, click, rich, safetensors and
# constriction; it installs nothing and uses this checkout (PYTHONPATH). Writes $OUT/gpu_check.md when
# $OUT is set. Takes about 2-4 minutes on one GPU. Dry run on a CPU machine: bash scripts/gpu_check.sh --device cpu --quick
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'PYCHECK'
import importlib, sys
missing = [m for m in ("torch", "numpy", "PIL", "click", "rich", "safetensors", "constriction") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)}")
PYCHECK
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HIFIC_OFFLINE=1
exec "$PY" scripts/gpu_check.py "$@"
