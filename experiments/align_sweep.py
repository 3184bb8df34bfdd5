"""The organism: safety-align the bundled model at α ∈ {1.0, 0.5, 0.2} and measure RR and ASR.

    python experiments/align_sweep.py [--alphas 1.0 0.5 0.2] [--n 64] [--data ../shared/data]

Aligns with the default recipe (``AlignConfig``: LoRA r=16 on every linear layer, lr 5e-4, one
epoch, the 160 shipped harmful prompts → refusals and the first 200 Alpaca rows → the base
model's own 24-token answers), evaluates the base model and each aligned model with both judges
on held-out sets, and writes ``figures/align_sweep.{md,json,png}``. Aligned models are cached,
so a rerun only re-evaluates. ``--smoke``: a tiny random model aligned on a few prompts at
α = 0.5, 4 prompts per set, 4 new tokens (see ``common.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from common import hardware, organism, parse, parser, save_figure, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import EvalConfig, evaluate, results_table
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


def main() -> None:
    cli = parser(__doc__, n=64, max_new_tokens=32)
    cli.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.5, 0.2])
    cli.add_argument("--replot", action="store_true", help="redraw the figure from the JSON")
    args = parse(cli, smoke={"n": 4, "max_new_tokens": 4, "alphas": [0.5]})
    if args.replot:
        saved = json.loads((args.out / "align_sweep.json").read_text())
        judges = tuple(saved["eval_config"]["judges"])
        plot(saved["results"], saved["alphas"], judges, args.out / "align_sweep.png")
        return
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
    wall = time.time() - start
    tables = "\n\n".join(
        f"**judge: {judge}**\n\n{results_table(results, judge)}" for judge in eval_config.judges
    )
    note = (
        f"\n\nRR = share of benign prompts refused; ASR = share of harmful prompts answered; "
        f"combined = mean RR + mean ASR (paper 2; lower is better). Seeded samples of "
        f"{args.n} held-out prompts per set; substring judge on {args.max_new_tokens} greedy "
        f"tokens. Made by `python experiments/align_sweep.py` on {hardware()}; wall time "
        f"{wall / 60:.0f} min (alignment runs included unless cached: "
        + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in align_stats.items())
        + ").\n"
    )
    write_text(args.out / "align_sweep.md", tables + note)
    write_json(
        args.out / "align_sweep.json",
        {
            "results": {label: result.to_dict() for label, result in results.items()},
            "align": align_stats,
            "eval_config": asdict(eval_config),
            "alphas": args.alphas,
            "hardware": hardware(),
            "wall_seconds": round(wall),
        },
    )
    plot(
        {k: r.to_dict() for k, r in results.items()},
        args.alphas,
        eval_config.judges,
        args.out / "align_sweep.png",
    )
    print(tables + note)


if __name__ == "__main__":
    main()
