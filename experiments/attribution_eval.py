"""Faithfulness of the four token-attribution methods on the over-refusing SmolLM2.

    python experiments/attribution_eval.py [--n 20] [--steps 16] [--k-max 5] [--draws 5]
        [--threads 1] [--report-only]

On up to ``n`` held-out prompts per source that the aligned SmolLM2 (α = 0.5, cached by
``align_sweep.py``; aligned here if missing) refuses (refusal score > 0), or with ``--run
runs/<model>`` the model that run studied (its score fitted: refused = score above the fitted
threshold) and its direction, drawn in a seeded
order from XSTest-safe (trigger = XSTest's ``focus`` word) and the shipped borderline set
(trigger = the project's annotation), each method of ``attribute()`` (occlusion,
grad_x_input, integrated_gradients with ``steps`` points, projection on the refusal direction
in ``figures/direction``) is measured by

1. agreement with the annotated trigger: each user token is labelled 1 if its characters
   overlap an occurrence of the trigger (case-insensitive, starting at a word start), and the
   AUROC of the token scores against the labels is taken pooled over all tokens and as the
   mean of per-prompt AUROCs (prompts with both labels); prompts whose trigger is missing from
   the text are left out of this measure and counted;
2. deletion: the drop in refusal score (and the share no longer refused) when the top-k
   attributed tokens are deleted, k = 1..k_max (at most the prompt's length − 1), against
   deleting k random user tokens (``draws`` seeded draws per prompt, nested like the top-k);
   AUC = the mean drop over k = 1..k_max;
3. wall-clock time per prompt of ``attribute()`` (model loaded, methods one after another).

Writes ``figures/attribution_eval.{md,json,png}``; ``--report-only`` rebuilds the .md and .png
from the .json. ``--direction`` names the saved direction (default ``figures/direction``).
``--smoke``: a tiny random model aligned on a few prompts, with half its vocabulary counted as
refusal openings (a random model refuses nothing), a direction selected on a few prompts
(written to ``OUT/direction``), 2 prompts per source, 2 steps, k ≤ 2, 2 draws (see
``common.py``).
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from common import (
    hardware,
    organism,
    parse,
    parser,
    project_path,
    save_figure,
    share_text,
    smoke_direction,
    smoke_refuser,
    write_text,
)

from refusal_lens.artifacts import write_json
from refusal_lens.attribution.methods import (
    METHODS,
    AttributionConfig,
    TokenAttribution,
    attribute,
    scores_without,
)
from refusal_lens.directions import Direction
from refusal_lens.evaluation import held_out, training_prompts_of
from refusal_lens.models import ModelHandle, load_model
from refusal_lens.pipeline import load_run_model
from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.probes import auroc as probe_auroc
from refusal_lens.prompts import Prompt, PromptSet, load_prompts
from refusal_lens.scoring import refusal_scores

DIRECTION = Path("figures/direction")  # from the project root
COLORS = {
    "occlusion": "tab:blue",
    "grad_x_input": "tab:orange",
    "integrated_gradients": "tab:green",
    "projection": "tab:purple",
    "random": "0.45",
}


SOURCES = {"XSTest-safe": "xstest-safe", "borderline": "borderline"}


# --- prompts ---------------------------------------------------------------------------------


def refused_sample(
    model: ModelHandle, prompts: PromptSet, seen: list[str], n: int, seed: int
) -> tuple[list[Prompt], dict]:
    """The first ``n`` refused prompts of a seeded shuffle of the held-out ones (scored in
    chunks, so only as many prompts are scored as are needed)."""
    pool, dropped = held_out(prompts, seen, len(prompts), seed)
    order = list(pool)
    random.Random(seed).shuffle(order)
    kept: list[Prompt] = []
    scored = 0
    for start in range(0, len(order), 2 * n):
        chunk = order[start : start + 2 * n]
        scores = refusal_scores(model, [p.text for p in chunk], show_progress=False)
        refused = scores > model.refusal_threshold  # 0 unless the model's score was fitted
        kept += [p for p, r in zip(chunk, refused.tolist(), strict=True) if r]
        scored += len(chunk)
        if len(kept) >= n:
            break
    info = {
        "held_out": len(pool),
        "dropped_as_trained": dropped,
        "scored": scored,
        "refused_of_scored": len(kept),
    }
    return kept[:n], info


def trigger_labels(model: ModelHandle, a: TokenAttribution, trigger: str | None):
    """0/1 per user token: does it overlap the trigger? ``(None, why)`` where undefined.

    Prompts whose token strings do not concatenate to the prompt (or whose ids do not decode
    to it) get no labels; otherwise token character spans come from decoding the ids
    cumulatively."""
    text = a.prompt.strip()
    if not trigger:
        return None, "no trigger annotated"
    if model.tokenizer.decode(a.token_ids) != text or "".join(a.tokens) != text:
        return None, "tokens do not reproduce the prompt"
    hits = [
        m.span() for m in re.finditer(rf"(?<![a-z0-9]){re.escape(trigger.lower())}", text.lower())
    ]
    if not hits:
        return None, f"trigger {trigger!r} not in the prompt"
    ends = [len(model.tokenizer.decode(a.token_ids[: i + 1])) for i in range(len(a.token_ids))]
    spans = zip([0, *ends[:-1]], ends, strict=True)
    labels = [int(any(s < he and hs < e for hs, he in hits)) for s, e in spans]
    return labels, ""


# --- measures --------------------------------------------------------------------------------


def auroc(scores, labels) -> float | None:
    """AUROC of ``scores`` for the binary ``labels`` (``refusal_lens.probes.auroc``)."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    return probe_auroc(s[y], s[~y])


