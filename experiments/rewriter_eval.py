"""Which rewriter makes better trigger-matched benign data (paper 2's ``D_b``)?

On the SmolLM2 run's trigger masks (``runs/smollm2-135m/06-triggers/``, written by
``refusal-lens run smollm2-135m``), the first ``--n`` masked harmful queries:

1. **Chat-model rewrites**: ``sanitize(base, masks, judge, rewriter=model_rewriter(qwen))``
   with Qwen2.5-Coder-0.5B-Instruct (``refusal_lens.triggers.rewrite``, its documented
   prompt), judged and filtered like the run's own D_b (same harm judge, same base model).
2. **Single-word substitutes**: the run's own sanitized D_b (``substitute_cues``: each harmful
   cue replaced by the benign word the 135M base model finds likeliest), same queries.
3. **Hand labels** (``experiments/data/rewriter_labels.jsonl``, rules in
   ``rewriter_labels.md``) on a seeded sample of ``--sample`` queries, both rewrites of each:
   fluent, benign, triggers kept. A label is used only while its text is the rewrite this run
   made (regenerated rewrites that differ are reported as unlabelled).
4. **Automatic**: triggers kept (each trigger word of the mask still a word of the rewrite,
   case-insensitive), unchanged (= the query), kept by sanitize's filter.

    python experiments/rewriter_eval.py [--n 48] [--sample 30]
    python experiments/rewriter_eval.py --report-only   # tables from the saved rewrites

Writes ``figures/rewriter_eval.{md,json}``. ``--smoke``: a tiny random model as base and
rewriter, masks and a judge made on it from a few shipped prompts (see ``common.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from common import hardware, parse, parser, project_path, smoke_refuser, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.models import load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.triggers import (
    HarmJudge,
    HarmJudgeConfig,
    SanitizedData,
    TriggerConfig,
    TriggerMasks,
    fit_harm_judge,
    model_rewriter,
    sanitize,
    trigger_masks,
)
from refusal_lens.triggers.masks import WORD

LABELS = Path("experiments/data/rewriter_labels.jsonl")
RUN = Path("runs/smollm2-135m/06-triggers")
REWRITERS = {
    "qwen": "Qwen2.5-Coder-0.5B, whole request (model_rewriter)",
    "substitute": "SmolLM2-135M, one word per cue (substitute_cues)",
}
LABEL_FIELDS = ("fluent", "benign", "triggers_kept")


def arguments() -> argparse.Namespace:
    cli = parser(__doc__, n=48, sample=30, max_new_tokens=64, batch_size=8)
    cli.add_argument("--rewriter", default="qwen2.5-coder-0.5b", help="model spec")
    cli.add_argument("--run", type=project_path, default=RUN, help="a run's 06-triggers folder")
    cli.add_argument("--report-only", action="store_true", help="tables from the saved JSON")
    return parse(cli, smoke={"n": 4, "sample": 2, "max_new_tokens": 8})


def smoke_inputs(args: argparse.Namespace) -> tuple:
    """Masks, a judge and substitute rewrites made on the tiny model (smoke mode only)."""
    base = load_model(args.model, device="cpu")
    harmful, harmless = load_prompts("harmful")[:12], load_prompts("harmless")[:12]
    judge = fit_harm_judge(base, harmful, harmless, HarmJudgeConfig(layers=(1,)))
    loose = TriggerConfig(drive_min=0.0, harm_min=0.0)
    masks = trigger_masks(smoke_refuser(base), harmful[: args.n], base, judge, loose).masks
    return base, judge, masks, sanitize(base, masks, judge), base


def run_inputs(args: argparse.Namespace) -> tuple:
    """The run's masks, harm judge and sanitized D_b; the base model and the rewriter model."""
    masks = TriggerMasks.load(args.run / "masks").masks[: args.n]
    substitutes = SanitizedData.load(args.run / "sanitized")
    for k, (item, mask) in enumerate(zip(substitutes.items, masks, strict=False)):
        if item.original != mask.prompt:
            raise SystemExit(f"{args.run}: sanitized item {k} is not mask {k}'s query.")
    judge = HarmJudge.load(args.run / "harm_judge")
    base = load_model(judge.model_id, device="cpu")
    return base, judge, masks, substitutes, load_model(args.rewriter, device="cpu")


def triggers_kept(text: str, triggers: list[str]) -> bool | None:
    """Every trigger word still a word of ``text`` (None: the mask has no trigger)."""
    if not triggers:
        return None
    words = {w.lower() for w in WORD.findall(text)}
    return all(t.lower() in words for t in triggers)


def rows(masks: list, data: dict[str, list]) -> list[dict]:
    """One record per query: the mask and, per rewriter, its rewrite and the filter's verdict."""
    out = []
    for k, mask in enumerate(masks):
        row = {"index": k, "query": mask.prompt, "cues": mask.harmful_cues}
        row["triggers"] = mask.triggers
        for name, items in data.items():
            item = items[k]
            row[name] = {
                "text": item.text,
                "kept": item.kept,
                "reason": item.reason,
                "p_harmful": item.p_harmful,
                "unchanged": item.text.strip().lower() == mask.prompt.strip().lower(),
                "triggers_kept": triggers_kept(item.text, mask.triggers),
            }
        out.append(row)
    return out


def read_labels(path: Path) -> dict[tuple[str, int], dict]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        return {(r["rewriter"], r["index"]): r for r in map(json.loads, f) if r}


