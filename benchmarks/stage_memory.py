"""Benchmark: each stage's peak memory as a multiple of the model's weights.

Every stage of ``refusal-lens run`` runs alone in a fresh process (``run_pipeline`` with
``stages=(stage,)``), into one run folder, in the registry's order, so that each reads the
earlier stages' results from the folder instead of computing them again. Each process reports:

- ``fixed``: its resident set after importing torch, transformers, TransformerLens and
  refusal-lens, before any model is loaded (the interpreter and the libraries' code: the
  fixed overhead, the same for every model);
- ``peak``: its peak resident set (``VmHWM``), which includes loading the model; on CUDA also
  ``torch.cuda.max_memory_allocated``;
- where the peak happened: the innermost refusal-lens frame on the main thread when a sampler
  thread (every 20 ms) saw the resident set highest.

``weights`` are the bytes of the model's tensors in the dtype it is loaded in, read from its
safetensors headers (an aligned organism is a model of the same size). The ratio is
``(peak − fixed) / weights``: the target is at most 1.3 for a stage that studies one model, at
most 2.3 for one that holds a base and an aligned model. On CUDA the ratio is
``max_memory_allocated / weights``.

Models: the bundled ones with ``refusal-lens run --quick``'s settings, every stage but the
optional ones; ``random-S`` / ``random-M``: random Llama chat models of two sizes (built once
into the cache), on the stages a model that refuses nothing can run (model, evaluate,
direction, interventions, geometry) with few prompts. ``--smoke``: the small random model on
model, evaluate and direction.

    python benchmarks/stage_memory.py [--models smollm2-135m qwen2.5-coder-0.5b random-S random-M]
        [--dtype float32] [--out figures/stage_memory.json]
    python benchmarks/stage_memory.py --smoke [--out /tmp/stage_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import experiments_common

ec = experiments_common()

MIB = 2**20
# random Llama chat models (the tokenizer of tests/tiny_models.py) of three sizes; the 7B one
# has Llama-2-7B's shapes (for a GPU)
RANDOM = {
    "random-S": dict(num_hidden_layers=4, hidden_size=256, intermediate_size=1024),
    "random-M": dict(num_hidden_layers=8, hidden_size=1024, intermediate_size=4096),
    "random-7B": dict(
        num_hidden_layers=32,
        hidden_size=4096,
        intermediate_size=11008,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
}
RANDOM_STAGES = ("model", "evaluate", "direction", "interventions", "geometry")
# what a model that refuses nothing can run, with few prompts (experiments/organisms.py's smoke)
RANDOM_SETTINGS = dict(
    max_new_tokens=8,
    evaluate=dict(n=8),
    direction=dict(n_train=16, n_val=8, top_k=2, n_false_refusal=8),
    interventions=dict(n_validation=8),
    geometry=dict(n=24, n_lookalikes=8),
)


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def random_model(name: str, dtype: str, device: str) -> str:
    """The random model ``name`` (:data:`RANDOM`) in ``dtype``, built on ``device`` and saved
    once into the cache; its folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from refusal_lens.artifacts import atomic_dir
    from refusal_lens.models import cache_dir

    sizes = {"num_attention_heads": 4, "num_key_value_heads": 2, **RANDOM[name]}
    sizes["head_dim"] = sizes["hidden_size"] // sizes["num_attention_heads"]
    folder = cache_dir() / "benchmarks" / f"{name}-{dtype}"
    if (folder / "config.json").is_file():
        return str(folder)
    tiny = ec.tiny_models()
    tokenizer = tiny.build_tokenizer("llama")
    config = tiny.build_config("llama", len(tokenizer), sizes["num_hidden_layers"])
    for key, value in {**sizes, "max_position_embeddings": 1024}.items():
        setattr(config, key, value)
    ids = {k: getattr(tokenizer, k) for k in ("pad_token_id", "eos_token_id", "bos_token_id")}
    for key, value in ids.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with atomic_dir(folder, marker="config.json") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    del model
    return str(folder)


