"""Seed spread of the properties the bundled-model alignment test asserts.

    python experiments/alignment_seeds.py [--seeds 0 1 2 3 4]
    python experiments/alignment_seeds.py --report-only   # the .md again from the .json

``tests/test_alignment.py::test_lora_alignment_of_the_bundled_model_teaches_refusal`` aligns
SmolLM2-135M with a short LoRA recipe (``BUNDLED_TEST_RECIPE`` there) and asserts, on 24
held-out AdvBench prompts, that the mean refusal score rises by more than ``MIN_GAIN`` and that
at least ``MIN_REFUSED_AFTER`` of them are refused after (score > 0) while fewer were before.
This script runs that recipe for several alignment seeds and reports each quantity, so
the test's thresholds sit inside a measured margin. Writes ``figures/alignment_seeds.{json,md}``
(each share refused with its 95 % Wilson interval).
``--smoke``: a tiny random model, the recipe on 8 + 8 prompts with 4 answer tokens, one seed,
4 prompts (see ``common.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import (
    ROOT,
    SMOKE_ALIGN,
    hardware,
    load_by_path,
    parse,
    parser,
    share_text,
    write_text,
)

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


def measure(args: argparse.Namespace) -> dict:
    """The test's recipe at each seed: the record ``alignment_seeds.json`` holds."""
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
    return {
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
        "n": len(prompts),
    }


def report(summary: dict) -> str:
    """The table (each share refused with its 95 % Wilson interval on the n prompts) and note."""
    test, n = bundled_test(), summary["n"]
    lines = [
        f"| seed | mean score gain (test: > {test.MIN_GAIN}) "
        f"| share refused after (test: ≥ {test.MIN_REFUSED_AFTER}) |",
        "|---:|---:|---:|",
        *(
            f"| {r['seed']} | {r['gain']:+.2f} | {share_text(r['refused_after'], n)} |"
            for r in summary["rows"]
        ),
        "",
        f"Before alignment: mean score {summary['base_mean_score']:+.2f}, share refused "
        f"{share_text(summary['refused_before'], n)}. Recipe {summary['recipe']}. "
        f"Gain {summary['gain_mean']:+.2f} ± "
        f"{summary['gain_sd']:.2f} (mean ± sd over {len(summary['rows'])} seeds), minimum "
        f"{summary['gain_min']:+.2f}. {n} AdvBench prompts; [95 % Wilson interval] of each share "
        "refused on them (count: share × n). Per-prompt scores are not saved, so refusal after "
        "against before is not tested pairwise here. Made by "
        f"`python experiments/alignment_seeds.py` on {summary['hardware']} in "
        f"{summary['seconds']} s.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = parser(__doc__, n=24)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--report-only", action="store_true", help="the .md again from the JSON")
    args = parse(p, smoke={"n": 4, "seeds": [0]})
    path = args.out / "alignment_seeds.json"
    if args.report_only:
        summary = json.loads(path.read_text())
    else:
        summary = measure(args)
        write_json(path, summary)
    write_text(args.out / "alignment_seeds.md", report(summary))


if __name__ == "__main__":
    main()
