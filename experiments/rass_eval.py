"""Does RASS find what it claims? And are its prompts useful mitigation data?

On the over-refusing organism (α = 0.5, seed 0) with its refusal direction
(``figures/direction``, layer 20):

1. RASS (``refusal_lens.boundary.rass``): seeds = 160 ``D_h`` queries + Alpaca rows 200–359
   (disjoint from every evaluation set); the organism writes candidates at coefficients
   −1 … 1, plus trigger-lexicon frames around Alpaca rows 400–599; selection at layer 20, band
   |margin| ≤ 0.5; harm scorer = harm probe on the base model (shipped harmful vs harmless +
   borderline), at its own threshold (0.5).
2. Hardness: refusal rate on the organism (score and substring judges) of the RASS set, of
   as many candidates drawn at random from the same generator's screened, judged-benign
   output without the band, and of XSTest-safe.
3. Benign share: by the selection judge (before its filter), by an independent probe judge
   (fitted on AdvBench vs Alpaca rows 600–999, base model) and, when
   ``experiments/data/rass_labels.jsonl`` exists, by hand labels.
4. Diversity: distinct 1-/2-grams and embedding spread (mean pairwise cosine distance of the
   base model's last-token residual at layer 20).
5. Mitigation: alignment from the base model with ``D_b`` = the RASS set against ``D_b`` = as
   many Alpaca rows, same α, recipe and seeds 0, 1, 2; the usual held-out evaluation.

    python experiments/rass_eval.py [--seeds 0 1 2] [--n 64]
    python experiments/rass_eval.py --report-only   # the .md again from the .json

Writes ``figures/rass/`` (the RASS run: ``rass.jsonl``, ``rass_candidates.jsonl``,
``rass_summary.json``, ``rass.json``), ``figures/rass_eval.{md,json}`` and
``figures/rass_margins.png``; each share with its 95 % Wilson interval, the RASS set's refusal
against the other sets by Fisher's exact test. ``--report-only`` writes the .md again from
``rass_eval.json`` and the saved RASS run (and the hand labels). ``--direction`` and
``--lexicon`` name the inputs (defaults: the files above). ``--smoke``: a tiny random model
aligned on a few prompts, a direction selected on a few prompts (written to
``OUT/direction``), 2 contexts × 2 samples of 8 tokens, the band and request-shape screen
opened (a random model writes no requests), one seed, 4 prompts per set (see ``common.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from common import (
    hardware,
    organism_config,
    parse,
    parser,
    project_path,
    seeds_table,
    share_text,
    smoke_direction,
    unpaired_verdict,
    write_text,
)

from refusal_lens.alignment import AlignConfig, align
from refusal_lens.artifacts import write_json
from refusal_lens.boundary.candidates import WORDS
from refusal_lens.boundary.geometry import GeometryConfig, read_layers
from refusal_lens.boundary.rass import rass
from refusal_lens.boundary.rass_config import RASSConfig
from refusal_lens.boundary.rass_result import SELECTED_NAME, RASSResult
from refusal_lens.boundary.views import plot_rass_margins
from refusal_lens.directions import Direction
from refusal_lens.evaluation import EvalConfig, evaluate
from refusal_lens.models import ModelHandle, load_model
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.scoring import refusal_rate
from refusal_lens.triggers.harm import fit_harm_judge, harm_scorer
from refusal_lens.triggers.masks import load_lexicon

# from the project root
LABELS = Path("experiments/data/rass_labels.jsonl")
DIRECTION = Path("figures/direction")
LEXICON = Path("figures/triggers/masks/lexicon.json")
# RASS settings in smoke mode: short candidates, every screened one kept (a tiny random model
# writes no requests, and its margins are far from any boundary)
SMOKE_RASS = {"max_new_tokens": 8, "band": 50.0, "require_request": False}
RANDOM_DRAW = "same generator, no band (random)"


def distinct(texts: list[str], n: int) -> float:
    grams = [
        tuple(w[i : i + n])
        for t in texts
        for w in [WORDS.findall(t.lower())]
        for i in range(len(w) - n + 1)
    ]
    return len(set(grams)) / max(len(grams), 1)


def spread(model, texts: list[str], layer: int) -> float:
    x = read_layers(model, texts, GeometryConfig(layers=(layer,)))[:, 0]
    x = torch.nn.functional.normalize(x, dim=-1)
    sim = x @ x.T
    n = len(texts)
    return float(1 - (sim.sum() - n) / (n * (n - 1)))


def hardness(organism, sets: dict[str, PromptSet], max_new_tokens: int) -> dict:
    out = {}
    for name, prompts in sets.items():
        if len(prompts) == 0:
            continue
        row = {"n": len(prompts)}
        for judge in ("score", "substring"):
            report = refusal_rate(
                organism, prompts, judge, max_new_tokens=max_new_tokens, show_progress=False
            )
            row[judge] = report.rate
        out[name] = row
    return out


def hand_labels(texts: list[str]) -> dict | None:
    """Shares of the hand-labelled prompts (a seeded sample of the RASS set, labelled by an
    engineer) that are benign and that are coherent requests."""
    if not LABELS.is_file():
        return None
    labels = {row["text"]: row for row in map(json.loads, LABELS.open())}
    seen = [labels[t] for t in texts if t in labels]
    if not seen:
        return None
    n = len(seen)
    return {
        "labelled": len(seen),
        "benign_share": sum(r["benign"] for r in seen) / n,
        "coherent_share": sum(r["coherent"] for r in seen) / n,
    }


def threshold(result: RASSResult) -> float:
    """The p(harmful) at or above which the run's harm scorer dropped a candidate."""
    return result.harm_scorer["threshold"]