def weights_bytes(spec: str, dtype: str) -> int:
    """The bytes of ``spec``'s tensors loaded in ``dtype``, from its safetensors headers."""
    from refusal_lens.models import memory
    from refusal_lens.models.load import _as_dtype, model_path

    return memory.weights_bytes(model_path(spec), _as_dtype(dtype))


class PeakSampler:
    """A thread that samples the resident set every ``every`` seconds and keeps the innermost
    refusal-lens frame of the main thread at the highest sample."""

    def __init__(self, every: float = 0.02) -> None:
        self.every, self.peak, self.where = every, 0.0, "-"
        self.main = threading.main_thread().ident
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            rss = _status_mib("VmRSS")
            if rss > self.peak:
                self.peak, self.where = rss, self._frame()

    def _frame(self) -> str:
        frame = sys._current_frames().get(self.main)
        while frame is not None:
            name = frame.f_code.co_filename
            if "refusal_lens" in name:
                short = name.split("refusal_lens/")[-1]
                return f"{short}:{frame.f_lineno} {frame.f_code.co_name}"
            frame = frame.f_back
        return "-"


def warm_up(device: str, dtype: str) -> None:
    """What every stage's process holds whatever the model: the libraries imported and their
    one-time buffers made by a forward pass, a generation and the judges on a tiny model
    (``experiments/common.py``'s smoke model), which is then dropped."""
    import gc

    import matplotlib.pyplot  # noqa: F401  (the stages' figures)

    from refusal_lens.models import load_model
    from refusal_lens.prompts import PromptSet
    from refusal_lens.scoring import refusal_rates

    tiny = load_model(ec.smoke_model(), device=device, dtype=dtype)
    prompts = PromptSet.from_texts(["Say hello.", "Name a colour."], "harmless", "warm-up")
    refusal_rates(tiny, {"warm-up": prompts}, ("score", "substring"), max_new_tokens=2)
    del tiny
    gc.collect()


def child(model: str, stage: str, folder: str, dtype: str, device: str, quick: bool) -> None:
    """Run ``stage`` of ``model`` into ``folder``; print one JSON line of measurements."""
    import torch

    from refusal_lens.pipeline import RunConfig, run_pipeline
    from refusal_lens.pipeline.registry import REGISTRY

    warm_up(device, dtype)
    fixed = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak mark starts again from here
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    readers = REGISTRY.readers  # a setting is given only where the stage reads it
    given = {} if quick else RANDOM_SETTINGS
    settings = {k: v for k, v in given.items() if stage in (readers(k) or [stage])}
    config = RunConfig.preset(
        quick=True, model=model, stages=(stage,), dtype=dtype, device=device, seed=0, **settings
    )
    start = time.time()
    with PeakSampler() as sampler:
        run_pipeline(config, folder, say=lambda _: None)
    cuda = torch.cuda.max_memory_allocated() / MIB if torch.cuda.is_available() else None
    record = dict(
        fixed_mib=fixed,
        peak_mib=_status_mib("VmHWM"),
        cuda_mib=cuda,
        where=sampler.where,
        seconds=time.time() - start,
    )
    print("RESULT " + json.dumps(record))


def stages_of(model: str, smoke: bool = False) -> tuple[str, ...]:
    from refusal_lens.pipeline.registry import REGISTRY

    if model in RANDOM:
        return RANDOM_STAGES[:3] if smoke else RANDOM_STAGES
    return tuple(s.name for s in REGISTRY if not s.optional)


