"""Benchmark: collect_residuals against a plain HF forward pass, in one process.

Both sides run the same prompts, tokenized the same way, in the same batches: ``collect_residuals``
(every layer's ``resid_pre`` at the post-instruction positions, through TransformerBridge
hooks) and ``hf_model(..., output_hidden_states=True)`` on a plain HF model loaded with its
default attention. Timings alternate between the two and the median of the repeats is kept.
``collect_residuals`` runs twice: on its fast path (HF's SDPA attention kernel, taken when no
attention hook is needed) and on the bridge's own step-by-step attention (the slow path, which
``model.native_attention = False`` forces). Prints the ratio collect / HF for both (target
≤ 1.10) and tokens per second (and writes them as JSON with ``--out``). ``--smoke``: a tiny
random model (or ``--random-arch tiny``), 8 prompts, one repeat (see ``experiments/common.py``).

    python benchmarks/collect.py                                  # bundled model, CPU
    python benchmarks/collect.py --random-arch llama3-8b --device cuda --dtype bfloat16 \\
        --batch-size 64 --seq-len 64                              # GPU scale check
    python benchmarks/collect.py --smoke [--out /tmp/collect.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import RANDOM_ARCHS, experiments_common, random_handle, sync

ec = experiments_common()


def bundled_handle(model: str, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    from refusal_lens.models import load_model

    handle = load_model(model, device=device, dtype=dtype)
    baseline = AutoModelForCausalLM.from_pretrained(handle.path, dtype=dtype).to(device).eval()
    return handle, baseline


def make_prompts(n: int, seq_len: int | None) -> list[str]:
    from refusal_lens.prompts import load_shipped

    texts = (load_shipped("harmful") + load_shipped("harmless")).texts
    texts = [texts[i % len(texts)] for i in range(n)]
    if seq_len is not None:  # pad every prompt to about seq_len tokens of plain words
        texts = [(t + " " + "please answer clearly " * seq_len)[: seq_len * 3] for t in texts]
    return texts


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=ec.model_spec, default=ec.DEFAULT_MODEL)
    parser.add_argument("--random-arch", choices=sorted(RANDOM_ARCHS))
    parser.add_argument("--n-prompts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--baseline-attn", default=None, help="HF side's attention (default: HF's own, sdpa)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=ec.project_path, help="write the timings as JSON")
    ec.add_smoke_flag(parser)
    smoke = {"n_prompts": 8, "batch_size": 4, "repeats": 1}
    return ec.parse(parser, smoke=smoke, smoke_out="collect_benchmark.json")


def runners(handle, hf, texts: list[str], batches: list, batch_size: int) -> dict:
    """The three timed calls: collect_residuals, the HF forward with hidden states, and the
    same without the unembedding (isolates the bridge's overhead)."""
    from refusal_lens.activations import CollectConfig, collect_residuals

    def run_collect(native: bool) -> None:
        handle.native_attention = native  # False: the bridge's own attention (the slow path)
        try:
            config = CollectConfig(batch_size=batch_size)
            collect_residuals(handle, texts, config, show_progress=False)
        finally:
            handle.native_attention = True

    def run_hf(body: bool) -> None:
        forward = hf.model if body else hf
        with torch.inference_mode():
            for b in batches:
                forward(
                    input_ids=b.input_ids,
                    attention_mask=b.attention_mask,
                    output_hidden_states=True,
                )

    return {
        "collect": lambda: run_collect(True),
        "collect_bridge_attention": lambda: run_collect(False),
        "hf": lambda: run_hf(False),
        "hf_body": lambda: run_hf(True),
    }


def time_runs(runs: dict, repeats: int, device: str) -> dict[str, list[float]]:
    """Each call once to warm up, then ``repeats`` interleaved timed rounds."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def report(args, label: str, handle, n_texts: int, n_tokens: int, times: dict) -> None:
    t_collect, t_hf = statistics.median(times["collect"]), statistics.median(times["hf"])
    t_body = statistics.median(times["hf_body"])
    t_slow = statistics.median(times["collect_bridge_attention"])
    print(
        f"model={label} device={args.device} dtype={args.dtype} prompts={n_texts} "
        f"batch={args.batch_size} tokens={n_tokens} layers={handle.n_layers} "
        f"positions={handle.chat.n_post}"
    )
    print(f"collect_residuals: {t_collect:.3f} s  ({n_tokens / t_collect:,.0f} tokens/s)")
    print(
        f"collect_residuals, bridge attention (slow path): {t_slow:.3f} s  "
        f"({n_tokens / t_slow:,.0f} tokens/s)"
    )
    print(f"HF forward (output_hidden_states): {t_hf:.3f} s  ({n_tokens / t_hf:,.0f} tokens/s)")
    print(f"HF body without lm_head (output_hidden_states): {t_body:.3f} s")
    print(f"ratio collect/HF = {t_collect / t_hf:.3f}  (target <= 1.10)")
    print(f"ratio collect (slow path)/HF = {t_slow / t_hf:.3f}")
    print(f"ratio collect/HF body = {t_collect / t_body:.3f}  (bridge overhead, unembedding aside)")
    if args.out:
        from refusal_lens.artifacts import write_json

        write_json(
            args.out,
            {
                "model": label,
                "device": args.device,
                "dtype": args.dtype,
                "prompts": n_texts,
                "batch_size": args.batch_size,
                "tokens": n_tokens,
                "layers": handle.n_layers,
                "times_s": times,
                "ratio_collect_hf": t_collect / t_hf,
                "ratio_collect_slow_path_hf": t_slow / t_hf,
                "ratio_collect_hf_body": t_collect / t_body,
            },
        )


def main() -> None:
    args = arguments()
    dtype = getattr(torch, args.dtype)
    from refusal_lens.prompts import length_sorted_batches

    if args.random_arch:
        handle, hf = random_handle(
            args.random_arch, args.device, dtype, baseline_attn=args.baseline_attn
        )
    else:
        handle, hf = bundled_handle(args.model, args.device, dtype)
    texts = make_prompts(args.n_prompts, args.seq_len)
    lengths = handle.chat.token_lengths(texts)
    batches = [
        handle.chat.tokenize([texts[i] for i in idx]).to(args.device)
        for idx in length_sorted_batches(lengths, args.batch_size)
    ]
    n_tokens = sum(int(b.attention_mask.sum()) for b in batches)
    times = time_runs(
        runners(handle, hf, texts, batches, args.batch_size), args.repeats, args.device
    )
    report(args, args.random_arch or args.model, handle, len(texts), n_tokens, times)


if __name__ == "__main__":
    main()