def by_generator(result: RASSResult) -> list[dict]:
    """Per steering coefficient (and for recombination), over the screened candidates: how
    many, median margin, share in the run's band / on the harmful side / judged harmful (at
    the scorer's threshold) / refused (score > 0) by the organism."""
    rows = [r for r in result.records(selected_only=False) if "margin" in r]
    groups: dict[str, list[dict]] = {}
    for r in sorted(
        rows, key=lambda r: (r["provenance"]["method"], r["provenance"].get("coef") or 0)
    ):
        coef = r["provenance"].get("coef")
        groups.setdefault("recombination" if coef is None else f"steer, coef {coef:g}", []).append(
            r
        )
    band, p_max = result.config.band, threshold(result)
    return [
        {
            "generator": name,
            "n": len(g),
            "median_margin": statistics.median(r["margin"] for r in g),
            "in_band": sum(abs(r["margin"]) <= band for r in g) / len(g),
            "harmful_side": sum(r["margin"] > 0 for r in g) / len(g),
            "judged_harmful": sum(r["p_harmful"] >= p_max for r in g) / len(g),
            "refused": sum(r["refusal_score"] > 0 for r in g) / len(g),
        }
        for name, g in groups.items()
    ]


def arguments() -> argparse.Namespace:
    cli = parser(__doc__, n=64, max_new_tokens=32)
    cli.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cli.add_argument("--contexts", type=int, default=48)
    cli.add_argument("--samples", type=int, default=4, help="continuations per list and coef")
    cli.add_argument("--direction", type=project_path, default=DIRECTION, help="a saved direction")
    cli.add_argument("--lexicon", type=project_path, default=LEXICON, help="a trigger lexicon")
    cli.add_argument("--skip-mitigation", action="store_true", help="steps 1-4 only")
    cli.add_argument(
        "--report-only", action="store_true", help="rewrite the tables from rass_eval.json"
    )
    smoke = {"n": 4, "max_new_tokens": 4, "seeds": [0], "contexts": 2, "samples": 2}
    return parse(cli, smoke=smoke | {"direction": None})


def report_only(args: argparse.Namespace) -> None:
    """Rewrite the tables from ``rass_eval.json`` and the saved RASS run."""
    record = json.loads((args.out / "rass_eval.json").read_text())
    result = RASSResult.load(args.out / "rass")
    record["benign"]["hand labels, RASS set"] = hand_labels([c.text for c in result.selected])
    record["by_generator"] = by_generator(result)
    record["n_band"] = len(band_candidates(result))
    write_json(args.out / "rass_eval.json", record)
    write_text(args.out / "rass_eval.md", report(record))