def deletion_sets(scores: torch.Tensor, k_max: int) -> list[list[int]]:
    """The top-k user tokens by attribution score, k = 1..min(k_max, n − 1) (stable ties)."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    return [sorted(order[:k]) for k in range(1, min(k_max, len(order) - 1) + 1)]


def random_sets(n_tokens: int, k_max: int, draws: int, rng: random.Random) -> list[list[list[int]]]:
    """``draws`` random orders of the user tokens, each cut at k = 1..min(k_max, n − 1)."""
    out = []
    for _ in range(draws):
        order = rng.sample(range(n_tokens), n_tokens)
        out.append([sorted(order[:k]) for k in range(1, min(k_max, n_tokens - 1) + 1)])
    return out


def deletions(model: ModelHandle, text: str, sets: dict[str, list[list[int]]]) -> dict:
    """Base refusal score and the score after each deletion, one batched call per prompt;
    identical token sets (methods often agree at k = 1) are scored once."""
    unique = sorted({tuple(d) for ds in sets.values() for d in ds})
    after = scores_without(model, text, [[], *map(list, unique)]).tolist()
    base, score_of = after[0], dict(zip(unique, after[1:], strict=True))
    return {"base": base, **{name: [score_of[tuple(d)] for d in ds] for name, ds in sets.items()}}


def curve(rows: list[dict], name: str, k_max: int) -> dict:
    """Mean drop and share no longer refused at each k, over the prompts long enough for k."""
    out: dict = {"k": [], "n": [], "drop": [], "unrefused": []}
    for k in range(1, k_max + 1):
        at_k = [(r["base"], r[name][k - 1], r["threshold"]) for r in rows if len(r[name]) >= k]
        if not at_k:
            break
        out["k"].append(k)
        out["n"].append(len(at_k))
        out["drop"].append(float(np.mean([b - a for b, a, _ in at_k])))
        out["unrefused"].append(float(np.mean([a <= t for _, a, t in at_k])))
    out["auc"] = float(np.mean(out["drop"]))
    return out


def agreement(details: list[dict], method: str) -> dict:
    """Pooled and mean per-prompt AUROC of one method over prompts with trigger labels."""
    rows = [d for d in details if d["labels"] is not None]
    pooled = auroc(
        [s for d in rows for s in d["scores"][method]], [y for d in rows for y in d["labels"]]
    )
    each = [auroc(d["scores"][method], d["labels"]) for d in rows]
    each = [a for a in each if a is not None]
    return {
        "pooled": pooled,
        "per_prompt_mean": float(np.mean(each)) if each else None,
        "n_prompts": len(rows),
        "n_prompts_both_labels": len(each),
        "n_tokens": sum(len(d["labels"]) for d in rows),
        "n_positive": sum(sum(d["labels"]) for d in rows),
    }


# --- report ----------------------------------------------------------------------------------


def plot(curves: dict, path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, c in curves.items():
        style = {"color": COLORS[name], "marker": "o", "label": name}
        if name == "random":
            style.update(linestyle="--", marker="s", label="random tokens")
        axes[0].plot(c["k"], c["drop"], **style)
        axes[1].plot(c["k"], [100 * u for u in c["unrefused"]], **style)
    axes[0].set(xlabel="user tokens deleted (k)", ylabel="mean drop in refusal score (log-odds)")
    axes[1].set(xlabel="user tokens deleted (k)", ylabel="prompts no longer refused (%)")
    for ax in axes:
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(curves["random"]["k"])
        ax.grid(alpha=0.3)
    fig.suptitle("Deleting the top-attributed user tokens, aligned SmolLM2 (α = 0.5)")
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=5)
    save_figure(fig, path, tight=False)


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def table(summary: dict, source_names: list[str], ks: tuple[int, ...]) -> str:
    head = (
        ["method"]
        + [f"AUROC {s} (pooled / per-prompt)" for s in source_names]
        + [f"drop k={k}" for k in ks]
        + ["AUC ± SE", "AUC − random ± SE", f"unrefused at k={ks[-1]}", "s/prompt"]
    )
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, row in summary.items():
        c, auroc_of = row["deletion"], row.get("auroc")
        cells = [
            f"{fmt(auroc_of[s]['pooled'])} / {fmt(auroc_of[s]['per_prompt_mean'])}"
            if auroc_of
            else "–"
            for s in source_names
        ]
        cells += [fmt(c["drop"][k - 1]) if k <= len(c["drop"]) else "–" for k in ks]
        cells.append(f"{c['auc']:.2f} ± {c['auc_se']:.2f}")
        vs = row.get("vs_random")
        cells.append(f"{vs['mean']:+.2f} ± {vs['se']:.2f}" if vs else "–")
        k = ks[-1] - 1
        cells += [share_text(c["unrefused"][k], c["n"][k]), fmt(row.get("seconds_per_prompt"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(results: dict) -> str:
    """The 'what this shows' paragraph, from the numbers. Recommendation rule: the method with
    the largest deletion AUC (the measure of what the refusal score depends on), unless a
    cheaper one is within 10 % of it."""
    summary, trig = results["summary"], results["trigger_deletion"]
    methods = [m for m in summary if m != "random"]
    auc = {m: summary[m]["deletion"]["auc"] for m in methods}
    cost = {m: summary[m]["seconds_per_prompt"] for m in methods}
    vs = {m: summary[m]["vs_random"] for m in methods}
    ranked = sorted(methods, key=lambda m: -auc[m])
    best = ranked[0]
    close = [m for m in ranked if auc[m] >= 0.9 * auc[best] and cost[m] < cost[best]]
    pick = min(close, key=lambda m: cost[m]) if close else best
    rnd = summary["random"]["deletion"]
    beats = [m for m in methods if vs[m]["mean"] > 2 * vs[m]["se"]]
    below = [m for m in methods if vs[m]["mean"] < 0]
    drops = {m: summary[m]["deletion"]["drop"] for m in methods}
    leads = all(drops[best][i] >= max(d[i] for d in drops.values()) for i in range(len(rnd["k"])))
    aurocs = [
        a["per_prompt_mean"]
        for m in methods
        for a in summary[m]["auroc"].values()
        if a["per_prompt_mean"] is not None
    ]
    top = ", ".join(f"'{t.strip()}' ({c})" for t, c in results["occlusion_top1_tokens"][:4])
    parts = [
        "Deletion, the direct test of what the refusal score depends on, ranks "
        + ", ".join(f"{m} ({auc[m]:+.2f})" for m in ranked)
        + f" by AUC; deleting random tokens gives {rnd['auc']:+.2f}"
        + (", so broken text by itself barely moves the score. " if abs(rnd["auc"]) < 0.2 else ". ")
        + f"{', '.join(beats) or 'No method'} beat{'s' if len(beats) == 1 else ''} random "
        "deletion by more than two standard errors"
        + (
            f"; {', '.join(below)} fall{'s' if len(below) == 1 else ''} below it. "
            if below
            else ". "
        ),
        f"{best} leads at every k, also for k > 1, where its lead is not given by construction "
        "(its top-1 deletion is the best single-token deletion by definition). "
        if leads
        else "",
        f"Agreement with the annotated triggers is weak for every method (per-prompt AUROC "
        f"{min(aurocs):.2f}–{max(aurocs):.2f}; 0.5 is chance), and deleting the trigger tokens "
        f"themselves changes the refusal score by {-trig['drop']:+.2f} ± {trig['drop_se']:.2f} "
        f"on average ({share_text(trig['unrefused'], trig['n'])} of {trig['n']} prompts no "
        "longer refused), "
        f"against {-trig['random_same_k_drop']:+.2f} for as many random tokens and "
        f"{-trig['occlusion_top1_drop']:+.2f} for occlusion's single top token. ",
        "On this model the over-refusal is carried less by the words that make a prompt look "
        f"unsafe than by the request frame (occlusion's most frequent top tokens: {top}), so "
        "agreement with trigger annotations cannot rank the methods here; deletion can. "
        if trig["drop"] < 0.5 * trig["occlusion_top1_drop"]
        else "",
        f"Recommended default: **{pick}**"
        + (" (the current one)" if pick == "occlusion" else "")
        + f": {auc[pick]:+.2f} AUC at {cost[pick]:.2f} s/prompt"
        + (
            " (one forward pass per user token, so its cost grows with prompt length). "
            if pick == "occlusion"
            else ". "
        )
        + " ".join(
            f"{m} is {cost[pick] / cost[m]:.1f}× faster but reaches only {auc[m]:+.2f}."
            if cost[m] < cost[pick]
            else f"{m} is {cost[m] / cost[pick]:.1f}× slower and reaches {auc[m]:+.2f}."
            for m in ranked
            if m != pick
        ),
    ]
    return "".join(parts)


def markdown(results: dict) -> str:
    cfg, summary, details = results["config"], results["summary"], results["prompts"]
    source_names = list(results["selection"])
    ks = tuple(k for k in (1, 3, 5) if k <= cfg["k_max"])
    rnd = summary["random"]["deletion"]
    n_src = {s: sum(d["source"] == s for d in details) for s in source_names}
    agree = summary["occlusion"]["auroc"]
    studied = (
        f"The model of run `{cfg['run']}` (refused: score above its fitted threshold)"
        if cfg.get("run")
        else "Aligned SmolLM2-135M-Instruct (α = 0.5)"
    )
    return (
        studied
        + "; refused held-out prompts: "
        + ", ".join(f"{n_src[s]} {s}" for s in source_names)
        + f". Integrated gradients with {cfg['steps']} steps; projection on the refusal "
        f"direction (layer {results['direction']['layer']}, "
        f"`{cfg.get('direction', DIRECTION)}`).\n\n"
        + table(summary, source_names, ks)
        + "\n\nAUROC: token scores against the annotated trigger (1 = the token overlaps the "
        "trigger word), pooled over all tokens / mean of per-prompt AUROCs; 0.5 is chance. "
        + " ".join(
            f"{s}: {agree[s]['n_prompts']} prompts with the trigger in the text "
            f"({agree[s]['n_positive']} of {agree[s]['n_tokens']} tokens positive), "
            f"{n_src[s] - agree[s]['n_prompts']} left out (no trigger annotated, or not in the "
            "text)."
            for s in source_names
        )
        + " Drop: mean fall in refusal score (log-odds) when the top-k tokens are deleted; AUC "
        f"= mean drop over k = 1..{cfg['k_max']} (SE over prompts); AUC − random: paired per "
        "prompt; unrefused: share of prompts whose score falls to the refusal threshold or "
        "below, with its [95 % Wilson interval] on the prompts deleted at that k. **Random "
        "deletion** of "
        f"k user tokens ({cfg['draws']} seeded draws per prompt): "
        + ", ".join(f"k={k} {d:+.2f}" for k, d in zip(rnd["k"], rnd["drop"], strict=True))
        + f" (AUC {rnd['auc']:+.2f} ± {rnd['auc_se']:.2f}, "
        f"{share_text(rnd['unrefused'][-1], rnd['n'][-1])} unrefused at k={rnd['k'][-1]}). "
        "s/prompt: wall clock of `attribute()` over all "
        f"{len(details)} prompts (batch 8), model loaded, methods run one after another.\n\n"
        + f"Made by `{cfg['command']}` on {results['hardware']} (load average "
        f"{results['load_average']:.1f} at the start, beside other jobs) in "
        f"{results['minutes']:.0f} min.\n\n" + "What this shows: " + findings(results) + "\n"
    )


# --- measurement -----------------------------------------------------------------------------


def refused_prompts(model, seen: list[str], args) -> tuple[list[tuple[str, Prompt]], dict]:
    """Step 1: prompts the aligned model refuses and was not trained on, per source."""
    prompts: list[tuple[str, Prompt]] = []
    selection = {}
    for name, spec in SOURCES.items():
        kept, selection[name] = refused_sample(model, load_prompts(spec), seen, args.n, args.seed)
        prompts += [(name, p) for p in kept]
        print(name, selection[name])
    return prompts, selection


def timed_attributions(model, texts: list[str], direction, args) -> tuple[dict, dict]:
    """Step 2: every method over all prompts, timed per prompt after one warm-up prompt."""
    attributions: dict[str, list[TokenAttribution]] = {}
    seconds = {}
    for method in METHODS:
        config = AttributionConfig(method, steps=args.steps, attribute_unrefused=True)
        attribute(model, texts[:1], config, direction=direction)
        t0 = time.perf_counter()
        attributions[method] = list(attribute(model, texts, config, direction=direction))
        seconds[method] = (time.perf_counter() - t0) / len(texts)
        print(f"{method}: {seconds[method]:.2f} s/prompt")
    return attributions, seconds


def prompt_detail(model, source: str, p: Prompt, attributions: dict, args, rng) -> dict:
    """Step 3, one prompt: deletion curves of every method and of random draws, and the
    trigger labels."""
    a = attributions["occlusion"]
    labels, why = trigger_labels(model, a, p.trigger)
    scores = {m: attributions[m].scores for m in METHODS}
    sets = {m: deletion_sets(s, args.k_max) for m, s in scores.items()}
    draws = random_sets(len(a.tokens), args.k_max, args.draws, rng)
    sets.update({f"random{d}": ds for d, ds in enumerate(draws)})
    trigger = [j for j, y in enumerate(labels or []) if y]
    if trigger and len(trigger) < len(a.tokens):
        sets["trigger"] = [trigger]
    after = deletions(model, p.text, sets)
    random_after = np.mean([after[f"random{d}"] for d in range(args.draws)], axis=0)
    return {
        "source": source,
        "prompt": p.text,
        "trigger": p.trigger,
        "tokens": a.tokens,
        "labels": labels,
        "label_note": why,
        "refusal_score": after["base"],
        "threshold": model.refusal_threshold,  # refused: score above it
        "scores": {m: s.tolist() for m, s in scores.items()},
        "deleted": {m: sets[m] for m in METHODS},
        "after": {m: after[m] for m in METHODS} | {"random": random_after.tolist()},
        "trigger_after": after["trigger"][0] if "trigger" in after else None,
        # occlusion's top-1 deletion is its largest score, by definition
        "occlusion_k1_check": float(scores["occlusion"].max())
        - (after["base"] - after["occlusion"][0]),
    }


def measure(args) -> dict:
    start, load = time.time(), os.getloadavg()[0]
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    if args.run is not None:  # the model and direction of a finished run
        model = load_run_model(args.run, device="cpu")
        args.direction = args.run / FOLDERS["direction"]
    else:
        model = load_model(str(organism(args.model, smoke=args.smoke)), device="cpu")
    if args.smoke:
        model = smoke_refuser(model)
    if args.direction is None:  # smoke mode
        args.direction = smoke_direction(model, args.out / "direction")
    direction = Direction.load(args.direction)
    prompts, selection = refused_prompts(model, training_prompts_of(model), args)
    attributions, seconds = timed_attributions(model, [p.text for _, p in prompts], direction, args)
    details = [
        prompt_detail(model, source, p, {m: attributions[m][i] for m in METHODS}, args, rng)
        for i, (source, p) in enumerate(prompts)
    ]
    return {
        "config": vars(args) | {"command": command_line()},
        "model": str(model.path),
        "direction": direction.metadata(),
        "selection": selection,
        "summary": summarize(details, list(selection), seconds, args.k_max),
        "trigger_deletion": trigger_deletion(details),
        "occlusion_top1_tokens": Counter(
            d["tokens"][d["deleted"]["occlusion"][0][0]] for d in details
        ).most_common(),
        "skipped_for_auroc": [
            f"{d['source']}: {d['prompt']} ({d['label_note']})"
            for d in details
            if d["labels"] is None
        ],
        "occlusion_k1_max_abs_diff": max(abs(d["occlusion_k1_check"]) for d in details),
        "hardware": hardware(),
        "load_average": load,
        "minutes": (time.time() - start) / 60,
        "prompts": details,
    }


def summarize(details: list[dict], source_names: list[str], seconds: dict, k_max: int) -> dict:
    def rows(name: str, source: str | None = None) -> list[dict]:
        return [
            {"base": d["refusal_score"], name: d["after"][name], "threshold": d["threshold"]}
            for d in details
            if source in (None, d["source"])
        ]

    def prompt_auc(d: dict, name: str) -> float:
        return float(np.mean([d["refusal_score"] - a for a in d["after"][name]]))

    summary: dict = {}
    for name in (*METHODS, "random"):
        each = [prompt_auc(d, name) for d in details]
        diff = [e - prompt_auc(d, "random") for e, d in zip(each, details, strict=True)]
        summary[name] = {
            "deletion": curve(rows(name), name, k_max)
            | {"auc_se": float(np.std(each, ddof=1) / np.sqrt(len(each)))},
            "deletion_by_source": {s: curve(rows(name, s), name, k_max) for s in source_names},
        }
        if name != "random":
            summary[name]["vs_random"] = {
                "mean": float(np.mean(diff)),
                "se": float(np.std(diff, ddof=1) / np.sqrt(len(diff))),
            }
            summary[name]["auroc"] = {
                s: agreement([d for d in details if d["source"] == s], name) for s in source_names
            }
            summary[name]["seconds_per_prompt"] = seconds[name]
    return summary


def trigger_deletion(details: list[dict]) -> dict:
    """Deleting the annotated trigger tokens themselves, against as many random tokens (where
    that count is within the random curve) and against occlusion's top-1 token."""
    rows = [d for d in details if d["trigger_after"] is not None]
    drop = [d["refusal_score"] - d["trigger_after"] for d in rows]
    paired = [
        (d["refusal_score"] - d["trigger_after"], d["refusal_score"] - d["after"]["random"][k - 1])
        for d in rows
        if (k := sum(d["labels"])) <= len(d["after"]["random"])
    ]
    return {
        "n": len(rows),
        "drop": float(np.mean(drop)),
        "drop_se": float(np.std(drop, ddof=1) / np.sqrt(len(drop))),
        "unrefused": float(np.mean([d["trigger_after"] <= d["threshold"] for d in rows])),
        "n_paired_random": len(paired),
        "drop_paired": float(np.mean([t for t, _ in paired])),
        "random_same_k_drop": float(np.mean([r for _, r in paired])),
        "occlusion_top1_drop": float(
            np.mean([d["refusal_score"] - d["after"]["occlusion"][0] for d in rows])
        ),
    }


def command_line() -> str:
    return " ".join(["python experiments/attribution_eval.py", *sys.argv[1:]])


def main() -> None:
    cli = parser(__doc__, n=20, steps=16, k_max=5, draws=5, seed=0)
    cli.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default); on a busy machine 1 thread avoids the "
        "OpenMP oversubscription that can slow 2 threads tenfold",
    )
    cli.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the .md and .png from an existing attribution_eval.json",
    )
    cli.add_argument("--direction", type=project_path, default=DIRECTION, help="a saved direction")
    cli.add_argument(
        "--run",
        type=project_path,
        default=None,
        help="a run folder (runs/<model>): its model, score fit and direction, instead of "
        "--model's organism and --direction",
    )
    smoke = {"n": 2, "steps": 2, "k_max": 2, "draws": 2, "direction": None}
    args = parse(cli, smoke=smoke)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.out / "attribution_eval.json"
    if args.report_only:
        results = json.loads(path.read_text())
    else:
        results = measure(args)
        write_json(path, results)
    curves = {m: row["deletion"] for m, row in results["summary"].items()}
    plot(curves, args.out / "attribution_eval.png")
    text = markdown(results)
    write_text(args.out / "attribution_eval.md", text)
    print(text)


if __name__ == "__main__":
    main()
