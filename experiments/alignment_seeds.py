"""Seed spread of the properties the bundled-model alignment test asserts.

    python experiments/alignment_seeds.py [--seeds 0 1 2 3 4]

``tests/test_alignment.py::test_lora_alignment_of_the_bundled_model_teaches_refusal`` aligns
SmolLM2-135M with a short LoRA recipe (``BUNDLED_TEST_RECIPE`` there) and asserts, on 24
held-out AdvBench prompts, that the mean refusal score rises by more than ``MIN_GAIN`` and that
at least ``MIN_REFUSED_AFTER`` of them are refused after (score > 0) while fewer were before.
This script runs that recipe for several alignment seeds and reports each quantity, so
the test's thresholds sit inside a measured margin. Writes ``figures/alignment_seeds.{json,md}``.
``--smoke``: a tiny random model, the recipe on 8 + 8 prompts with 4 answer tokens, one seed,
4 prompts (see ``common.py``).
"""

from __future__ import annotations

import statistics
import time

from common import ROOT, SMOKE_ALIGN, hardware, load_by_path, parse, parser, write_text

from refusal_lens.alignment import AlignConfig, align
from refusal_lens.artifacts import write_json
from refusal_lens.cache import library_versions
from refusal_lens.models import load_model
from refusal_lens.prompts import load_benchmark
from refusal_lens.scoring import refusal_scores


def bundled_test():
    """``tests/test_alignment.py``, for its recipe and thresholds (one source for both)."""
    return load_by_path("test_alignment", ROOT / "tests" / "test_alignment.py")


def test_recipe(seed: int, smoke: bool = False) -> AlignConfig:
    """The recipe of the bundled-model alignment test, at ``seed`` (with ``smoke``, on a few
    prompts)."""
    sizes = bundled_test().BUNDLED_TEST_RECIPE | (SMOKE_ALIGN if smoke else {})
    return AlignConfig.organism(**sizes, seed=seed)


def main() -> None:
    p = parser(__doc__, n=24)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parse(p, smoke={"n": 4, "seeds": [0]})
    start = time.time()
    prompts = load_benchmark("advbench")[: args.n]
    base_model = load_model(args.model, device="cpu")
    base = refusal_scores(base_model, prompts, show_progress=False)
    rows = []
    for seed in args.seeds:
        aligned_dir = align(base_model, test_recipe(seed, args.smoke)).path
        aligned = refusal_scores(
            load_model(str(aligned_dir), device="cpu"), prompts, show_progress=False
        )
        rows.append(
            {
                "seed": seed,
                "gain": float(aligned.mean() - base.mean()),
                "refused_after": float((aligned > 0).float().mean()),
            }
        )
        print(rows[-1], flush=True)
    gains = [r["gain"] for r in rows]
    shares = [r["refused_after"] for r in rows]
    summary = {
        "base_mean_score": float(base.mean()),
        "refused_before": float((base > 0).float().mean()),
        "gain_mean": statistics.mean(gains),
        "gain_sd": statistics.stdev(gains) if len(gains) > 1 else 0.0,
        "gain_min": min(gains),
        "refused_after_min": min(shares),
        "recipe": bundled_test().BUNDLED_TEST_RECIPE,
        "rows": rows,
        "libraries": library_versions(),
        "hardware": hardware(),
        "seconds": round(time.time() - start),
    }
    write_json(args.out / "alignment_seeds.json", summary)
    test = bundled_test()
    lines = [
        f"| seed | mean score gain (test: > {test.MIN_GAIN}) "
        f"| share refused after (test: ≥ {test.MIN_REFUSED_AFTER}) |",
        "|---:|---:|---:|",
        *(f"| {r['seed']} | {r['gain']:+.2f} | {r['refused_after']:.2f} |" for r in rows),
        "",
        f"Before alignment: mean score {summary['base_mean_score']:+.2f}, share refused "
        f"{summary['refused_before']:.2f}. Recipe {summary['recipe']}. "
        f"Gain {summary['gain_mean']:+.2f} ± "
        f"{summary['gain_sd']:.2f} (mean ± sd over {len(rows)} seeds), minimum "
        f"{summary['gain_min']:+.2f}. {args.n} AdvBench prompts. Made by "
        f"`python experiments/alignment_seeds.py` on {hardware()} in {summary['seconds']} s.",
    ]
    write_text(args.out / "alignment_seeds.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
