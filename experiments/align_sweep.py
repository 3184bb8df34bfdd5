"""The organism: safety-align the bundled model at α ∈ {1.0, 0.5, 0.2} and measure RR and ASR.

    python experiments/align_sweep.py [--alphas 1.0 0.5 0.2] [--n 64] [--data ../shared/data]
    python experiments/align_sweep.py --report-only   # the .md again from the .json
    python experiments/align_sweep.py --replot        # the .png again from the .json

Aligns with the default recipe (``AlignConfig``: LoRA r=16 on every linear layer, lr 5e-4, one
epoch, the 160 shipped harmful prompts → refusals and the first 200 Alpaca rows → the base
model's own 24-token answers), evaluates the base model and each aligned model with both judges
on held-out sets, and writes ``figures/align_sweep.{md,json,png}`` (each rate with its 95 %
Wilson interval). Aligned models are cached, so a rerun only re-evaluates. ``--smoke``: a tiny
random model aligned on a few prompts at α = 0.5, 4 prompts per set, 4 new tokens (see
``common.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from common import hardware, organism, parse, parser, save_figure, share_text, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import EvalConfig, degenerate_cell, evaluate
from refusal_lens.models import load_model


def plot(results: dict, alphas: list[float], judges: tuple[str, ...], path: Path) -> None:
    """RR (solid) and ASR (dashed) per set against α; the base model at the left, apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [-0.15, *alphas]
    fig, axes = plt.subplots(1, len(judges), figsize=(5.5 * len(judges), 4.6), sharey=True)
    axes = list(axes) if len(judges) > 1 else [axes]
    for ax, judge in zip(axes, judges, strict=True):
        for name, info in results["base"]["sets"].items():
            benign = info["kind"] == "benign"
            ys = [results["base"]["sets"][name][judge]]
            ys += [results[f"α={a:g}"]["sets"][name][judge] for a in alphas]
            (line,) = ax.plot(
                xs[1:],
                ys[1:],
                "-" if benign else "--",
                marker="o",
                label=f"{'RR' if benign else 'ASR'} {name}",
            )
            ax.plot(xs[0], ys[0], marker="o", mfc="none", color=line.get_color())
        ax.axvline(-0.05, color="grey", lw=0.8)
        ax.set_xticks(xs, ["base", *(f"{a:g}" for a in alphas)])
        ax.set_xlabel("α (weight of the harmful → refusal term)")
        ax.set_title(f"judge: {judge}")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of prompts")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        "SmolLM2-135M-Instruct after safety alignment: RR on benign sets (solid) and "
        "ASR on harmful sets (dashed)",
        fontsize=10,
    )
    fig.subplots_adjust(bottom=0.25)
    save_figure(fig, path, tight=False)


def sweep_table(results: dict[str, dict], judge: str) -> str:
    """Markdown: one row per model (``EvalResult.to_dict()``), RR per benign set and ASR per
    harmful set with the 95 % Wilson interval of the set's ``n`` prompts (count: rate × n),
    the degenerate share where the record has verdict counts, and the combined score."""
    first = next(iter(results.values()))["sets"]
    benign = [s for s, r in first.items() if r["kind"] == "benign"]
    harmful = [s for s, r in first.items() if r["kind"] == "harmful"]
    counted = all("counts" in r for res in results.values() for r in res["sets"].values())
    head = ["model", *(f"RR {s}" for s in benign), *(f"ASR {s}" for s in harmful)]
    head += ["degenerate", "combined"] if counted else ["combined"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, res in results.items():
        cells = [share_text(res["sets"][s][judge], res["sets"][s]["n"]) for s in benign + harmful]
        cells += [degenerate_cell(res["sets"], judge)] if counted else []
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {res['combined'][judge]:.2f} |")
    return "\n".join(lines)


def report(record: dict) -> str:
    """The tables (one per judge) and their note, from ``align_sweep.json``."""
    cfg = record["eval_config"]
    tables = "\n\n".join(
        f"**judge: {judge}**\n\n{sweep_table(record['results'], judge)}" for judge in cfg["judges"]
    )
    note = (
        f"\n\nRR = share of benign prompts refused; ASR = share of harmful prompts answered; "
        f"combined = mean RR + mean ASR (paper 2; lower is better); [95 % Wilson interval] of "
        f"each rate on its set's prompts. Seeded samples of {cfg['n']} held-out prompts per set; "
        f"substring judge on {cfg['max_new_tokens']} greedy tokens. The JSON keeps each rate "
        "and n, not per-prompt verdicts, so counts are rate × n and the models are not compared "
        "by a paired test here. Made by `python experiments/align_sweep.py` on "
        f"{record['hardware']}; wall time {record['wall_seconds'] / 60:.0f} min (alignment runs "
        "included unless cached: "
        + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in record["align"].items())
        + ").\n"
    )
    return tables + note


def measure(args: argparse.Namespace) -> dict:
    """Evaluate the base model and each aligned one; the record ``align_sweep.json`` holds."""
    torch.manual_seed(0)
    start = time.time()
    eval_config = EvalConfig(n=args.n, max_new_tokens=args.max_new_tokens)
    results, align_stats = {}, {}
    results["base"] = evaluate(load_model(args.model, device="cpu"), eval_config)
    print("base", results["base"].combined)
    for alpha in args.alphas:
        t0 = time.time()
        path = organism(args.model, alpha, smoke=args.smoke)
        align_stats[f"α={alpha:g}"] = {"path": str(path), "seconds": round(time.time() - t0, 1)}
        results[f"α={alpha:g}"] = evaluate(load_model(str(path), device="cpu"), eval_config)
        print(f"α={alpha:g}", results[f"α={alpha:g}"].combined)
    return {
        "results": {label: result.to_dict() for label, result in results.items()},
        "align": align_stats,
        "eval_config": asdict(eval_config),
        "alphas": args.alphas,
        "hardware": hardware(),
        "wall_seconds": round(time.time() - start),
    }


def main() -> None:
    cli = parser(__doc__, n=64, max_new_tokens=32)
    cli.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.5, 0.2])
    cli.add_argument("--replot", action="store_true", help="redraw the figure from the JSON")
    cli.add_argument("--report-only", action="store_true", help="the .md again from the JSON")
    args = parse(cli, smoke={"n": 4, "max_new_tokens": 4, "alphas": [0.5]})
    path = args.out / "align_sweep.json"
    if args.replot or args.report_only:
        record = json.loads(path.read_text())
    else:
        record = measure(args)
        write_json(path, record)
    if not args.report_only:
        judges = tuple(record["eval_config"]["judges"])
        plot(record["results"], record["alphas"], judges, args.out / "align_sweep.png")
    if args.replot:
        return
    text = report(record)
    write_text(args.out / "align_sweep.md", text)
    print(text)


if __name__ == "__main__":
    main()