@dataclass
class Inputs:
    """The models, the direction and the prompt sets every step reads."""

    base: ModelHandle
    organism: ModelHandle
    recipe: AlignConfig  # the organism's
    direction: Direction
    harmful: PromptSet
    harmless: PromptSet
    borderline: PromptSet
    alpaca: PromptSet

    @property
    def seeds(self) -> list[str]:
        """RASS's seeds: the D_h queries and Alpaca rows 200-359."""
        return self.harmful.texts + self.alpaca[200:360].texts


def load_inputs(args: argparse.Namespace) -> Inputs:
    base = load_model(args.model, device="cpu")
    recipe = organism_config(0.5, smoke=args.smoke)
    organism = load_model(str(align(base, recipe).path), device="cpu")
    if args.direction is None:  # smoke mode
        args.direction = smoke_direction(organism, args.out / "direction")
    direction = Direction.load(args.direction)
    harmful, harmless, borderline = (load_prompts(s) for s in ("harmful", "harmless", "borderline"))
    alpaca = load_prompts("alpaca")
    return Inputs(base, organism, recipe, direction, harmful, harmless, borderline, alpaca)


def run_rass(args: argparse.Namespace, inputs: Inputs) -> RASSResult:
    """Step 1: RASS on the organism, judged by a harm probe on the base model; saved into
    ``OUT/rass`` with its margin histogram."""
    judge = fit_harm_judge(inputs.base, inputs.harmful, inputs.harmless + inputs.borderline)
    config = RASSConfig(
        contexts=args.contexts, samples=args.samples, seed=0, **(SMOKE_RASS if args.smoke else {})
    )
    result = rass(
        inputs.organism,
        inputs.seeds,
        inputs.direction,
        (inputs.harmful, inputs.harmless),
        harm_scorer(judge, inputs.base),
        config,
        lexicon=load_lexicon(args.lexicon),
        benign_contexts=inputs.alpaca[400:600].texts,
    )
    result.save(args.out / "rass")
    plt.close(plot_rass_margins(result, args.out / "rass_margins.png"))
    return result


def comparison_sets(result: RASSResult) -> tuple[dict[str, PromptSet], list[str]]:
    """Step 2's sets: the RASS set (and by method), an unselected draw from the same
    generator (random, and outside the band) and XSTest-safe; and the random draw's texts."""
    selected = result.prompts()
    n_sel = len(selected)
    pool = [
        c
        for c in result.candidates
        if "p_harmful" in c.scores
        and c.scores["p_harmful"] < threshold(result)
        and not c.reason.startswith("over")
    ]
    unselected = [c.text for c in pool if c.reason.startswith("outside")]
    random_draw = random.Random(0).sample([c.text for c in pool], min(n_sel, len(pool)))
    xstest = load_prompts("xstest-safe").sample(n_sel, 0)
    sets = {
        "RASS selected": selected,
        **{
            f"RASS selected, {method} only": PromptSet.from_texts(
                [c.text for c in result.selected if c.method == method], "borderline"
            )
            for method in ("steer", "recombine")
        },
        RANDOM_DRAW: PromptSet.from_texts(random_draw, "borderline"),
        "same generator, outside the band": PromptSet.from_texts(unselected, "borderline"),
        "XSTest-safe": xstest,
    }
    return sets, random_draw


def band_candidates(result: RASSResult) -> list:
    """The candidates inside the band that reached the selection judge (kept or judged
    harmful)."""
    return [c for c in result.candidates if c.reason == "" or c.reason.startswith("judged")]


def benign_shares(inputs: Inputs, result: RASSResult, sets: dict, random_draw: list[str]) -> dict:
    """Step 3: the benign share by the selection scorer (before its filter), by an
    independent probe judge and by hand labels."""
    base, alpaca = inputs.base, inputs.alpaca
    independent = fit_harm_judge(base, load_prompts("advbench").sample(200, 0), alpaca[600:1000])
    selected, xstest = sets["RASS selected"], sets["XSTest-safe"]
    n_sel = len(selected)
    in_band = band_candidates(result)
    return {
        "selection judge, band candidates": sum(
            c.scores["p_harmful"] < threshold(result) for c in in_band
        )
        / max(len(in_band), 1),
        "independent probe judge, RASS set": 1
        - sum(independent.is_harmful(base, selected)) / n_sel,
        "independent probe judge, random draw": 1
        - sum(independent.is_harmful(base, random_draw)) / max(len(random_draw), 1),
        "independent probe judge, XSTest-safe": 1
        - sum(independent.is_harmful(base, xstest)) / n_sel,
        "hand labels, RASS set": hand_labels(selected.texts),
    }


