"""Correctness on an accelerator: residuals and greedy answers against plain HF, per dtype.

For a randomly initialised full-size architecture (no weights can be downloaded on a lent GPU
machine) this compares, on the shipped prompts:

- ``collect_residuals`` (batched, padded, the attention fast path) against a plain HF forward
  of each prompt alone (``output_hidden_states``): the largest relative error
  ``‖a − b‖ / ‖b‖`` over prompts, layers and post-instruction positions;
- ``generate_ids`` (batched) against HF ``generate`` on each prompt alone, greedy: the share of
  prompts whose first token, and whose whole answer, is the same.

A random model has no refusal, so only agreement means anything here; near-ties between
logits make bf16 answers part ways sooner than float32 ones, which is why both are printed.

    python benchmarks/cuda_checks.py --random-arch qwen2.5-1.5b --device cuda --dtype bfloat16
    python benchmarks/cuda_checks.py --smoke          # tiny random model on the CPU
"""

from __future__ import annotations

import argparse

import torch
from common import RANDOM_ARCHS, experiments_common, random_handle

ec = experiments_common()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-arch", choices=sorted(RANDOM_ARCHS), default="qwen2.5-1.5b")
    parser.add_argument("--n-prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=ec.project_path, help="write the figures as JSON")
    ec.add_smoke_flag(parser)
    smoke = {"random_arch": "tiny", "n_prompts": 6, "batch_size": 4, "tokens": 4}
    return ec.parse(parser, smoke=smoke, smoke_out="cuda_checks.json")


def hf_batched_residuals(handle, hf, texts: list[str], batch_size: int) -> torch.Tensor:
    """Plain HF over the same padded batches (positions from the attention mask): the floor
    that padding and batching alone set in this dtype."""
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = handle.chat.tokenize(texts[start : start + batch_size]).to(handle.device)
        position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            hidden = hf(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids, output_hidden_states=True,
            ).hidden_states  # fmt: skip
        positions = list(range(-handle.chat.n_post, 0))
        rows.append(torch.stack([h[:, positions] for h in hidden[: handle.n_layers]], dim=1))
    return torch.cat(rows).float()


def residual_error(handle, hf, texts: list[str], batch_size: int, acts=None) -> float:
    from refusal_lens.activations import CollectConfig, collect_residuals

    if acts is None:
        acts = collect_residuals(
            handle, texts, CollectConfig(batch_size=batch_size), show_progress=False
        ).acts.float()
    positions = list(range(-handle.chat.n_post, 0))
    worst = 0.0
    for i, text in enumerate(texts):
        ids = handle.chat.tokenize([text]).input_ids.to(handle.device)
        with torch.inference_mode():
            hidden = hf(input_ids=ids, output_hidden_states=True).hidden_states
        expected = torch.stack([hidden[layer][0, positions] for layer in range(handle.n_layers)])
        got = acts[i].to(expected.device)
        err = (got - expected.float()).norm(dim=-1) / expected.float().norm(dim=-1)
        worst = max(worst, err.max().item())
    return worst


def stop_ids(handle) -> set[int]:
    eos = handle.hf_model.generation_config.eos_token_id or handle.tokenizer.eos_token_id
    return {eos} if isinstance(eos, int) else set(eos)


def hf_batched_answers(handle, hf, texts: list[str], batch_size: int, tokens: int) -> list:
    from refusal_lens.generation import cut_at_stop

    stops, out = stop_ids(handle), []
    for start in range(0, len(texts), batch_size):
        batch = handle.chat.tokenize(texts[start : start + batch_size]).to(handle.device)
        with torch.inference_mode():
            ids = hf.generate(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                do_sample=False, max_new_tokens=tokens, eos_token_id=sorted(stops),
                pad_token_id=min(stops),
            )  # fmt: skip
        new = ids[:, batch.input_ids.shape[1] :].tolist()
        out += [cut_at_stop(row, stops) for row in new]
    return out


def answer_agreement(handle, hf, texts: list[str], batch_size: int, tokens: int, ours=None) -> dict:
    from refusal_lens.generation import cut_at_stop, generate_ids

    if ours is None:
        ours = generate_ids(handle, texts, tokens, batch_size, show_progress=False)
    stops = stop_ids(handle)
    eos = sorted(stops)
    first = same = 0
    for text, mine in zip(texts, ours, strict=True):
        ids = handle.chat.tokenize([text]).input_ids.to(handle.device)
        with torch.inference_mode():
            out = hf.generate(
                input_ids=ids, do_sample=False, max_new_tokens=tokens,
                eos_token_id=eos, pad_token_id=min(stops),
            )  # fmt: skip
        theirs = cut_at_stop(out[0, ids.shape[1] :].tolist(), stops)
        first += mine[:1] == theirs[:1]
        same += mine == theirs
    return {"first_token_same": first / len(texts), "answer_same": same / len(texts)}


def main() -> None:
    from refusal_lens.prompts import load_shipped

    args = arguments()
    dtype = getattr(torch, args.dtype)
    handle, hf = random_handle(args.random_arch, args.device, dtype)
    texts = load_shipped("borderline").sample(args.n_prompts, 0).texts
    record = {
        "arch": args.random_arch,
        "device": args.device,
        "dtype": args.dtype,
        "prompts": len(texts),
        "residual_max_relative_error": residual_error(handle, hf, texts, args.batch_size),
        **answer_agreement(handle, hf, texts, args.batch_size, args.tokens),
        "tokens": args.tokens,
    }
    floor_acts = hf_batched_residuals(handle, hf, texts, args.batch_size)
    floor_ids = hf_batched_answers(handle, hf, texts, args.batch_size, args.tokens)
    floor = answer_agreement(handle, hf, texts, args.batch_size, args.tokens, ours=floor_ids)
    record["hf_batched"] = {
        "residual_max_relative_error": residual_error(
            handle, hf, texts, args.batch_size, acts=floor_acts
        ),
        **floor,
    }
    print(
        f"{args.random_arch} on {args.device} ({args.dtype}), {len(texts)} prompts: residuals "
        f"max rel. error {record['residual_max_relative_error']:.2e}; greedy answers "
        f"(batch {args.batch_size}, {args.tokens} tokens) vs HF generate alone: first token "
        f"{record['first_token_same']:.0%}, whole answer {record['answer_same']:.0%}"
    )
    base = record["hf_batched"]
    print(
        f"  floor, plain HF batched the same way vs HF alone: residuals "
        f"{base['residual_max_relative_error']:.2e}; first token {base['first_token_same']:.0%}, "
        f"whole answer {base['answer_same']:.0%}"
    )
    if args.out:
        from refusal_lens.artifacts import write_json

        write_json(args.out, record)


if __name__ == "__main__":
    main()
