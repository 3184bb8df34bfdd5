"""Does the first-token judge fit a model aligned by its makers? Before and after fitting it.

For each model (the SmolLM2 organism refusal-lens aligns itself, α = 0.5, and
Qwen2.5-Coder-0.5B-Instruct as its makers aligned it):

1. greedy answers (32 new tokens) to seeded samples of AdvBench, the shipped harmful and
   harmless sets, XSTest-safe and Alpaca (``--n`` each); the substring judge's verdict on each;
2. the score judge as it was (phrase-derived refusal tokens, threshold 0) and fitted to those
   answers (``refusal_lens.calibration``: tokens that open the model's own refusals, the
   threshold that best separates refused from answered): agreement with the substring judge,
   overall and per set, fitted and scored on disjoint halves (two-fold, so the fit is not
   scored on the answers it was fitted to);
3. direction selection (``--n-train`` + ``--n-val`` prompts per class, ``--top-k``) with the
   judge as it was (induce > 0) and fitted (induce > the model's threshold): does a candidate
   pass, and with which scores.

    python experiments/judge_fit.py [--n 32] [--n-train 64] [--n-val 16] [--top-k 6]

Writes ``figures/judge_fit.{md,json}``.
"""

from __future__ import annotations

import time

import torch
from common import hardware, organism, parse, parser, smoke_model, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.calibration import Calibration, agreement, calibrate
from refusal_lens.directions import SelectConfig
from refusal_lens.directions.extract import diff_in_means
from refusal_lens.directions.find import train_val_split
from refusal_lens.directions.screening import select_direction
from refusal_lens.generation import generate
from refusal_lens.models import ModelHandle, load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.scoring import is_refusal, refusal_scores

SETS = ("advbench", "harmful", "xstest-safe", "harmless", "alpaca")
MODELS = {
    "SmolLM2-135M organism (aligned by refusal-lens)": "organism",
    "Qwen2.5-Coder-0.5B-Instruct (aligned by its makers)": "qwen2.5-coder-0.5b",
}


def answers(model: ModelHandle, n: int, seed: int, smoke: bool = False) -> dict[str, dict]:
    """Greedy answers and substring verdicts per set (in smoke mode, where a random model
    refuses nothing, the harmful sets' prompts count as refused so that both classes exist)."""
    out = {}
    for name in SETS:
        prompts = load_prompts(name).sample(n, seed)
        said = generate(model, prompts, 32, 16, show_progress=False)
        refused = [(smoke and name in ("advbench", "harmful")) or is_refusal(a) for a in said]
        out[name] = {"prompts": prompts.texts, "answers": said, "refused": refused}
    return out


def fit_two_fold(model: ModelHandle, data: dict[str, dict]) -> dict:
    """Fit on one half of every set, score on the other, and the other way round."""
    rows = [
        (s, p, a, r)
        for s, d in data.items()
        for p, a, r in zip(d["prompts"], d["answers"], d["refused"], strict=True)
    ]
    before = refusal_scores(model, [r[1] for r in rows], show_progress=False).tolist()
    folds, fitted = [rows[0::2], rows[1::2]], [0.0] * len(rows)
    fits = []
    for k in (0, 1):
        train, test_idx = folds[k], list(range(1 - k, len(rows), 2))
        fit = calibrate(model, [r[1] for r in train], [r[2] for r in train], [r[3] for r in train])
        fits.append(fit.to_dict())
        scores = refusal_scores(
            fit.apply(model), [rows[i][1] for i in test_idx], show_progress=False
        )
        for i, s in zip(test_idx, scores.tolist(), strict=True):
            fitted[i] = s - fit.threshold  # > 0: refused by the fitted judge
    refused = [r[3] for r in rows]
    per_set = {
        s: {
            "substring": _share([r[3] for r in rows if r[0] == s]),
            "score before": _share([b > 0 for b, r in zip(before, rows, strict=True) if r[0] == s]),
            "score fitted": _share([f > 0 for f, r in zip(fitted, rows, strict=True) if r[0] == s]),
        }
        for s in SETS
    }
    full = calibrate(model, [r[1] for r in rows], [r[2] for r in rows], refused)
    return {
        "n": len(rows),
        "agreement_before": agreement(before, refused, 0.0),
        "agreement_fitted_held_out": agreement(fitted, refused, 0.0),
        "per_set": per_set,
        "folds": fits,
        "fit_all": full.to_dict(),
    }