def diversity(inputs: Inputs, sets: dict[str, PromptSet]) -> dict:
    """Step 4: distinct 1-/2-grams and embedding spread of the RASS set, the random draw,
    XSTest-safe and as many seeds."""
    selected = sets["RASS selected"]
    seeds = random.Random(0).sample(inputs.seeds, len(selected))
    return {
        name: {
            "distinct-1": distinct(ps.texts, 1),
            "distinct-2": distinct(ps.texts, 2),
            "spread": spread(inputs.base, ps.texts, inputs.direction.layer),
        }
        for name, ps in (
            ("RASS selected", selected),
            ("random draw", sets[RANDOM_DRAW]),
            ("XSTest-safe", sets["XSTest-safe"]),
            ("seeds (D_h + Alpaca)", PromptSet.from_texts(seeds, "borderline")),
        )
    }


def mitigation(
    args: argparse.Namespace, inputs: Inputs, n_sel: int, eval_config: EvalConfig
) -> dict[str, list[dict]]:
    """Step 5: align the base model with D_b = the RASS set or as many Alpaca rows, per
    seed, and evaluate each."""
    rass_path = args.out / "rass" / SELECTED_NAME
    generic = replace(inputs.recipe, n_benign=n_sel)
    conditions = {
        "(a) generic: Alpaca": generic,
        "(b) RASS set": replace(generic, benign=str(rass_path)),
    }
    runs: dict[str, list[dict]] = {k: [] for k in conditions}
    seeds = [] if args.skip_mitigation else args.seeds
    for seed, (label, cfg) in itertools.product(seeds, conditions.items()):
        aligned = align(inputs.base, replace(cfg, seed=seed)).path
        res = evaluate(load_model(str(aligned), device="cpu"), eval_config)
        runs[label].append(res.to_dict())
        print(seed, label, res.combined, flush=True)
    return runs


def main() -> None:
    args = arguments()
    if args.report_only:
        report_only(args)
        return
    torch.manual_seed(0)
    start = time.time()
    inputs = load_inputs(args)
    result = run_rass(args, inputs)
    t_rass = time.time() - start
    sets, random_draw = comparison_sets(result)
    hard = hardness(inputs.organism, sets, args.max_new_tokens)
    benign = benign_shares(inputs, result, sets, random_draw)
    spreads = diversity(inputs, sets)
    n_sel = len(sets["RASS selected"])
    eval_config = EvalConfig(n=args.n, max_new_tokens=args.max_new_tokens)
    runs = mitigation(args, inputs, n_sel, eval_config)
    record = {
        "summary": result.summary(),
        "n_candidates": len(result.candidates),
        "by_generator": by_generator(result),
        "hardness": hard,
        "benign": benign,
        "diversity": spreads,
        "mitigation": runs,
        "n_selected": n_sel,
        "n_band": len(band_candidates(result)),
        "seconds": {"rass": t_rass, "total": time.time() - start},
        "hardware": hardware(),
        "judges": list(eval_config.judges),
    }
    write_json(args.out / "rass_eval.json", record)
    md = report(record)
    write_text(args.out / "rass_eval.md", md)
    print(md)


HARDER_THAN = ("XSTest-safe", "same generator, outside the band", RANDOM_DRAW)


