#!/usr/bin/env bash
# Each stage's peak memory on a random model with Llama-2-7B's shapes (benchmarks/stage_memory.py),
# for a lent GPU machine with no network. Its image has PyTorch, numpy, pandas, pyarrow,
# matplotlib and pillow; the other locked libraries travel as wheels in .whl/ (fetched
# beforehand with `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform
# manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl
# NAME==VERSION` for accelerate, anyio, cycler, datasets, dill, einops, h11, httpcore2, httpx2,
# huggingface-hub, idna, jaxtyping, multiprocess, packaging, psutil, py3langid, pyparsing,
# python-dateutil, pyyaml, regex, rich, safetensors, sentencepiece, sniffio, tokenizers, tqdm,
# transformer-lens, transformers, truststore and xxhash at the versions in requirements.lock),
# the benchmark data in .gpu-data/ (a copy of ../shared/data); both are ignored, so the run
# carries them. The package runs from src/. Results land in $OUT (default /tmp/gpu).
#
#     bash benchmarks/gpu_stage_memory.sh
source "$(dirname "$0")/gpu_setup.sh"
# src/ is not installed, but the run records refusal-lens's version from its metadata
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' src/refusal_lens/__init__.py)
mkdir -p "/tmp/site/refusal_lens-$version.dist-info"
printf 'Metadata-Version: 2.1\nName: refusal-lens\nVersion: %s\n' "$version" \
    >"/tmp/site/refusal_lens-$version.dist-info/METADATA"
export REFUSAL_LENS_DATA=$PWD/.gpu-data
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import sys, torch, numpy, pandas, pyarrow, matplotlib, transformers, \
transformer_lens, datasets; print(sys.version.split()[0], *(f'{m.__name__} {m.__version__}' \
for m in (torch, numpy, pandas, pyarrow, matplotlib, transformers, datasets)))" \
        || { echo "FAILED: a library is missing (above)"; exit 1; }
} | tee "$OUT/machine.txt" || exit 1
echo "\$ python benchmarks/stage_memory.py --models random-7B"
timeout 420 python3 benchmarks/stage_memory.py --models random-7B --device cuda --dtype bfloat16 \
    --out "$OUT/stage_memory_7b.json" 2>&1 | tee "$OUT/stage_memory_7b.log" \
    || echo "FAILED ($?): benchmarks/stage_memory.py --models random-7B"
