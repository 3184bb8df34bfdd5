#!/usr/bin/env bash
# The accelerator checks in one command, for a lent GPU machine that has PyTorch but none of
# the locked libraries and no network: wheels of the locked versions travel in .whl/ (fetched
# beforehand with `pip download --no-deps --only-binary=:all: --python-version 3.12
# --platform manylinux2014_x86_64 -d .whl NAME==VERSION` for transformer-lens, transformers,
# tokenizers, huggingface-hub, hf-xet, httpx2, httpcore2, truststore, datasets, dill,
# multiprocess, googleapis-common-protos, beartype, fancy-einsum and typeguard at the versions
# in requirements.lock); the package runs from src/. Figures land in $OUT (default /tmp/gpu).
#
#     bash benchmarks/gpu_checks.sh
source "$(dirname "$0")/gpu_setup.sh"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import sys, torch, transformers, transformer_lens as tl; \
print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', \
transformers.__version__, 'transformer-lens', getattr(tl, '__version__', '?'))"
} | tee "$OUT/machine.txt"
step() { echo "\$ python $*"; timeout 240 python3 "$@" || echo "FAILED ($?): $*"; }
cuda="--device cuda"
step benchmarks/cuda_checks.py --random-arch qwen2.5-1.5b $cuda --dtype float32 \
    --out "$OUT/cuda_qwen1.5b_float32.json"
step benchmarks/cuda_checks.py --random-arch qwen2.5-1.5b $cuda --dtype bfloat16 \
    --out "$OUT/cuda_qwen1.5b_bfloat16.json"
step benchmarks/cuda_checks.py --random-arch llama3-8b $cuda --dtype bfloat16 \
    --out "$OUT/cuda_llama8b_bfloat16.json"
step benchmarks/collect.py --random-arch qwen2.5-1.5b $cuda --dtype bfloat16 \
    --batch-size 64 --seq-len 64 --n-prompts 256 --out "$OUT/collect_qwen1.5b.json"
step benchmarks/collect.py --random-arch llama3-8b $cuda --dtype bfloat16 \
    --batch-size 64 --seq-len 64 --n-prompts 256 --out "$OUT/collect_llama8b.json"
step benchmarks/search_trial.py --random-arch llama3-8b $cuda --dtype bfloat16 \
    --out "$OUT/search_trial_llama8b.json"