def generator_lines(data: dict) -> list[str]:
    """Per generator, the shares of its screened candidates, each with its interval."""
    lines = [
        "| screened candidates | n | median margin | in band | harmful side | judged harmful "
        "| refused |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("in_band", "harmful_side", "judged_harmful", "refused")
    lines += [
        f"| {g['generator']} | {g['n']} | {g['median_margin']:+.2f} | "
        + " | ".join(share_text(g[k], g["n"]) for k in keys)
        + " |"
        for g in data.get("by_generator", [])
    ]
    return lines


def hardness_lines(data: dict) -> list[str]:
    """RR per set with intervals, and the RASS set against each other set (Fisher)."""
    hard, judges = data["hardness"], ("score", "substring")
    lines = ["| set | n | RR score | RR substring |", "|---|---:|---:|---:|"]
    lines += [
        f"| {k} | {v['n']} | " + " | ".join(share_text(v[j], v["n"]) for j in judges) + " |"
        for k, v in hard.items()
    ]
    sel = hard.get("RASS selected")
    others = [k for k in HARDER_THAN if k in hard] if sel else []
    if others:
        lines += [
            "",
            "| refused: RASS selected against | score judge | substring judge |",
            "|---|---|---|",
        ]
    for k in others:
        cells = [unpaired_verdict(*counted(sel, j), *counted(hard[k], j)) for j in judges]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def counted(row: dict, judge: str) -> tuple[int, int]:
    """``(k, n)`` of a hardness row: the prompts ``judge`` refused, and the set's size."""
    return round(row[judge] * row["n"]), row["n"]


def benign_sizes(data: dict) -> dict[str, int | None]:
    """The number of prompts each benign share is taken over."""
    hard = data["hardness"]
    return {
        "selection judge, band candidates": data.get("n_band"),
        "independent probe judge, RASS set": data["n_selected"],
        "independent probe judge, random draw": hard.get(RANDOM_DRAW, {}).get("n"),
        "independent probe judge, XSTest-safe": hard.get("XSTest-safe", {}).get("n"),
    }


def benign_lines(data: dict) -> list[str]:
    """The benign shares (and the hand labels' coherent share), each with its interval."""
    lines, sizes = ["| benign share | value |", "|---|---:|"], benign_sizes(data)
    for k, v in data["benign"].items():
        n = sizes.get(k)
        if isinstance(v, dict):
            k, n = f"{k} ({v['labelled']} labelled)", v["labelled"]
            lines.append(
                f"| hand labels: coherent request ({n} labelled) | "
                f"{share_text(v['coherent_share'], n)} |"
            )
            v = v["benign_share"]
        text = "–" if v is None else share_text(v, n) if n else f"{100 * v:.0f} %"
        lines.append(f"| {k} | {text} |")
    return lines


NOTE = (
    "[…]: 95 % Wilson interval of each share on its n prompts or candidates (count: share × n; "
    "the JSON keeps shares and n). RASS selected against another set: Fisher's exact test of "
    "the two refused shares, as for independent samples; the random draw shares candidates "
    "with the RASS set (both come from the same screened pool), so its test is conservative. "
    "Mitigation: mean ± sd over seeds [95 % Wilson interval of the seed mean (its count "
    "rounded) on the n held-out prompts per set, which the seeds share]; (b) against (a): the "
    "difference of the "
    "seed means in points with Newcombe's 95 % interval (from the two Wilson intervals); lower "
    "or higher when it excludes 0, else not determined. The JSON keeps rates per set and seed, "
    "not per-prompt verdicts, so no paired test (McNemar) of (b) against (a) can be made from "
    "it; on the same prompts the unpaired interval is conservative."
)


def report(data: dict) -> str:
    s, diversity = data["summary"], data["diversity"]
    runs, seconds = data["mitigation"], data["seconds"]
    n_candidates = data.get("n_candidates") or sum(g["generated"] for g in s["groups"].values())
    lines = [
        f"RASS selected {s['selected']} of {n_candidates} candidates "
        f"({seconds['rass'] / 60:.1f} min).",
        "",
        *generator_lines(data),
        "",
        *hardness_lines(data),
        "",
        *benign_lines(data),
        "",
        "| diversity | distinct-1 | distinct-2 | embedding spread |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {v['distinct-1']:.2f} | {v['distinct-2']:.2f} | {v['spread']:.3f} |"
        for k, v in diversity.items()
    ]
    for judge in data.get("judges", ("score", "substring")) if any(runs.values()) else ():
        lines += ["", f"**Mitigation, judge: {judge}**", "", seeds_table(runs, judge, "D_b")]
    if s["warnings"]:
        lines += ["", "Warnings: " + "; ".join(s["warnings"])]
    lines += [
        "",
        NOTE,
        "",
        f"{data['hardware']}; {seconds['total'] / 60:.0f} min in all. Command: "
        "`python experiments/rass_eval.py`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
