"""bfloat16 against float32: what loading a model in bfloat16 changes in what the stages read.

Each model is loaded twice on the CPU, in float32 and in bfloat16, and both read the same
seeded prompts (``--n`` each of AdvBench, Alpaca and XSTest's safe prompts):

- **residuals**, every layer at the post-instruction positions (``collect_residuals``, read
  out in float32): the relative error ``‖a₁₆ − a₃₂‖ / ‖a₃₂‖`` of each prompt's residual
  vector, its median and 95th percentile over prompts, at the worst layer, and the lowest
  cosine between the two;
- **the refusal direction**: the difference of the harmful and harmless means at every layer
  from 1 and every post-instruction position, its lowest cosine between the dtypes;
- **refusal scores** (``refusal_scores``): the largest and the mean absolute difference, and
  the prompts whose score verdict (above 0) flips;
- **verdicts**: greedy answers of ``--max-new-tokens`` tokens judged by the substring judge,
  the prompts whose verdict differs, the answers that are not identical, and the refusal
  rate of each set in each dtype with its 95 % interval.

``tests/test_dtype.py`` holds the bundled model to tolerances set from this table.

    python experiments/dtype_effect.py [--models smollm2-135m qwen2.5-coder-0.5b] [--n 32]
    python experiments/dtype_effect.py --smoke
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import torch
from common import hardware, parse, parser, rate_text, write_text

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.artifacts import write_json
from refusal_lens.models import load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.scoring import refusal_rates, refusal_scores

SETS = {"AdvBench": "advbench", "Alpaca": "alpaca", "XSTest-safe": "xstest-safe"}


def prompt_sets(n: int, seed: int = 0) -> dict:
    return {name: load_prompts(spec).sample(n, seed) for name, spec in SETS.items()}


def read(spec: str, dtype: str, sets: dict, max_new_tokens: int) -> dict:
    """What the stages read from ``spec`` loaded in ``dtype``, on every set."""
    model = load_model(spec, device="cpu", dtype=dtype)
    texts = [t for prompts in sets.values() for t in prompts.texts]
    quiet = dict(show_progress=False)
    out = {
        "residuals": collect_residuals(model, texts, CollectConfig(batch_size=16), **quiet).acts,
        "scores": refusal_scores(model, texts, 16, **quiet),
        "reports": refusal_rates(model, sets, ("substring",), max_new_tokens),
    }
    del model
    gc.collect()
    return out


def residual_effect(a32: torch.Tensor, a16: torch.Tensor, n_harmful: int) -> dict:
    """Per prompt relative error and cosine of the residual vectors, at the worst layer; the
    harmful-minus-harmless mean difference's cosine, at the worst layer."""
    error = (a16 - a32).norm(dim=-1) / a32.norm(dim=-1).clamp_min(1e-12)  # [prompt, layer, pos]
    cosine = torch.nn.functional.cosine_similarity(a16, a32, dim=-1)
    per_layer = error.transpose(0, 1).flatten(1)  # [layer, prompt × pos]

    def direction(a: torch.Tensor) -> torch.Tensor:
        return a[:n_harmful].mean(0) - a[n_harmful : 2 * n_harmful].mean(0)  # [layer, pos, d]

    # from layer 1: before the first block every prompt has the same template tokens at the
    # post-instruction positions, so the mean difference there is zero
    r_cos = torch.nn.functional.cosine_similarity(direction(a16), direction(a32), dim=-1)[1:]
    return {
        "median_error": float(per_layer.median(dim=1).values.max()),
        "p95_error": float(per_layer.quantile(0.95, dim=1).max()),
        "min_cosine": float(cosine.min()),
        "direction_min_cosine": float(r_cos.min()),
    }


def compare(spec: str, n: int, max_new_tokens: int) -> dict:
    sets = prompt_sets(n)
    start = time.time()
    f32, b16 = (read(spec, d, sets, max_new_tokens) for d in ("float32", "bfloat16"))
    s32, s16 = f32["scores"], b16["scores"]
    name = Path(spec).name if Path(spec).exists() else spec  # no machine path in the record
    record = {"model": name, "n": n, "max_new_tokens": max_new_tokens}
    record["residuals"] = residual_effect(f32["residuals"], b16["residuals"], n)
    record["scores"] = {
        "max_abs_diff": float((s16 - s32).abs().max()),
        "mean_abs_diff": float((s16 - s32).abs().mean()),
        "verdict_flips": int(((s16 > 0) != (s32 > 0)).sum()),
        "n": len(s32),
    }
    rows, flips, changed = {}, 0, 0
    for name in sets:
        r32, r16 = (x["reports"][name]["substring"] for x in (f32, b16))
        flips += sum(a != b for a, b in zip(r32.refused, r16.refused, strict=True))
        changed += sum(a != b for a, b in zip(r32.completions, r16.completions, strict=True))
        rows[name] = [sum(r32.refused), sum(r16.refused), len(r32.refused)]
    record["verdicts"] = {"flips": flips, "answers_changed": changed, "sets": rows}
    record["seconds"] = round(time.time() - start, 1)
    return record


def markdown(results: dict) -> str:
    head = (
        "| model | residual error, median (p95) at the worst layer | lowest cosine | r̂ cosine "
        "| refusal score: max (mean) abs. diff. | score verdicts flipped | substring verdicts "
        "flipped | answers changed |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in results["models"]:
        r, s, v = m["residuals"], m["scores"], m["verdicts"]
        total = s["n"]
        lines.append(
            f"| {m['model']} | {r['median_error']:.4f} ({r['p95_error']:.4f}) | "
            f"{r['min_cosine']:.4f} | {r['direction_min_cosine']:.4f} | "
            f"{s['max_abs_diff']:.3f} ({s['mean_abs_diff']:.3f}) | "
            f"{s['verdict_flips']} / {total} | {v['flips']} / {total} | "
            f"{v['answers_changed']} / {total} |"
        )
    lines += ["", "| model | set | refused, float32 | refused, bfloat16 |", "|---|---|---:|---:|"]
    for m in results["models"]:
        for name, (k32, k16, n) in m["verdicts"]["sets"].items():
            lines.append(f"| {m['model']} | {name} | {rate_text(k32, n)} | {rate_text(k16, n)} |")
    return (
        "\n".join(lines)
        + f"\n\nEach model loaded in float32 and in bfloat16 on the CPU; {results['n']} seeded "
        f"prompts of each set; residuals at every layer and post-instruction position, read in "
        f"float32; r̂ is the harmful-minus-harmless mean difference; answers greedy, "
        f"{results['max_new_tokens']} new tokens, substring judge. Made by "
        f"`{results['command']}` on {results['hardware']} in {results['minutes']:.0f} min.\n"
    )


def main() -> None:
    cli = parser(__doc__, n=32, max_new_tokens=32)
    cli.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    args = parse(cli, smoke={"n": 4, "max_new_tokens": 4})
    models = [args.model] if args.smoke else args.models
    start = time.time()
    results = {"models": [compare(m, args.n, args.max_new_tokens) for m in models]}
    results |= {
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "command": " ".join(["python experiments/dtype_effect.py", *sys.argv[1:]]),
        "hardware": hardware(),
        "minutes": (time.time() - start) / 60,
    }
    write_json(args.out / "dtype_effect.json", results)
    text = markdown(results)
    write_text(args.out / "dtype_effect.md", text)
    print(text)


if __name__ == "__main__":
    main()
