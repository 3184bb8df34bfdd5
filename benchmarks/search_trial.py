"""Benchmark: one trial of the mitigation search against a plain HF forward pass, in one process.

A trial (``refusal_lens.mitigation.Objective.measure``) runs the model once over every
validation prompt under the edit's hooks and keeps the first answer position's logits. The
baseline is a plain HF model over the same batches (``logits_to_keep=1``, HF's default
attention). Both alternate and the median of the repeats is kept. The edit is an ablation of
two random directions with a kernel over the layers (hooks on every residual-stream write).
Prints seconds per trial, prompts per second and the ratio trial / HF (target ≤ 1.2), and
the cost of a trial judged by generation instead (``Objective(judge="substring")``:
``--tokens`` greedy tokens per benign and harmful prompt, the degeneration detector and the
refusal phrases) as a ratio to the one-forward trial; writes them as JSON with ``--out``.
``--smoke``: a tiny random model, 4 prompts per role, one repeat (see ``experiments/common.py``).

    python benchmarks/search_trial.py                              # bundled model, CPU
    python benchmarks/search_trial.py --random-arch llama3-8b --device cuda --dtype bfloat16
    python benchmarks/search_trial.py --smoke [--out /tmp/search_trial.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from collect import bundled_handle
from common import RANDOM_ARCHS, experiments_common, random_handle, sync

ec = experiments_common()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=ec.model_spec, default=ec.DEFAULT_MODEL)
    parser.add_argument("--random-arch", choices=sorted(RANDOM_ARCHS))
    parser.add_argument("--n", type=int, default=16, help="prompts per role (4 roles)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=24, help="generation judge's tokens")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=ec.project_path, default=None)
    ec.add_smoke_flag(parser)
    smoke = {"n": 4, "batch_size": 4, "repeats": 1, "tokens": 4}
    return ec.parse(parser, smoke=smoke, smoke_out="search_trial.json")


def validation_sets(n: int):
    from refusal_lens.mitigation import ValidationSets
    from refusal_lens.prompts import load_shipped

    harmful, harmless = load_shipped("harmful"), load_shipped("harmless")
    borderline = load_shipped("borderline")
    return ValidationSets(
        benign={"borderline": borderline.sample(n, 0)},
        harmful={"a": harmful.sample(n, 1), "b": harmful.sample(n, 2)},
        harmless=harmless.sample(n, 3),
    )


def edit_for(model):
    from refusal_lens.interventions import orthonormal_basis
    from refusal_lens.mitigation import Edit, EditConfig
    from refusal_lens.mitigation.edits import kernel_weights

    gen = torch.Generator().manual_seed(0)
    vectors = [torch.randn(model.d_model, generator=gen) for _ in range(2)]
    config = EditConfig(
        directions=("r", "w_prime"), where="kernel", peak=0.8,
        centre=model.n_layers / 2, width=model.n_layers / 3,
    )  # fmt: skip
    weights = kernel_weights(config, model.n_layers)
    return Edit(config, orthonormal_basis(vectors), weights, model.model_id)


def hf_pass(hf, objective, device: str) -> None:
    batches = [b for batches in objective.batches.values() for _, b in batches]
    batches += [b for _, b in objective.plain]
    with torch.inference_mode():
        for batch in batches:
            hf(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                logits_to_keep=1,
            )


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    from refusal_lens.mitigation import Objective

    args = arguments()
    dtype = getattr(torch, args.dtype)
    if args.random_arch:
        model, hf = random_handle(args.random_arch, args.device, dtype)
    else:
        model, hf = bundled_handle(args.model, args.device, dtype)
    sets = validation_sets(args.n)
    objective = Objective(model, sets, batch_size=args.batch_size, judge="score")
    said = Objective(model, sets, args.batch_size, judge="substring", max_new_tokens=args.tokens)
    edit = edit_for(model)
    trial, plain, generated = [], [], []
    for _ in range(args.repeats):
        trial.append(timed(lambda: objective.measure(edit, use_cache=False), args.device))
        plain.append(timed(lambda: hf_pass(hf, objective, args.device), args.device))
        generated.append(timed(lambda: said.measure(edit, use_cache=False), args.device))
    n = sum(sets.sizes().values())
    record = {
        "model": args.random_arch or args.model,
        "device": args.device,
        "dtype": args.dtype,
        "prompts": n,
        "threads": torch.get_num_threads(),
        "times_s": {"trial": trial, "hf": plain, "generation_trial": generated},
        "tokens": args.tokens,
        "seconds_per_generation_trial": statistics.median(generated),
        "ratio_generation_trial": statistics.median(generated) / statistics.median(trial),
        "seconds_per_trial": statistics.median(trial),
        "prompts_per_s": n / statistics.median(trial),
        "ratio_trial_hf": statistics.median(trial) / statistics.median(plain),
    }
    print(
        f"{record['model']} on {args.device} ({args.dtype}), {n} prompts: one trial "
        f"{record['seconds_per_trial']:.2f} s ({record['prompts_per_s']:.0f} prompts/s); "
        f"ratio trial/HF {record['ratio_trial_hf']:.2f} (target ≤ 1.2); judged by "
        f"generation ({args.tokens} tokens): {record['seconds_per_generation_trial']:.2f} s, "
        f"{record['ratio_generation_trial']:.1f}× the one-forward trial"
    )
    if args.out is not None:
        from refusal_lens.artifacts import write_json

        write_json(args.out, record)


if __name__ == "__main__":
    main()
