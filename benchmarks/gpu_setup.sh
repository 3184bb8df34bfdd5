# Sourced by the GPU scripts (gpu_checks.sh, gpu_stage_memory.sh): $OUT made, the wheels of
# .whl/ (when the run carried them) installed into /tmp/site, the package run from src/.
set -uo pipefail
OUT=${OUT:-/tmp/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
# our src/ first, then the wheels (ahead of an image's older transformers and hub)
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 REFUSAL_LENS_CACHE=/tmp/rl-cache
