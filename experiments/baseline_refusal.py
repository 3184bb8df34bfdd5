"""Refusal of the *base* bundled model (before any safety alignment), under both judges.

DESIGN.md notes that base SmolLM2-135M-Instruct complies with harmful requests, like the
uncensored models paper 2 starts from; this table is the "before" of the alignment issue.

    python experiments/baseline_refusal.py [--n 100] [--data ../shared/data]

Writes ``figures/baseline_refusal.md`` (the README table), ``figures/baseline_refusal.json``
and ``figures/baseline_refusal_scores.png`` (refusal-score distribution per set). ``--smoke``:
a tiny random model, 4 prompts per set, 4 new tokens (see ``common.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from common import hardware, parse, parser, save_figure, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import rates_table
from refusal_lens.models import load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.scoring import refusal_rate


def prompt_specs(data: Path) -> dict[str, str]:
    return {
        "shipped harmful": "harmful",
        "shipped harmless": "harmless",
        "shipped borderline": "borderline",
        "XSTest safe": f"xstest-safe:{data / 'xstest_prompts.csv'}",
        "XSTest unsafe": f"xstest-unsafe:{data / 'xstest_prompts.csv'}",
        "AdvBench": f"advbench:{data / 'advbench.csv'}",
        "JailbreakBench": f"jailbreakbench:{data / 'jailbreakbench.csv'}",
        "Alpaca": f"alpaca:{data / 'alpaca_instructions.json'}",
    }


def plot_scores(scores: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(scores)
    ax.boxplot([scores[n] for n in names], orientation="horizontal", tick_labels=names)
    ax.axvline(0.0, color="crimson", linestyle="--")
    ax.text(
        -0.1,
        len(names) + 0.35,
        "refused above 0  (p(R) > 0.5)",
        color="crimson",
        ha="right",
        va="center",
        fontsize=9,
    )
    ax.set_ylim(0.4, len(names) + 0.7)
    ax.set_xlabel("refusal score  log p(R) − log(1 − p(R))  at the first answer token")
    ax.set_title("Base SmolLM2-135M-Instruct: refusal scores before alignment")
    save_figure(fig, path)


def main() -> None:
    cli = parser(__doc__, n=100, max_new_tokens=48)
    args = parse(cli, smoke={"n": 4, "max_new_tokens": 4})
    torch.manual_seed(0)
    start = time.time()
    model = load_model(args.model, device="cpu")
    rates: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    scores: dict[str, list[float]] = {}
    for name, spec in prompt_specs(args.data).items():
        prompts = load_prompts(spec).sample(args.n, seed=0)
        sizes[name] = len(prompts)
        by_score = refusal_rate(model, prompts, "score", batch_size=32)
        by_text = refusal_rate(
            model, prompts, "substring", max_new_tokens=args.max_new_tokens, batch_size=32
        )
        rates[name] = {"score": by_score.rate, "substring": by_text.rate}
        scores[name] = by_score.scores
        print(
            f"{name:20s} n={len(prompts):3d} score={by_score.rate:.1%} substring={by_text.rate:.1%}"
        )
    table = rates_table(rates, sizes)
    note = (
        f"\n\nModel `{args.model}`, greedy decoding, {args.max_new_tokens} new tokens for the "
        "substring judge, "
        f"seeded samples of ≤ {args.n} prompts per set. Made by "
        f"`python experiments/baseline_refusal.py` on {hardware()} in "
        f"{time.time() - start:.0f} s.\n"
    )
    write_text(args.out / "baseline_refusal.md", table + note)
    write_json(
        args.out / "baseline_refusal.json", {"rates": rates, "n": sizes, "config": vars(args)}
    )
    plot_scores(scores, args.out / "baseline_refusal_scores.png")
    print(table + note)


if __name__ == "__main__":
    main()
