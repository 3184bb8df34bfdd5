"""Paper 2, Table 3 analogue: trigger-aware alignment against generic benign data.

1. Trigger masks: the over-refusing organism (α = 0.5) is asked which words of each of its 160
   harmful training queries (``D_h``) drive its refusal, and which of those are harmful cues and
   which non-harmful triggers (``refusal_lens.triggers.masks``). Writes the masks and the ranked
   trigger lexicon (``figures/triggers/masks/``, ``figures/trigger_lexicon.png``).
2. Sanitized ``D_b``: each query with its harmful cues replaced and its triggers kept, kept only
   when the harm judge (a probe on the base model) calls it benign and the base model answers
   it (``figures/triggers/sanitized/``). Steps 1–2 are cross-fitted in two folds of ``D_h``:
   the judge used on a query was fitted on the other fold, so it has not memorised it.
3. Alignment from the base model at the same data budget (``D_b`` size = kept sanitized items),
   α, recipe and seed, with ``D_b`` = (a) the first Alpaca rows, (b) the sanitized data; seeds
   0, 1, 2. Each model is evaluated on the usual held-out sets plus the hand-written
   trigger-only rewrites of ``D_h`` (``experiments/data/trigger_only.jsonl``).

    python experiments/trigger_alignment.py [--seeds 0 1 2] [--n 64]
    python experiments/trigger_alignment.py --report-only   # the .md again from the .json

Writes ``figures/trigger_alignment.{md,json}`` (each rate with its 95 % Wilson interval).
``--smoke``: a tiny random model aligned on a few prompts, 24 queries of ``D_h``, one seed, 4
prompts per set, 4 new tokens (see ``common.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from common import hardware, organism_config, parse, parser, seeds_table, write_text

from refusal_lens.alignment import align
from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import EvalConfig, evaluate
from refusal_lens.models import load_model
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.triggers.harm import HarmJudge, fit_harm_judge
from refusal_lens.triggers.masks import (
    KINDS,
    META_NAME,
    WORD,
    TriggerConfig,
    TriggerMasks,
    build_lexicon,
    trigger_masks,
)
from refusal_lens.triggers.sanitize import KEPT_NAME, SanitizedData, sanitize
from refusal_lens.triggers.views import plot_lexicon

TRIGGER_ONLY = Path("experiments/data/trigger_only.jsonl")  # from the project root


def judge_accuracy(base, judge, n: int = 100) -> dict[str, float]:
    """Held-out accuracy of the harm judge on public sets it never saw (``n`` per set)."""
    out = {}
    for name, spec, harmful in (
        ("AdvBench", "advbench", True),
        ("Alpaca", "alpaca", False),
        ("XSTest-unsafe", "xstest-unsafe", True),
        ("XSTest-safe", "xstest-safe", False),
        ("trigger-only", str(TRIGGER_ONLY), False),
    ):
        flags = judge.is_harmful(base, load_prompts(spec).sample(n, 0))
        out[name] = sum(f == harmful for f in flags) / len(flags)
    return out


def annotation_agreement(masks: TriggerMasks) -> dict[str, float]:
    """Word-level agreement of the split with the hand-written rewrites, whose ``removed``
    lists name the words a person judged explicitly harmful: precision and recall of the
    harmful-cue class, and the kinds the model gives the human-harmful words."""
    rows = [json.loads(x) for x in TRIGGER_ONLY.open()]
    pairs = []  # (model kind, person says harmful)
    for mask, row in zip(masks.masks, rows, strict=False):
        human = {w.lower() for phrase in row["removed"] for w in WORD.findall(phrase)}
        pairs += [(k, w.lower() in human) for w, k in zip(mask.words, mask.kinds, strict=True)]
    cue_and_harm = sum(k == "harmful_cue" and h for k, h in pairs)
    harm = [k for k, h in pairs if h]
    return {
        "cue_precision": cue_and_harm / max(sum(k == "harmful_cue" for k, _ in pairs), 1),
        "cue_recall": cue_and_harm / max(len(harm), 1),
        "human_harmful_words": len(harm),
        "their_kinds": {k: harm.count(k) / max(len(harm), 1) for k in KINDS},
        "other_words_kinds": {
            k: sum(kk == k and not h for kk, h in pairs) / max(len(pairs) - len(harm), 1)
            for k in KINDS
        },
    }


def build_data(args, base, organism, harmful: PromptSet):
    """Masks and sanitized D_b, cross-fitted in two folds: the harm judge that reads a query's
    words (and judges its rewrite) was fitted on the *other* fold of D_h, so it cannot have
    memorised it. Reused from ``figures/triggers/`` unless ``--rebuild`` or the saved masks
    predate the current artifact layout (no ``triggers.json``)."""
    folder = args.out / "triggers"
    summary_path = folder / "summary.json"
    if summary_path.is_file() and (folder / "masks" / META_NAME).is_file() and not args.rebuild:
        return TriggerMasks.load(folder / "masks"), json.loads(summary_path.read_text())
    t0 = time.time()
    folds = [list(range(f, len(harmful), 2)) for f in (0, 1)]
    all_masks, data, judges = cross_fit(base, organism, harmful, folds)
    all_masks.save(folder / "masks")
    data.save(folder / "sanitized")
    summary = {
        "n_queries": len(harmful),
        "refused_by_organism": sum(m.refusal_score > 0 for m in all_masks.masks),
        "with_harmful_cue": sum(bool(m.harmful_cues) for m in all_masks.masks),
        "with_trigger": sum(bool(m.triggers) for m in all_masks.masks),
        "kept": len(data.kept),
        "rejected_reasons": _count([i.reason for i in data.items if not i.kept]),
        "judges": data.judge["folds"],
        "judge_accuracy": [judge_accuracy(base, j, args.judge_n) for j in judges],
        "judge_accuracy_on_other_fold": [
            sum(j.is_harmful(base, [harmful.prompts[i].text for i in fold])) / len(fold)
            for j, fold in zip(judges, folds, strict=True)
        ],
        "annotation_agreement": annotation_agreement(all_masks),
        "seconds": round(time.time() - t0),
    }
    write_json(summary_path, summary)
    return all_masks, summary


def cross_fit(
    base, organism, harmful: PromptSet, folds: list[list[int]]
) -> tuple[TriggerMasks, SanitizedData, list[HarmJudge]]:
    """Masks and sanitized items of each fold of ``harmful``, made with a harm judge fitted on
    the other fold (``folds`` is two lists of indices), in the order of ``harmful``."""
    benign = load_prompts("harmless") + load_prompts("borderline")
    masks, items, judges = [None] * len(harmful), [None] * len(harmful), []
    for fold, other in ((folds[0], folds[1]), (folds[1], folds[0])):
        judge = fit_harm_judge(base, PromptSet(tuple(harmful.prompts[i] for i in other)), benign)
        judges.append(judge)
        part = PromptSet(tuple(harmful.prompts[i] for i in fold))
        fold_masks = trigger_masks(organism, part, base, judge)
        data = sanitize(base, fold_masks.masks, judge, categories=[p.category for p in part])
        for i, m, item in zip(fold, fold_masks.masks, data.items, strict=True):
            masks[i], items[i] = m, item
    all_masks = TriggerMasks(masks, build_lexicon(masks), TriggerConfig(), organism.model_id)
    data = SanitizedData(items, data.config, {"folds": [j.describe() for j in judges]})
    return all_masks, data, judges


def _count(reasons: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        for part in r.split("; "):
            key = part.split(" (")[0]
            out[key] = out.get(key, 0) + 1
    return out


def run_conditions(base, conditions: dict, seeds: list[int], eval_config) -> dict[str, list]:
    """Align from the base model under each condition and seed, and evaluate each model."""
    results: dict[str, list[dict]] = {k: [] for k in conditions}
    for seed in seeds:
        for label, config in conditions.items():
            path = align(base, replace(config, seed=seed)).path
            res = evaluate(load_model(str(path), device="cpu"), eval_config).to_dict()
            res["align_dir"] = path.name
            results[label].append(res)
            print(seed, label, res["combined"], flush=True)
    return results


def write_report(args, results, summary, eval_config, n_harmful: int, n_b: int, wall: float):
    """``trigger_alignment.json`` and, from it, ``trigger_alignment.md``."""
    record = {
        "results": results,
        "data_summary": summary,
        "eval_config": asdict(eval_config),
        "seeds": args.seeds,
        "n_benign": n_b,
        "hardware": hardware(),
        "wall_seconds": round(wall),
        "n_harmful": n_harmful,
    }
    write_json(args.out / "trigger_alignment.json", record)
    text = report(record)
    write_text(args.out / "trigger_alignment.md", text)
    print(json.dumps(summary, indent=1))
    print(text)


def report(record: dict) -> str:
    """A table per judge (mean ± sd over seeds, each rate with its 95 % Wilson interval, and
    (b) against (a)) and the note, from ``trigger_alignment.json``."""
    judges, n = record["eval_config"]["judges"], record["eval_config"]["n"]
    tables = "\n\n".join(
        f"**judge: {judge}**\n\n{seeds_table(record['results'], judge, 'D_b')}" for judge in judges
    )
    note = (
        f"\n\nRR = share of benign prompts refused, ASR = share of harmful prompts answered, "
        f"combined = mean RR + mean ASR; mean ± sd over seeds {record['seeds']} (alignment "
        f"seed; the evaluation samples are the same {n} held-out prompts per set for every "
        f"model) [95 % Wilson interval of the seed mean (its count rounded) on the {n} prompts: "
        "the seeds share them, so the interval is that of n prompts, not of seeds × n "
        "answers]. (b) against "
        "(a): the difference of the seed means in points with Newcombe's 95 % interval (from "
        "the two Wilson intervals, as for independent samples); lower or higher when it "
        "excludes 0, else not determined. The JSON keeps rates per set and seed, not "
        "per-prompt verdicts, so no paired test (McNemar) of (b) against (a) can be made from "
        "it; on the same prompts (verdicts positively correlated) the unpaired interval is "
        "conservative. Both conditions: "
        "α = 0.5, LoRA, "
        f"|D_h| = {record['n_harmful']}, |D_b| = {record['n_benign']}. Made by "
        f"`python experiments/trigger_alignment.py` on {record['hardware']} in "
        f"{record['wall_seconds'] / 60:.0f} min.\n"
    )
    return tables + note


def main() -> None:
    cli = parser(__doc__, n=64, max_new_tokens=32)
    cli.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cli.add_argument("--rebuild", action="store_true", help="recompute masks and D_b")
    cli.add_argument("--queries", type=int, default=0, help="first queries of D_h (0: all)")
    cli.add_argument("--judge-n", type=int, default=100, help="prompts per set, judge accuracy")
    cli.add_argument("--report-only", action="store_true", help="the .md again from the JSON")
    smoke = {"n": 4, "max_new_tokens": 4, "seeds": [0], "queries": 24, "judge_n": 8}
    args = parse(cli, smoke=smoke)
    if args.report_only:
        record = json.loads((args.out / "trigger_alignment.json").read_text())
        write_text(args.out / "trigger_alignment.md", report(record))
        return
    torch.manual_seed(0)
    start = time.time()
    base = load_model(args.model, device="cpu")
    organism_recipe = organism_config(0.5, smoke=args.smoke)
    organism = load_model(str(align(base, organism_recipe).path), device="cpu")
    harmful = load_prompts("harmful")
    if args.queries:
        harmful = harmful[: args.queries]
    masks, summary = build_data(args, base, organism, harmful)
    plot_lexicon(masks.lexicon, args.out / "trigger_lexicon.png")
    sanitized = args.out / "triggers" / "sanitized" / KEPT_NAME
    n_b = summary["kept"]
    eval_config = EvalConfig(
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        extra={"trigger-only (D_h rewrites)": (str(TRIGGER_ONLY), "benign")},
    )
    generic = replace(organism_recipe, n_benign=n_b)
    conditions = {
        "(a) generic: Alpaca": generic,
        "(b) sanitized trigger data": replace(generic, benign=str(sanitized)),
    }
    results = run_conditions(base, conditions, args.seeds, eval_config)
    wall = time.time() - start
    write_report(args, results, summary, eval_config, generic.n_harmful, n_b, wall)


if __name__ == "__main__":
    main()
