#!/usr/bin/env bash
# The README's main job: install into .venv (idempotent), then encode and decode the bundled sample
# photo with the default model and show what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p demo
.venv/bin/hific encode hificli/assets/chelsea.png -o demo/chelsea.hfc --force
.venv/bin/hific info demo/chelsea.hfc
.venv/bin/hific decode demo/chelsea.hfc -o demo/chelsea.png --force
echo "reconstruction: demo/chelsea.png (original: hificli/assets/chelsea.png)"