def measure(
    spec: str, stage: str, folder: Path, opts: argparse.Namespace, cache: str | None, quick: bool
) -> dict:
    cmd = [sys.executable, __file__, "--child", spec, stage, str(folder)]
    cmd += ["--dtype", opts.dtype, "--device", opts.device]
    cmd += ["--quick"] if quick else []
    env = {**os.environ, **({"REFUSAL_LENS_CACHE": cache} if cache else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"stage {stage} of {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def benchmark(model: str, opts: argparse.Namespace) -> dict:
    """Each stage of ``model`` alone, in order, into one temporary run folder; with
    ``opts.fresh_cache``, from an empty cache (the model converted, the organism trained)."""
    quick = model not in RANDOM  # the quick preset; a random model: few prompts
    spec = model if quick else random_model(model, opts.dtype, opts.device)
    weights = weights_bytes(spec, opts.dtype) / MIB
    rows = []
    with tempfile.TemporaryDirectory(prefix="stage-memory-") as tmp:
        cache = str(Path(tmp) / "cache") if opts.fresh_cache else None
        for stage in stages_of(model, opts.smoke):
            row = {"stage": stage, **measure(spec, stage, Path(tmp) / "run", opts, cache, quick)}
            row["ratio"] = (row["peak_mib"] - row["fixed_mib"]) / weights
            if row["cuda_mib"] is not None:
                row["cuda_ratio"] = row["cuda_mib"] / weights
            cuda = f", CUDA peak/weights {row['cuda_ratio']:.2f}" if "cuda_ratio" in row else ""
            print(
                f"{model:>20} {stage:>14}: peak {row['peak_mib']:8.0f} MiB, fixed "
                f"{row['fixed_mib']:5.0f}, (peak - fixed)/weights {row['ratio']:.2f}{cuda} "
                f"at {row['where']} ({row['seconds']:.0f} s)",
                flush=True,
            )
            rows.append(row)
    return {
        "model": model,
        "dtype": opts.dtype,
        "device": opts.device,
        "fresh_cache": opts.fresh_cache,
        "weights_mib": weights,
        "stages": rows,
    }


def markdown(results: dict) -> str:
    head = "| model | weights | stage | peak RSS | fixed | (peak − fixed) / weights | at |"
    lines = [head, "|---|---:|---|---:|---:|---:|---|"]
    for m in results["models"]:
        for r in m["stages"]:
            lines.append(
                f"| {m['model']} ({m['dtype']}, {m['device']}) | {m['weights_mib']:,.0f} MiB | "
                f"{r['stage']} | {r['peak_mib']:,.0f} MiB | {r['fixed_mib']:,.0f} MiB | "
                f"{r['ratio']:.2f} | `{r['where']}` |"
            )
    cuda = [(m, r) for m in results["models"] for r in m["stages"] if "cuda_ratio" in r]
    if cuda:
        lines += ["", "| model | stage | CUDA peak (max_memory_allocated) | / weights |"]
        lines.append("|---|---|---:|---:|")
        for m, r in cuda:
            lines.append(
                f"| {m['model']} ({m['dtype']}) | {r['stage']} | {r['cuda_mib']:,.0f} MiB | "
                f"{r['cuda_ratio']:.2f} |"
            )
    return (
        "\n".join(lines)
        + f"\n\nEach stage alone in a fresh process, after the earlier stages' results were "
        f"written to the run folder. Made by `{results['command']}` on {results['hardware']} "
        f"in {results['minutes']:.0f} min.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["smollm2-135m", "qwen2.5-coder-0.5b", "random-S", "random-M"],
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--fresh-cache",
        action="store_true",
        help="each model's stages from an empty cache: the model converted, the organism trained",
    )
    parser.add_argument("--out", type=ec.project_path, help="write the JSON (and .md beside)")
    parser.add_argument("--data", type=ec.project_path, default=ec.DATA, help="benchmark files")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    ec.add_smoke_flag(parser)
    if "--child" in sys.argv:  # one measurement: the parent resolved every argument already
        args = parser.parse_args()
        child(*args.child, dtype=args.dtype, device=args.device, quick=args.quick)
        return
    args = ec.parse(parser, smoke={"models": ["random-S"]}, smoke_out="stage_memory.json")
    start = time.time()
    results = {"models": [benchmark(m, args) for m in args.models]}
    results |= {
        "command": " ".join(["python benchmarks/stage_memory.py", *sys.argv[1:]]),
        "hardware": ec.hardware(),
        "minutes": (time.time() - start) / 60,
    }
    text = markdown(results)
    print(text)
    if args.out:
        from refusal_lens.artifacts import write_json

        write_json(args.out, results)
        ec.write_text(args.out.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
