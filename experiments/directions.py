"""Refusal direction and false-refusal vector on the safety-aligned bundled model.

    python experiments/directions.py [--n 64] [--alpha 0.5] [--lambdas 1.0 0.8 0.6]

1. Extracts and selects the refusal direction ``r`` of the aligned SmolLM2 (α = 0.5, cached by
   ``align_sweep.py``; aligned here if missing) with the toolkit's defaults: 128 train + 32
   validation prompts per class, shipped harmful vs held-out Alpaca, screen then top 16.
   Every layer at the chosen position is then scored in full, for the figure.
2. Extracts the false-refusal vector ``w'`` (Wang et al.) from 100 shipped borderline prompts
   vs held-out Alpaca at ``r``'s layer and position, for each λ.
3. Measures refusal rates (both judges) on held-out sets, none of them used for any direction:
   AdvBench and XSTest-unsafe (harmful), Alpaca, the other 70 borderline prompts and
   XSTest-safe (benign), with no edit, with ``r`` ablated, with ``r`` added (coefficient 1)
   and with ``w'`` ablated; the first-token KL on Alpaca under ablation; and the refusal rate
   against the steering coefficient.

Writes ``figures/directions.{md,json}``, ``figures/directions_selection.png``,
``figures/directions_steering.png`` and the direction itself in ``figures/direction/``.
``--smoke``: a tiny random model aligned on a few prompts, 8 + 4 direction prompts per class,
4 prompts per set, 4 new tokens, one λ (see ``common.py``).
"""

from __future__ import annotations

import contextlib
import time

import matplotlib.pyplot as plt
import torch
from common import hardware, organism, parse, parser, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.directions import false_refusal_vector
from refusal_lens.directions.find import DirectionConfig, find_direction
from refusal_lens.directions.screening import ablation_kl, score_candidates
from refusal_lens.directions.selection import SelectConfig
from refusal_lens.directions.steer import steering_curve
from refusal_lens.directions.views import plot_selection, plot_steering
from refusal_lens.evaluation import held_out, training_prompts_of
from refusal_lens.interventions import ablate, add
from refusal_lens.models import load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.scoring import refusal_rates

JUDGES = ("score", "substring")
COEFS = [-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]


def eval_sets(args, model, used: list[str]) -> tuple[dict, list[str]]:
    """Held-out evaluation sets, and the borderline prompts left for extracting w'."""
    seen = training_prompts_of(model) + used
    borderline_train, borderline_eval = load_prompts("borderline").split(100, seed=0)
    spec = {
        "AdvBench": "advbench",
        "XSTest-unsafe": "xstest-unsafe",
        "Alpaca": "alpaca",
        "XSTest-safe": "xstest-safe",
    }
    sets = {name: held_out(load_prompts(s), seen, args.n, seed=1)[0] for name, s in spec.items()}
    sets["borderline (held out)"] = borderline_eval.sample(args.n, seed=1)
    return sets, borderline_train


def rates(model, sets, context, max_new_tokens: int) -> dict[str, dict[str, float]]:
    with context:
        reports = refusal_rates(model, sets, JUDGES, max_new_tokens, batch_size=32)
    return {name: {j: r.rate for j, r in by_judge.items()} for name, by_judge in reports.items()}


def table(results: dict, sets: list[str]) -> str:
    head = "| condition | " + " | ".join(sets) + " |\n|---|" + "---|" * len(sets) + "\n"
    rows = [
        f"| {cond} | "
        + " | ".join(f"{100 * r[s]['score']:.0f} / {100 * r[s]['substring']:.0f}" for s in sets)
        + " |"
        for cond, r in results.items()
    ]
    return head + "\n".join(rows) + "\n"


def arguments():
    cli = parser(__doc__, n=64, alpha=0.5, max_new_tokens=32)
    cli.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 0.8, 0.6])
    cli.add_argument("--n-train", type=int, default=128, help="direction train prompts per class")
    cli.add_argument("--n-val", type=int, default=32, help="validation prompts per class")
    cli.add_argument("--top-k", type=int, default=8, help="candidates fully scored")
    cli.add_argument(
        "--fallback-rule",
        choices=("kl", "bypass"),
        default="kl",
        help="when no candidate passes: lowest KL among those failing KL (kl), or lowest "
        "bypass (bypass: the rule the docs' direction figures were made with)",
    )
    smoke = {"n": 4, "max_new_tokens": 4, "lambdas": [1.0], "n_train": 8, "n_val": 4, "top_k": 2}
    return parse(cli, smoke=smoke)


