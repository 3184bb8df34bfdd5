"""Benchmark: peak memory stays flat from 1k to 10k prompts, function by function.

Each (function, N) runs in a fresh subprocess: write a JSONL file of N prompts (the 32 shortest
of each shipped set, harmful, harmless and borderline, cycled, so that prompt lengths are the
same at every N), build the model (a randomly initialised real architecture,
``benchmarks/common.py``'s ``RANDOM_ARCHS``), run the function once on the 96-prompt pool as a
warm-up (one-time caches, allocator arenas, the largest batch), reset the kernel's peak-RSS
mark (``/proc/self/clear_refs``) with the N-prompt file loaded (step 1 measures loading it) and
run the function on it, then read the new peak (``VmHWM``) and the RSS with the result still held.

The subprocesses run with glibc's mmap threshold held at its default, 128 KiB
(``MALLOC_MMAP_THRESHOLD_``; ``--default-malloc``: left dynamic): every large tensor is then
mapped on allocation and returned on free, so the RSS follows what the code holds. Left dynamic,
glibc raises the threshold after the first frees and serves later tensors from a heap that it
keeps, so the peak also counts freed, fragmented memory, which moves it by tens of MiB from run
to run, more so the more batches run, whatever is held. Measured:

1. ``load_prompts`` (``load_prompt_file``) of the N-row file;
2. ``collect_residuals`` streamed to a folder (``out=``): every layer, the post-instruction
   positions;
3. ``refusal_scores`` of the N prompts;
4. ``diff_in_means`` (refusal-direction candidates, every layer × position): first half vs
   second half;
5. ``boundary_geometry``: the file's harmful, harmless and borderline thirds, every layer from 1.

"holding every result" is what a version that kept every prompt's intermediate in memory would
need, from the shapes: the whole file (load), the residuals (collect, diff-in-means), the
answer logits (scores), the residuals read at every layer (geometry). A ratio is the peak
growth at the largest N over the smallest (a growth under 1 MiB counts as 1 MiB). Linux only.
``--out`` writes the JSON and the table beside it (``.md``); ``--smoke``: the toy architecture
at N = 48 and 96 (see ``experiments/common.py``).

    python benchmarks/memory_scale.py [--sizes 1000 10000] [--out figures/memory_scale.json]
    python benchmarks/memory_scale.py --smoke [--out /tmp/memory_scale.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RANDOM_ARCHS, experiments_common, random_handle

ec = experiments_common()

FUNCTIONS = ("load", "collect_residuals", "refusal_scores", "diff_in_means", "boundary_geometry")
LABELS = ("harmful", "harmless", "borderline")
POOL = 96  # the warm-up set; the N-prompt files cycle through it
BATCH = 32
MIB = 2**20
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}  # glibc's default, held


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def write_prompts(path: Path, n: int) -> Path:
    """A JSONL file of ``n`` prompts, written line by line (never all in memory)."""
    from dataclasses import asdict

    from refusal_lens.prompts import load_shipped

    shortest = lambda ps: sorted(ps, key=lambda p: len(p.text))[: POOL // 3]  # noqa: E731
    sets = [shortest(load_shipped(label).prompts) for label in LABELS]
    pool = [p for row in zip(*sets, strict=True) for p in row]  # harmful, harmless, borderline…
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(asdict(pool[i % len(pool)])) + "\n")
    return path


def run_function(name: str, handle, prompts, file: Path, folder: Path):
    """Call ``name`` on ``prompts`` (or, for ``load``, on ``file``); return its result."""
    from refusal_lens.activations import CollectConfig, collect_residuals
    from refusal_lens.boundary.geometry import GeometryConfig, boundary_geometry
    from refusal_lens.directions.extract import diff_in_means
    from refusal_lens.prompts import load_prompts
    from refusal_lens.scoring import refusal_scores

    quiet = dict(show_progress=False)
    if name == "load":
        return load_prompts(str(file))
    if name == "collect_residuals":
        return collect_residuals(
            handle, prompts, CollectConfig(batch_size=BATCH), out=folder, **quiet
        )
    if name == "refusal_scores":
        return refusal_scores(handle, prompts, BATCH, **quiet)
    if name == "diff_in_means":
        half = len(prompts) // 2
        return diff_in_means(handle, prompts[:half], prompts[half:], batch_size=BATCH, **quiet)
    sets = [prompts.filter(label=label) for label in LABELS]
    return boundary_geometry(handle, *sets, config=GeometryConfig(batch_size=BATCH))


def all_in_memory(name: str, handle, n: int, file: Path) -> tuple[int, str]:
    """Bytes that holding every prompt's intermediate at once would take, and what it is."""
    if name == "load":
        return file.stat().st_size, "the whole file"
    if name == "refusal_scores":
        shape = [n, handle.bridge.cfg.d_vocab]
        what = "answer logits"
    elif name == "boundary_geometry":
        shape = [n, handle.n_layers - 1, handle.d_model]
        what = "residuals, every layer from 1"
    else:
        shape = [n, handle.n_layers, handle.chat.n_post, handle.d_model]
        what = "residuals"
    return 4 * math.prod(shape), f"{what} {shape} float32"


