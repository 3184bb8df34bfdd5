"""Benchmark: peak memory of collect_residuals does not grow with the number of prompts.

Each measurement runs in a fresh subprocess: load the model, warm it up, reset the kernel's
peak-RSS mark (``/proc/self/clear_refs``), collect residuals for N prompts (every layer,
post-instruction positions), and read the new peak (``VmHWM``). Streaming (``out=``) is
compared with holding the result in memory, at growing N. Linux only. ``--out`` writes the
measurements as JSON; ``--smoke``: a tiny random model at N = 4 and 8 (see
``experiments/common.py``).

    python benchmarks/collect_memory.py [--sizes 64 512 2048]
    python benchmarks/collect_memory.py --smoke [--out /tmp/collect_memory.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import experiments_common

ec = experiments_common()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(model: str, n: int, stream: bool) -> None:
    from refusal_lens.activations import CollectConfig, collect_residuals
    from refusal_lens.models import load_model
    from refusal_lens.prompts import load_shipped

    handle = load_model(model, device="cpu")
    pool = load_shipped("harmful").texts[:64]  # one pool: the same lengths at every N
    texts = [pool[i % len(pool)] for i in range(n)]
    # warm-up: the first forward pass allocates ~0.5 GiB of one-time caches (allocator arenas,
    # kernels), which would otherwise hide what grows with N
    collect_residuals(handle, pool, CollectConfig(batch_size=32), show_progress=False)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r" if stream else None
        res = collect_residuals(
            handle, texts, CollectConfig(batch_size=32), out=out, show_progress=False
        )
        size_mib = res.acts.numel() * 4 / 2**20
        peak = _status_kib("VmHWM")
    print(f"{(peak - before) / 1024:.1f} {size_mib:.1f}")


def measure(model: str, n: int, stream: bool) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--child", str(n), "--model", model]
    if stream:
        cmd.append("--stream")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=ec.model_spec, default=ec.DEFAULT_MODEL)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=ec.project_path, help="write the measurements as JSON")
    ec.add_smoke_flag(parser)
    if "--child" in sys.argv:  # a measurement: the parent resolved every argument already
        args = parser.parse_args()
        child(args.model, args.child, args.stream)
        return
    args = ec.parse(parser, smoke={"sizes": [4, 8]}, smoke_out="collect_memory_benchmark.json")
    print(f"model={args.model}; peak RSS growth during collect_residuals, above the loaded model")
    record: dict = {"model": args.model, "sizes": args.sizes}
    for stream in (True, False):
        mode = "streamed to disk" if stream else "held in memory  "
        cells, growth, sizes = [], [], []
        for n in args.sizes:
            peak, size = measure(args.model, n, stream)
            growth.append(peak)
            sizes.append(size)
            cells.append(f"N={n}: {peak:7.1f} MiB (result {size:4.0f} MiB)")
        ratio = growth[-1] / max(growth[0], 1.0)
        print(
            f"{mode}: " + "   ".join(cells) + f"   peak ratio N={args.sizes[-1]} / "
            f"N={args.sizes[0]} = {ratio:.2f}"
        )
        record["streamed" if stream else "in_memory"] = {
            "peak_growth_mib": growth,
            "result_mib": sizes,
            "peak_ratio": ratio,
        }
    if args.out:
        from refusal_lens.artifacts import write_json

        write_json(args.out, record)


if __name__ == "__main__":
    main()
