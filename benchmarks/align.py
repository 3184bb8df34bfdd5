"""Benchmark: alignment training speed against a plain HF forward+backward, in one process.

Builds the default alignment data for the bundled model (shipped harmful → refusals, Alpaca →
cached self-distilled answers), then times on the same batches:

- ``refusal-lens``: one training step of ``alignment.train`` (answer-only logits, α-weighted
  loss, backward, AdamW step);
- ``HF``: ``model(input_ids, attention_mask, labels)`` (logits at every position) + backward.

Both use the same LoRA-wrapped model. Prints seconds per 1,000 training tokens and the ratio
(and writes them as JSON with ``--out``). ``--smoke``: a tiny random model, 8 + 8 prompts, two
batches (see ``experiments/common.py``).

    python benchmarks/align.py [--batches 8] [--mode lora|full] [--device cuda --dtype bfloat16]
    python benchmarks/align.py --smoke [--out /tmp/align.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import experiments_common

from refusal_lens.alignment.data import Example, collate, harmful_examples, tokenize_examples
from refusal_lens.alignment.train import (
    AlignConfig,
    answer_loss,
    example_weights,
    trainable_model,
    training_prompts,
)
from refusal_lens.artifacts import write_json
from refusal_lens.models import load_model

ec = experiments_common()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=ec.model_spec, default=ec.DEFAULT_MODEL)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--mode", default="lora")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--data", type=ec.project_path, default=ec.DATA)
    parser.add_argument("--out", type=ec.project_path, help="write the timings as JSON")
    ec.add_smoke_flag(parser)
    return ec.parse(parser, smoke={"batches": 2}, smoke_out="align_benchmark.json")


def training_batches(handle, config: AlignConfig, n_batches: int, device: str):
    """Tokenized rows of the recipe's examples (benign answers: a fixed stand-in of answer
    length, so the benchmark needs no generation), cut into ``n_batches`` mixed batches."""
    harmful, benign = training_prompts(config)
    examples = harmful_examples(harmful, False, 0) + [
        Example(p.text, "Here is a short and helpful answer to your question, step by step.", False)
        for p in benign
    ]
    eos = handle.tokenizer.convert_ids_to_tokens(handle.chat.post_instruction_ids[0])
    rows = tokenize_examples(handle.chat, examples, eos)
    flags = [e.harmful for e in examples]
    pad = handle.tokenizer.pad_token_id
    batches = []
    for b in range(n_batches):
        idx = list(range(b * config.batch_size, (b + 1) * config.batch_size))
        idx = [(i * 7) % len(rows) for i in idx]  # a mix of harmful and benign rows
        batches.append(collate([rows[i] for i in idx], [flags[i] for i in idx], pad).to(device))
    return batches, sum(flags), len(rows)


def time_steps(model, config: AlignConfig, batches, n_h: int, n_rows: int, device: str) -> dict:
    """Our training step against a plain HF forward+backward (logits at every position)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def ours(batch) -> None:
        w = example_weights(batch.harmful, config.alpha, n_h, n_rows - n_h)
        loss = (answer_loss(model, batch) * w).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def plain(batch) -> None:
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    ours(batches[0]), plain(batches[0])  # warm-up
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for batch in batches:
        for name, fn in (("ours", ours), ("plain", plain)):
            sync()
            start = time.perf_counter()
            fn(batch)
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    args = arguments()
    config = AlignConfig.organism(mode=args.mode, **(ec.SMOKE_ALIGN if args.smoke else {}))
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    batches, n_h, n_rows = training_batches(handle, config, args.batches, args.device)
    model = trainable_model(handle.path, config, handle.dtype, handle.device)
    times = time_steps(model, config, batches, n_h, n_rows, args.device)
    tokens = statistics.mean(int(b.attention_mask.sum()) for b in batches)
    t_ours, t_plain = statistics.median(times["ours"]), statistics.median(times["plain"])
    print(
        f"model={args.model} mode={args.mode} device={args.device} dtype={args.dtype} "
        f"batch={config.batch_size} tokens/batch={tokens:.0f}"
    )
    print(f"refusal-lens training step: {1000 * t_ours / tokens:.2f} s per 1,000 tokens")
    print(f"HF forward+backward:        {1000 * t_plain / tokens:.2f} s per 1,000 tokens")
    print(f"ratio refusal-lens/HF = {t_ours / t_plain:.3f}")
    if args.out:
        write_json(
            args.out,
            {
                "model": args.model,
                "mode": args.mode,
                "device": args.device,
                "dtype": args.dtype,
                "batch_size": config.batch_size,
                "tokens_per_batch": tokens,
                "seconds_per_1000_tokens": {
                    "refusal_lens": 1000 * t_ours / tokens,
                    "hf": 1000 * t_plain / tokens,
                },
                "ratio": t_ours / t_plain,
                "times_s": times,
            },
        )


if __name__ == "__main__":
    main()