def select(args, model):
    """The refusal direction, with every layer at its position scored in full (the figure)."""
    config = DirectionConfig(
        harmless="alpaca",
        n_train=args.n_train,
        n_val=args.n_val,
        select=SelectConfig(top_k=args.top_k, fallback_rule=args.fallback_rule),
    )
    selection = find_direction(model, config, show_progress=False)
    r = selection.direction
    todo = [
        (c.layer, c.position)
        for c in selection.table
        if c.position == r.position and c.bypass is None and "zero_norm" not in c.filtered_by
    ]
    p = selection.prompts
    scores = score_candidates(
        model, selection.candidates, p["harmful_val"], p["harmless_val"], todo, show_progress=False
    )
    for c in selection.table:
        if (c.layer, c.position) in scores:
            c.bypass, c.induce, c.kl = scores[(c.layer, c.position)]
    return selection


def interventions(args, model, selection):
    """Refusal rates under each edit, the w' directions, the KL and the steering curve."""
    r = selection.direction
    used = [t for texts in selection.prompts.values() for t in texts]
    sets, borderline_train = eval_sets(args, model, used)
    tokens = args.max_new_tokens
    results = {"no edit": rates(model, sets, contextlib.nullcontext(), tokens)}
    results["ablate r"] = rates(model, sets, ablate(model, r), tokens)
    results["add r (coef 1)"] = rates(model, sets, add(model, r, 1.0), tokens)
    seen = training_prompts_of(model) + used
    harmless_ref = held_out(load_prompts("alpaca"), seen, 100, seed=2)[0]
    w_dirs = {}
    for lam in args.lambdas:
        w = false_refusal_vector(model, borderline_train, harmless_ref, r, lam, show_progress=False)
        w_dirs[lam] = w
        results[f"ablate w' (λ={lam:g})"] = rates(model, sets, ablate(model, w), tokens)
    kl = ablation_kl(model, sets["Alpaca"], r)
    curve_sets = {k: sets[k] for k in ("Alpaca", "AdvBench", "XSTest-safe")}
    curve = steering_curve(model, curve_sets, r, COEFS)
    return list(sets), results, w_dirs, kl, curve


def write_outputs(args, selection, names, results, w_dirs, kl, curve, start: float) -> str:
    out, r = args.out, selection.direction
    selection.save(out / "direction")
    plt.close(plot_selection(selection, out / "directions_selection.png"))
    plt.close(plot_steering(COEFS, curve, out / "directions_steering.png"))
    write_json(
        out / "directions.json",
        {
            "direction": r.metadata(),
            "selection_message": selection.message,
            "false_refusal": {str(k): w.metadata() for k, w in w_dirs.items()},
            "refusal_rates": results,
            "kl_alpaca_ablated": kl,
            "steering": {"coefs": COEFS, "rates": curve},
            "n_per_set": args.n,
            "hardware": hardware(),
            "minutes": (time.time() - start) / 60,
        },
    )
    text = (
        f"Aligned SmolLM2-135M-Instruct (α = {args.alpha}); refusal direction at layer "
        f"{r.layer}, position {r.position} ({selection.message})\n\n"
        f"Refusal rate (%), score judge / substring judge, n = {args.n} per set:\n\n"
        + table(results, names)
        + f"\nFirst-token KL(base ‖ r ablated) on held-out Alpaca: {kl:.3f}\n\n"
        + f"cos(w, r) = {w_dirs[args.lambdas[0]].scores['cosine_w_r']:.3f}\n\n"
        + f"Made by `python experiments/directions.py` on {hardware()} in "
        + f"{(time.time() - start) / 60:.0f} min.\n"
    )
    write_text(out / "directions.md", text)
    return text


def main() -> None:
    args = arguments()
    torch.manual_seed(0)
    start = time.time()
    model = load_model(str(organism(args.model, args.alpha, smoke=args.smoke)), device="cpu")
    selection = select(args, model)
    print(selection.message, f"({time.time() - start:.0f} s)")
    names, results, w_dirs, kl, curve = interventions(args, model, selection)
    print(results, kl)
    print(write_outputs(args, selection, names, results, w_dirs, kl, curve, start))


if __name__ == "__main__":
    main()