def child(name: str, n: int, arch: str) -> None:
    import torch

    from refusal_lens.prompts import load_prompts

    handle = None
    if name != "load":
        handle = random_handle(arch, "cpu", torch.float32, with_baseline=False)[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm_file, file = write_prompts(tmp / "pool.jsonl", POOL), write_prompts(tmp / "n.jsonl", n)
        run_function(name, handle, load_prompts(str(warm_file)), warm_file, tmp / "warm")
        prompts = None if name == "load" else load_prompts(str(file))  # step 1 feeds the rest
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before, start = _status_kib("VmRSS"), time.perf_counter()
        result = run_function(name, handle, prompts, file, tmp / "out")
        seconds = time.perf_counter() - start
        peak, after = _status_kib("VmHWM"), _status_kib("VmRSS")
        held, what = all_in_memory(name, handle, n, file)
        record = {
            "peak_growth_mib": (peak - before) / 1024,
            "retained_mib": (after - before) / 1024,
            "peak_rss_mib": peak / 1024,
            "all_in_memory_mib": held / MIB,
            "all_in_memory": what,
            "seconds": seconds,
        }
        del result
    print(json.dumps(record))


def measure(name: str, n: int, arch: str, default_malloc: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", name, str(n), "--arch", arch]
    env = dict(os.environ) if default_malloc else {**os.environ, **FIXED_MMAP_THRESHOLD}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} at N={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(record: dict) -> str:
    sizes = record["sizes"]
    first, last = f"{sizes[0]:,}", f"{sizes[-1]:,}"
    head = [
        "function",
        *(f"peak growth, N={n:,}" for n in sizes),
        f"ratio {last}/{first}",
        f"RSS after, result held, N={last}",
        f"holding every result, N={last}",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, r in record["results"].items():
        cells = [f"{g:.1f} MiB" for g in r["peak_growth_mib"]]
        kept, held, what = (
            r[k][-1] for k in ("retained_mib", "all_in_memory_mib", "all_in_memory")
        )
        cells += [f"{r['ratio']:.2f}", f"{kept:+.1f} MiB", f"{held:,.1f} MiB ({what})"]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(record: dict) -> str:
    spec = RANDOM_ARCHS[record["arch"]]
    return (
        f"Random {spec['family']} `{record['arch']}` (d_model {spec['hidden_size']}, "
        f"{spec['num_hidden_layers']} layers, vocabulary {spec['vocab_size']:,}), batch "
        f"{record['batch_size']}; peak RSS growth above the loaded, warmed-up model, each "
        f"(function, N) in a fresh process; a growth under 1 MiB counts as 1 MiB in a ratio. "
        "RSS after: the change with the result still held (load's result, the prompt set, is "
        f"O(N) by design; below zero where the allocator handed warm-up memory back). Allocator: "
        f"{record['malloc']}. "
        f"Made by `{record['command']}` on {record['hardware']} in {record['seconds']:.0f} s."
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(RANDOM_ARCHS), default="llama-512x4")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--functions", nargs="+", choices=FUNCTIONS, default=list(FUNCTIONS))
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's mmap threshold dynamic"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=ec.project_path, help="write the measurements as JSON")
    ec.add_smoke_flag(parser)
    if "--child" in sys.argv:  # a measurement: the parent resolved every argument already
        return parser.parse_args()
    smoke = {"sizes": [48, 96], "arch": "tiny"}
    return ec.parse(parser, smoke=smoke, smoke_out="memory_scale.json")


def main() -> None:
    args = parse()
    if args.child:
        child(args.child[0], int(args.child[1]), args.arch)
        return
    start = time.perf_counter()
    malloc = (
        "glibc default (dynamic mmap threshold)"
        if args.default_malloc
        else "mmap threshold 128 KiB"
    )
    record: dict = {"arch": args.arch, "sizes": args.sizes, "batch_size": BATCH, "malloc": malloc}
    options = f" --arch {args.arch}" * (args.arch != "llama-512x4")
    options += " --default-malloc" * args.default_malloc
    sizes = " ".join(map(str, args.sizes))
    record |= {"command": f"python benchmarks/memory_scale.py --sizes {sizes}{options}"}
    record["results"] = {}
    for name in args.functions:
        rows = [measure(name, n, args.arch, args.default_malloc) for n in args.sizes]
        result = {key: [row[key] for row in rows] for key in rows[0]}
        growth = result["peak_growth_mib"]
        result["ratio"] = growth[-1] / max(growth[0], 1.0)
        record["results"][name] = result
        cells = "  ".join(f"N={n}: {g:.1f} MiB" for n, g in zip(args.sizes, growth, strict=True))
        print(f"{name}: peak growth {cells}  ratio {result['ratio']:.2f}", flush=True)
    record |= {"seconds": time.perf_counter() - start, "hardware": ec.hardware()}
    text = table(record) + "\n\n" + describe(record) + "\n"
    print("\n" + text)
    if args.out:
        from refusal_lens.artifacts import write_json

        write_json(args.out, record)
        ec.write_text(Path(args.out).with_suffix(".md"), text)


if __name__ == "__main__":
    main()