def share(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(map(bool, values)) / len(values) if values else None


def shares(record: dict, labels: dict, name: str, rows: list[dict]) -> dict:
    """One rewriter on ``rows``: automatic shares on every row, hand-label shares on the
    sampled rows whose label matches the rewrite."""
    items = [r[name] for r in rows]
    sample = [r for r in rows if r["index"] in record["sample"]]
    hand = [
        labels[(name, r["index"])]
        for r in sample
        if (name, r["index"]) in labels and labels[(name, r["index"])]["text"] == r[name]["text"]
    ]
    kept = [h for h in hand if record["rows"][h["index"]][name]["kept"]]
    return {
        "n": len(items),
        "unchanged": share([i["unchanged"] for i in items]),
        "triggers_kept_auto": share([i["triggers_kept"] for i in items]),
        "kept_by_filter": share([i["kept"] for i in items]),
        "labelled": len(hand),
        **{f: share([h[f] for h in hand]) for f in LABEL_FIELDS},
        "fluent_and_benign": share([h["fluent"] and h["benign"] for h in hand]),
        "kept_by_filter_labelled": len(kept),
        "benign_among_kept": share([h["benign"] for h in kept]),
    }


def table(record: dict, labels: dict) -> dict[str, dict]:
    """Per subset (all queries; those whose mask has a harmful cue) and rewriter."""
    subsets = {"all": record["rows"], "with_cue": [r for r in record["rows"] if r["cues"]]}
    return {
        subset: {name: shares(record, labels, name, rows) for name in REWRITERS}
        for subset, rows in subsets.items()
    }


def generate_record(args: argparse.Namespace) -> dict:
    start = time.time()
    inputs = smoke_inputs(args) if args.smoke else run_inputs(args)
    base, judge, masks, substitutes, helper = inputs
    rewriter = model_rewriter(helper, args.max_new_tokens, args.batch_size)
    t0 = time.time()
    rewritten = sanitize(base, masks, judge, rewriter=rewriter)
    seconds = time.time() - t0
    data = {"qwen": rewritten.items, "substitute": substitutes.items[: len(masks)]}
    sample = sorted(random.Random(0).sample(range(len(masks)), min(args.sample, len(masks))))
    return {
        "rewriter": rewriter.describe() | {"spec": "tiny" if args.smoke else args.rewriter},
        "inputs": str(args.run) if not args.smoke else "smoke",
        "n": len(masks),
        "sample": sample,
        "rows": rows(masks, data),
        "seconds": {"qwen_sanitize": seconds, "total": time.time() - start},
        "hardware": hardware(),
    }


def main() -> None:
    args = arguments()
    out = args.out / "rewriter_eval.json"
    record = json.loads(out.read_text()) if args.report_only else generate_record(args)
    record["table"] = table(record, read_labels(LABELS))
    write_json(out, record)
    md = report(record)
    write_text(args.out / "rewriter_eval.md", md)
    print(md)


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


SUBSETS = {"all": "all queries", "with_cue": "queries whose mask has a harmful cue"}
PROMPT_NOTE = (
    "Prompt: `REWRITE_PROMPT` in `src/refusal_lens/triggers/rewrite.py`. Before this run, eight "
    "other wordings were tried on 6 of these queries (two in-prompt examples; the same examples "
    "as chat turns with a system prompt; 'write a different request', with and without a "
    "system prompt; 'edit this sentence', with and without an example; a JSON-completion "
    "frame; 'write a new request that begins like the query'): the model copied the query, "
    "answered it, refused or copied an example; none gave a benign request that kept the "
    "query's form, so none replaced the documented prompt."
)


def report(record: dict) -> str:
    n, s = record["n"], len(record["sample"])
    lines = [
        f"Rewrites of the first {n} masked harmful queries; hand labels on a seeded sample of "
        f"{s} (rules: `experiments/data/rewriter_labels.md`).",
    ]
    for subset, title in SUBSETS.items():
        lines += ["", f"**{title}**", "", *rewriter_table(record["table"][subset])]
    lines += [
        "",
        "Automatic columns over all queries of the subset; `kept by filter`: sanitize's judge, "
        "unchanged and base-model-answer checks; `benign among kept`: hand labels of the "
        "sampled rewrites the filter kept (how many in brackets).",
        "",
        PROMPT_NOTE,
        "",
        "| query | Qwen rewrite | 135M substitute |",
        "|---|---|---|",
    ]
    for row in [r for r in record["rows"] if r["index"] in record["sample"]][:8]:
        cells = [row["query"], row["qwen"]["text"], row["substitute"]["text"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    secs = record["seconds"]
    lines += [
        "",
        f"{record['hardware']}; Qwen rewrites and filter {secs['qwen_sanitize'] / 60:.1f} min, "
        f"{secs['total'] / 60:.1f} min in all. Command: `python experiments/rewriter_eval.py`.",
    ]
    return "\n".join(lines) + "\n"


def rewriter_table(t: dict) -> list[str]:
    lines = [
        "| rewriter | n | labelled | fluent | benign | fluent and benign | triggers kept (hand) "
        "| triggers kept (auto) | unchanged | kept by filter | benign among kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in REWRITERS.items():
        r = t[name]
        lines.append(
            f"| {label} | {r['n']} | {r['labelled']} | {pct(r['fluent'])} | {pct(r['benign'])} "
            f"| {pct(r['fluent_and_benign'])} | {pct(r['triggers_kept'])} "
            f"| {pct(r['triggers_kept_auto'])} | {pct(r['unchanged'])} "
            f"| {pct(r['kept_by_filter'])} | {pct(r['benign_among_kept'])} "
            f"({r['kept_by_filter_labelled']}) |"
        )
    return lines


if __name__ == "__main__":
    main()
