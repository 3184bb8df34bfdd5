#!/usr/bin/env bash
# Refresh requirements.lock from pyproject.toml, then rebuild .venv from it and run the suite.
#   bash scripts/lock.sh                 # newest versions that pyproject.toml's ranges allow
#   bash scripts/lock.sh -P transformers # upgrade one package only (pip-compile options pass through)
# Review the diff of requirements.lock and the test results before committing the new lock.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_TOOLS="pip-tools==7.6.2"
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install --quiet "$PIP_TOOLS"
# torch is left out of the lock (it is "unsafe" here): setup.sh installs it on its own so that a
# machine with a CUDA build keeps it. Index and find-links lines are machine settings, not data.
"$tools/venv/bin/pip-compile" --quiet --generate-hashes --extra dev --strip-extras \
    --unsafe-package torch --constraint scripts/lock-constraints.txt \
    --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
    --output-file requirements.lock "$@" pyproject.toml
bash scripts/setup.sh
.venv/bin/python -m pytest