def _share(flags: list[bool]) -> float:
    return sum(flags) / max(len(flags), 1)


def selection_before_after(model: ModelHandle, fit: Calibration, args) -> dict:
    """Direction selection with the judge as it was, then fitted, on the same candidates."""
    h_train, h_val = train_val_split(load_prompts("harmful"), args.n_train, args.n_val, args.seed)
    b_train, b_val = train_val_split(load_prompts("harmless"), args.n_train, args.n_val, args.seed)
    candidates = diff_in_means(model, h_train, b_train, show_progress=False)
    out = {}
    for label, calibrated in (("before", False), ("fitted", True)):
        if calibrated:
            model = fit.apply(model)
        config = SelectConfig(top_k=args.top_k, induce_min=None)
        sel = select_direction(model, candidates, h_val, b_val, config, show_progress=False)
        d = sel.direction
        scored = sel.scored()
        out[label] = {
            "layer": d.layer,
            "position": d.position,
            "fallback": sel.fallback,
            "message": sel.message,
            "induce_min": model.refusal_threshold,
            "baseline": sel.baseline,
            "scores": {k: d.scores.get(k) for k in ("bypass", "induce", "kl")},
            "passed": sum(not c.filtered_by for c in scored),
            "filtered": {f: sum(f in c.filtered_by for c in scored) for f in ("induce", "kl")},
        }
    return out


def table(results: dict) -> str:
    head = ["model", "tokens added", "threshold", "agreement before", "fitted (held-out half)"]
    head += ["selection before", "selection fitted"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---|---|"]
    for name, r in results.items():
        fit, sel = r["judge"]["fit_all"], r["selection"]
        lines.append(
            f"| {name} | {' '.join(fit['added']) or 'none'} | {fit['threshold']:.2f} | "
            f"{100 * r['judge']['agreement_before']:.0f} % | "
            f"{100 * r['judge']['agreement_fitted_held_out']:.0f} % | "
            f"{_sel(sel['before'])} | {_sel(sel['fitted'])} |"
        )
    lines += ["", "| model | set | substring | score before | score fitted |"]
    lines.append("|---|---|---:|---:|---:|")
    for name, r in results.items():
        for s, v in r["judge"]["per_set"].items():
            cells = [f"{100 * v[k]:.0f}" for k in ("substring", "score before", "score fitted")]
            lines.append(f"| {name} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sel(s: dict) -> str:
    sc = s["scores"]
    head = "fallback" if s["fallback"] else f"{s['passed']} passed"
    return (
        f"{head}: layer {s['layer']}, bypass {sc['bypass']:.2f}, induce {sc['induce']:.2f} "
        f"(min {s['induce_min']:.2f}), KL {sc['kl']:.3f}"
    )


def main() -> None:
    p = parser(__doc__, n=32, n_train=64, n_val=16, top_k=6, seed=0)
    args = parse(p, smoke={"n": 4, "n_train": 6, "n_val": 4, "top_k": 2})
    torch.manual_seed(args.seed)
    start, results = time.time(), {}
    for name, spec in MODELS.items():
        if args.smoke:
            spec = smoke_model()
        elif spec == "organism":
            spec = str(organism("smollm2-135m"))
        model = load_model(spec, device="cpu")
        data = answers(model, args.n, args.seed + 5, args.smoke)
        judge = fit_two_fold(model, data)
        fit = Calibration.from_dict(judge["fit_all"])
        results[name] = {"judge": judge, "selection": selection_before_after(model, fit, args)}
    seconds = time.time() - start
    note = (
        f"Greedy answers, 32 new tokens, n = {args.n} per set (seeded); agreement with the "
        "substring judge; the fitted judge is scored on the half of the prompts it was not "
        f"fitted on (two folds). Selection: {args.n_train} + {args.n_val} prompts per class "
        f"(shipped harmful vs harmless), top {args.top_k}, KL < 0.1. Made by `python "
        f"experiments/judge_fit.py` on {hardware()} in {seconds:.0f} s."
    )
    arguments = {k: str(v) for k, v in vars(args).items()}
    write_json(args.out / "judge_fit.json", {"args": arguments, "results": results})
    write_text(args.out / "judge_fit.md", table(results) + "\n\n" + note + "\n")


if __name__ == "__main__":
    main()
