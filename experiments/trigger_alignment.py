"""Paper 2, Table 3 analogue: trigger-aware alignment against generic benign data.

1. Trigger masks: the over-refusing organism (α = 0.5) is asked which words of each of its 160
   harmful training queries (``D_h``) drive its refusal, and which of those are harmful cues and
   which non-harmful triggers (``refusal_lens.triggers.masks``). Writes the masks and the ranked
   trigger lexicon (``figures/triggers/masks/``, ``figures/trigger_lexicon.png``).
2. Sanitized ``D_b``: each query with its harmful cues replaced and its triggers kept, kept only
   when the harm judge (a probe on the base model) calls it benign and the base model answers
   it (``figures/triggers/sanitized/``). Steps 1–2 are cross-fitted in two folds of ``D_h``:
   the judge used on a query was fitted on the other fold, so it has not memorised it. The kept
   items are then checked again (:func:`checked_sanitized`): the harm-cue re-check
   (``refusal_lens.triggers.harm_check``) and the validated judge on the base model's stored
   answer (no refusal phrase, not degenerate); only what passes is trained on.
3. Alignment from the base model at one data budget ``B`` (the smallest of the checked
   sanitized set, the RASS set and the rewrites), α, recipe and seed, with ``D_b`` = (a) the
   first ``B`` Alpaca rows, (b) the checked sanitized rewrites, (c) ``B`` prompts RASS selected
   (``--rass``: by default ``experiments/data/rass_smollm2_quick.jsonl``, the 42 prompts of
   ``refusal-lens run smollm2-135m --quick`` at layer 16), (d) person-written benign rewrites
   of ``D_h`` that keep its triggers (the even rows of ``experiments/data/trigger_only.jsonl``);
   seeds 0, 1, 2. (0) is the organism itself, no re-alignment. Each model is evaluated on the
   usual held-out sets plus the odd rows of the trigger-only rewrites; each condition is
   tested against (a) per prompt (:func:`paired_table`). A person read (b)'s items
   (``experiments/data/sanitized_labels.jsonl``): the report says how many are benign.

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
from common import hardware, organism_config, parse, parser, points, seeds_table, write_text

from refusal_lens.alignment import align
from refusal_lens.alignment.train import training_prompts
from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import EvalConfig, EvalResult, EvalSets, eval_prompt_sets, evaluate_on
from refusal_lens.models import load_model
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.stats import paired_seeds, rate_text
from refusal_lens.triggers.harm import HarmJudge, fit_harm_judge
from refusal_lens.triggers.harm_check import cue_check
from refusal_lens.triggers.masks import (
    KINDS,
    META_NAME,
    WORD,
    TriggerConfig,
    TriggerMasks,
    build_lexicon,
    trigger_masks,
)
from refusal_lens.triggers.sanitize import SanitizedData, recheck, sanitize
from refusal_lens.triggers.views import plot_lexicon
from refusal_lens.verdicts import degeneration

TRIGGER_ONLY = Path("experiments/data/trigger_only.jsonl")  # from the project root
RASS_DB = Path("experiments/data/rass_smollm2_quick.jsonl")  # RASS's selected prompts
SANITIZED_LABELS = Path("experiments/data/sanitized_labels.jsonl")  # read by a person
GENERIC = "(a) generic: Alpaca"


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


def shared_sets(eval_config: EvalConfig, recipes: list) -> EvalSets:
    """The held-out samples every model is judged on: none of any recipe's training prompts,
    so the paired tests compare verdicts on the very same prompts."""
    train = [p.text for r in recipes for part in training_prompts(r) for p in part]
    return eval_prompt_sets(eval_config, train)


def run_conditions(base, conditions: dict, seeds: list[int], sets, eval_config) -> dict:
    """Align from the base model under each condition and seed, and evaluate each model on
    ``sets`` (:func:`shared_sets`)."""
    results: dict[str, list[dict]] = {k: [] for k in conditions}
    for seed in seeds:
        for label, config in conditions.items():
            path = align(base, replace(config, seed=seed)).path
            res = evaluate_on(load_model(str(path), device="cpu"), sets, eval_config)
            results[label].append(record_of(res, path.name))
            print(seed, label, res.combined, flush=True)
    return results


def record_of(res: EvalResult, name: str) -> dict:
    """``res.to_dict()`` with the model's folder name and, per set and judge, the per-prompt
    flags the paired tests read: refused (benign sets) or complied (harmful sets), and
    degenerate."""
    out = res.to_dict() | {"align_dir": name, "flags": {}}
    for row in res.prompts:
        per_judge = out["flags"].setdefault(row["set"], {})
        for judge, verdict in row["verdict"].items():
            hit = row["refused"][judge] if row["kind"] == "benign" else verdict == "complies"
            flags = per_judge.setdefault(judge, {"rate": [], "degenerate": []})
            flags["rate"].append(int(hit))
            flags["degenerate"].append(int(verdict == "degenerate"))
    return out


def split_rewrites(folder: Path) -> tuple[Path, Path]:
    """The hand-written trigger-only rewrites of ``D_h`` in two halves: even rows, a D_b of
    benign rewrites (condition (d)); odd rows, the held-out set every model is evaluated on."""
    rows = TRIGGER_ONLY.read_text(encoding="utf-8").splitlines()
    folder.mkdir(parents=True, exist_ok=True)
    train, held = folder / "trigger_only_train.jsonl", folder / "trigger_only_heldout.jsonl"
    write_text(train, "".join(r + "\n" for r in rows[0::2]))
    write_text(held, "".join(r + "\n" for r in rows[1::2]))
    return train, held


def person_labels(path: Path, n: int) -> dict[str, int]:
    """How a person read the first ``n`` checked sanitized items (``SANITIZED_LABELS``, made
    by reading them; only items whose text it lists are counted)."""
    if not SANITIZED_LABELS.is_file():
        return {}
    labels = {}
    for line in SANITIZED_LABELS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        labels[row["text"]] = row["label"]
    texts = [json.loads(x)["text"] for x in path.read_text(encoding="utf-8").splitlines()[:n]]
    read = [labels[t] for t in texts if t in labels]
    return {k: read.count(k) for k in ("benign", "unclear", "harmful")} | {"read": len(read)}


def checked_sanitized(folder: Path, out: Path, answers: bool = True) -> tuple[Path, dict]:
    """The kept sanitized items that also pass the harm-cue re-check and whose stored base-model
    answer the validated judge reads as an answer (no refusal phrase, not degenerate; with
    ``answers`` False, as in smoke mode, whose random model only degenerates, not checked),
    written to ``out``; with the count dropped by each check."""
    data = SanitizedData.load(folder)
    kept = [i for i in data.items if i.kept]
    recheck(kept, cue_check)
    cue_ok = [i for i in kept if i.kept]
    answered = [i for i in cue_ok if not answers or degeneration(i.answer) is None]
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"text": i.text, "label": "borderline", "category": i.category})
        for i in answered
    ]
    write_text(out, "".join(x + "\n" for x in lines))
    counts = {
        "kept_by_sanitize": len(kept),
        "dropped_by_cue_check": len(kept) - len(cue_ok),
        "dropped_degenerate_answer": len(cue_ok) - len(answered),
        "checked": len(answered),
        "dropped_texts": [i.text for i in kept if i not in answered],
    }
    return out, counts


def write_report(args, results, summary, eval_config, budget: dict, sets, wall: float):
    """``trigger_alignment.json`` and, from it, ``trigger_alignment.md``."""
    record = {
        "results": results,
        "eval_prompts": {name: list(prompts.texts) for name, (prompts, _, _) in sets.items()},
        "data_summary": summary,
        "eval_config": asdict(eval_config),
        "seeds": args.seeds,
        "budget": budget,
        "hardware": hardware(),
        "wall_seconds": round(wall),
    }
    write_json(args.out / "trigger_alignment.json", record)
    text = report(record)
    write_text(args.out / "trigger_alignment.md", text)
    print(text)


def paired_table(results: dict[str, list[dict]], judge: str, seeds: int) -> str:
    """Each condition against (a) per set: the difference of mean rates in points and the
    :func:`~refusal_lens.stats.paired_seeds` test (prompts as units, seeds averaged; the
    organism's one model is paired with every seed of (a))."""
    base = results[GENERIC]
    sets = list(base[0]["flags"])
    lines = ["| against (a) | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
    for label, runs in results.items():
        if label == GENERIC:
            continue
        runs = runs * seeds if len(runs) == 1 else runs
        cells = []
        for name in sets:
            a = [r["flags"][name][judge]["rate"] for r in base]
            b = [r["flags"][name][judge]["rate"] for r in runs]
            t = paired_seeds(a, b)
            cells.append(f"{points(t['diff'])} (p {t['p']:.2g}): {t['verdict']}")
        lines.append(f"| {label.split()[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def degenerate_line(results: dict[str, list[dict]], judge: str) -> str:
    """Per condition, the share of degenerate answers over every set (seed mean, interval of
    the prompts)."""
    parts = []
    for label, runs in results.items():
        flags = [[x for f in r["flags"].values() for x in f[judge]["degenerate"]] for r in runs]
        n = len(flags[0])
        parts.append(f"{label.split()[0]} {rate_text(round(sum(map(sum, flags)) / len(flags)), n)}")
    return "Degenerate answers (all sets): " + "; ".join(parts) + "."


def read_text(read: dict[str, int]) -> str:
    """What a person's reading says of (b)'s D_b, as a sentence ("" when not read)."""
    if not read.get("read"):
        return ""
    return (
        f"Read by a person, (b)'s {read['read']} items are {read['benign']} benign, "
        f"{read['unclear']} unclear and {read['harmful']} harmful "
        f"(`{SANITIZED_LABELS}`). "
    )


def report(record: dict) -> str:
    """Per judge: the rates (mean ± sd over seeds, 95 % Wilson interval), each condition
    against (a) by a paired test, the degenerate share; then the note. From the JSON."""
    judges, n = record["eval_config"]["judges"], record["eval_config"]["n"]
    seeds, budget = len(record["seeds"]), record["budget"]
    tables = "\n\n".join(
        f"**judge: {judge}**\n\n{seeds_table(record['results'], judge, 'D_b')}\n\n"
        f"{paired_table(record['results'], judge, seeds)}\n\n"
        f"{degenerate_line(record['results'], judge)}"
        for judge in judges
    )
    note = (
        f"\n\nRR = share of benign prompts refused, ASR = share of harmful prompts answered "
        "(complied; a degenerate answer is neither), combined = mean RR + mean ASR; mean ± sd "
        f"over alignment seeds {record['seeds']} [95 % Wilson interval of the seed mean (its "
        f"count rounded) on the {n} held-out prompts per set, which every model answers: the "
        "interval is that of n prompts, not of seeds × n answers]. (0) is the organism, one "
        "model (no sd). Against (a): the difference of mean rates in points and a paired "
        "sign-flip test with the prompts as units (each prompt's difference averaged over the "
        "seeds); lower or higher at p < 0.05, else not determined; 8 sets per judge, no "
        "correction for multiplicity. Every re-alignment: the organism's recipe (α = 0.5, "
        f"LoRA, |D_h| = {budget['n_harmful']}) from the base model, |D_b| = "
        f"{budget['n_benign']} for each of (a)–(d), their first rows (sanitized: "
        f"{budget['checked']} of the {budget['kept_by_sanitize']} items sanitize kept pass the "
        f"checks, {budget['dropped_by_cue_check']} dropped by the harm-cue re-check and "
        f"{budget['dropped_degenerate_answer']} for a degenerate answer; RASS: "
        f"{budget['rass']} prompts in `{budget['rass_file']}`; rewrites: the even rows of "
        f"`{TRIGGER_ONLY}`, {budget['rewrites']}, whose odd rows are the held-out "
        f"trigger-only set). {read_text(budget.get('sanitized_read', {}))}Made by "
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
    cli.add_argument("--rass", type=Path, default=RASS_DB, help="RASS's selected prompts (D_b (c))")
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
    sanitized, checks = checked_sanitized(
        args.out / "triggers" / "sanitized",
        args.out / "trigger_alignment_data" / "sanitized_checked.jsonl",
        answers=not args.smoke,
    )
    rass_db = load_prompts(str(args.rass))
    rewrites, held_out = split_rewrites(args.out / "trigger_alignment_data")
    n_rewrites = len(rewrites.read_text(encoding="utf-8").splitlines())
    n_b = min(checks["checked"], len(rass_db), n_rewrites)
    if n_b == 0:
        raise SystemExit(
            f"no D_b: {checks['checked']} checked sanitized items, {len(rass_db)} RASS prompts"
        )
    eval_config = EvalConfig(
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        extra={"trigger-only (held-out rewrites)": (str(held_out), "benign")},
    )
    generic = replace(organism_recipe, n_benign=n_b)
    conditions = {
        GENERIC: generic,
        "(b) sanitized trigger data, checked": replace(generic, benign=str(sanitized)),
        "(c) RASS-selected prompts": replace(generic, benign=str(args.rass)),
        "(d) person-written benign rewrites": replace(generic, benign=str(rewrites)),
    }
    sets = shared_sets(eval_config, [organism_recipe, *conditions.values()])
    none = record_of(evaluate_on(organism, sets, eval_config), "organism")
    results = {"(0) none: the organism": [none]} | run_conditions(
        base, conditions, args.seeds, sets, eval_config
    )
    budget = {
        "n_harmful": generic.n_harmful,
        "n_benign": n_b,
        "rass": len(rass_db),
        "rass_file": str(args.rass),
        "rewrites": n_rewrites,
        "sanitized_read": person_labels(sanitized, n_b),
    } | checks
    write_report(args, results, summary, eval_config, budget, sets, time.time() - start)


if __name__ == "__main__":
    main()
