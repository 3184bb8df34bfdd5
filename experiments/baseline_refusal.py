"""Refusal of the *base* bundled model (before any safety alignment), under both judges.

DESIGN.md notes that base SmolLM2-135M-Instruct complies with harmful requests, like the
uncensored models paper 2 starts from; this table is the "before" of the alignment issue.

    python experiments/baseline_refusal.py [--n 100] [--data ../shared/data]
    python experiments/baseline_refusal.py --report-only   # the .md again from the .json

Writes ``figures/baseline_refusal.md`` (the docs' table: each rate with its 95 % Wilson
interval), ``figures/baseline_refusal.json`` and ``figures/baseline_refusal_scores.png``
(refusal-score distribution per set). ``--smoke``:
a tiny random model, 4 prompts per set, 4 new tokens (see ``common.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import hardware, parse, parser, save_figure, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import rates_table
from refusal_lens.models import load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.scoring import refusal_rates

PROMPT_SPECS = {
    "shipped harmful": "harmful",
    "shipped harmless": "harmless",
    "shipped borderline": "borderline",
    "XSTest safe": "xstest-safe",
    "XSTest unsafe": "xstest-unsafe",
    "AdvBench": "advbench",
    "JailbreakBench": "jailbreakbench",
    "Alpaca": "alpaca",
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


def measure(args: argparse.Namespace) -> dict:
    """Both judges on every set; writes the JSON and the score plot and returns the record."""
    torch.manual_seed(0)
    start = time.time()
    model = load_model(args.model, device="cpu")
    sets = {name: load_prompts(spec).sample(args.n, seed=0) for name, spec in PROMPT_SPECS.items()}
    reports = refusal_rates(model, sets, ("score", "substring"), args.max_new_tokens, 32)
    rates = {name: {j: r.rate for j, r in by_judge.items()} for name, by_judge in reports.items()}
    sizes = {name: len(prompts) for name, prompts in sets.items()}
    scores = {name: by_judge["score"].scores for name, by_judge in reports.items()}
    for name, rate in rates.items():
        print(
            f"{name:20s} n={sizes[name]:3d} score={rate['score']:.1%} "
            f"substring={rate['substring']:.1%}"
        )
    config = {k: v for k, v in vars(args).items() if k != "report_only"}
    record = {"rates": rates, "n": sizes, "config": config, "hardware": hardware()}
    record["seconds"] = round(time.time() - start)
    write_json(args.out / "baseline_refusal.json", record)
    plot_scores(scores, args.out / "baseline_refusal_scores.png")
    return record


def report(record: dict) -> str:
    """The table (each rate with its 95 % Wilson interval) and its note, from the record."""
    cfg = record["config"]
    note = (
        f"\n\nModel `{cfg['model']}`, greedy decoding, {cfg['max_new_tokens']} new tokens for "
        f"the substring judge, seeded samples of ≤ {cfg['n']} prompts per set; [95 % Wilson "
        "interval] of each rate, its count taken as rate × n (the JSON keeps the rates and n). "
        f"Made by `python experiments/baseline_refusal.py` on {record['hardware']} in "
        f"{record['seconds']} s.\n"
    )
    return rates_table(record["rates"], record["n"]) + note


def main() -> None:
    cli = parser(__doc__, n=100, max_new_tokens=48)
    cli.add_argument(
        "--report-only", action="store_true", help="rewrite the .md from baseline_refusal.json"
    )
    args = parse(cli, smoke={"n": 4, "max_new_tokens": 4})
    if args.report_only:
        record = json.loads((args.out / "baseline_refusal.json").read_text())
    else:
        record = measure(args)
    text = report(record)
    write_text(args.out / "baseline_refusal.md", text)
    print(text)


if __name__ == "__main__":
    main()
