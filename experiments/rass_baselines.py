"""RASS against its baselines: are the prompts RASS selects refused more than look-alikes?

    python experiments/rass_baselines.py RUN[=NAME] [RUN[=NAME] ...] [--n 48]
        [--max-new-tokens 32] [--out figures]
    python experiments/rass_baselines.py --report-only    # the .md again from the .json

Per run folder (a finished run with a RASS step), the run's model
(:func:`refusal_lens.pipeline.load_run_model`, its score fit applied) answers, greedily:

- up to ``--n`` of the prompts RASS selected (``08-rass/rass.jsonl``, a seeded sample);
- ``--n`` held-out prompts of each baseline: XSTest-safe (hand-written look-alikes), the
  shipped borderline set (OKTest-like look-alikes) and Alpaca (random benign requests).

Answers are judged by the substring judge with the degeneration detector (the default judge,
``figures/judge_agreement.md``). Per set: the refused share with its 95 % Wilson interval;
RASS against each baseline: Fisher's exact test (two samples of different prompts), "higher",
"lower" or "not determined" at the 5 % level. Per generator (steering at each coefficient,
trigger recombination), from ``08-rass/rass_candidates.jsonl``: candidates produced, passing
the screen, judged benign (the harm judge's probability under its threshold and the harm-cue
re-check), selected (in the band and benign), and the refused share of its selected prompts
and of a seeded sample of its benign candidates *outside* the band (up to ``--n`` in all):
which generator and coefficient yields prompts near the boundary, and whether the band picks
refused prompts better than the generator does without it (Fisher). The run's RASS selection
rule (layer and band) is quoted from its section. Writes ``OUT/rass_baselines.{md,json}``.

The borderline baseline may share prompts with the geometry stage's validation look-alikes
that fitted RASS's band; the band is fitted on them, the baseline measures them, and no
selected prompt is one of them (RASS writes new requests).

``--smoke``: a synthetic run folder (the tiny random model as the run's model, six "selected"
prompts from two generators), 4 prompts per set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from common import hardware, parse, parser, project_path, smoke_model, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import EvalConfig, evaluate
from refusal_lens.pipeline import load_run_model
from refusal_lens.pipeline.records import Organism
from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.stats import fisher_exact, rate_text
from refusal_lens.triggers.harm_check import cue_check, run_check

BASELINES = ("XSTest-safe", "borderline", "Alpaca")
JUDGE = "substring"
NAME = "rass_baselines"


def arguments(argv: list[str] | None = None):
    p = parser(__doc__, n=48)
    p.add_argument("runs", nargs="*", help="RUN[=NAME]: a run folder and the model's name")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json")
    args = parse(p, argv, smoke={"n": 4, "max_new_tokens": 4})
    if args.smoke:
        args.runs = [f"{synthetic_run(args.out / 'run')}=tiny"]
    elif not args.runs and not args.report_only:
        p.error("give at least one run folder (or --report-only)")
    return args


def synthetic_run(run: Path) -> Path:
    """A run folder whose model is the tiny random model, with six selected prompts."""
    (run / FOLDERS["organism"]).mkdir(parents=True, exist_ok=True)
    (run / FOLDERS["rass"]).mkdir(exist_ok=True)
    model = smoke_model()
    Organism(base=model, model=model, note="synthetic: not checked").save(run / FOLDERS["organism"])
    rows = [
        {
            "text": f"Help me plan a picnic for {k} friends.",
            "label": "borderline",
            "provenance": {"method": m, "coef": c},
        }
        for k, (m, c) in enumerate([("steer", 0.5), ("recombine", None)] * 3, start=2)
    ]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (run / FOLDERS["rass"] / "rass.jsonl").write_text(lines)
    scored = {"margin": 0.0, "p_harmful": 0.1}
    outside = [
        {"text": f"Help me tidy {k} rooms.", "reason": "outside the band (margin +2)"}
        | scored
        | {"provenance": {"method": "steer", "coef": 1.0}}
        for k in range(3)
    ]
    screened_out = [{"text": "x", "reason": "not a request", "provenance": {"method": "steer"}}]
    candidates = [r | {"reason": ""} | scored for r in rows] + outside + screened_out
    text = "".join(json.dumps(r) + "\n" for r in candidates)
    (run / FOLDERS["rass"] / "rass_candidates.jsonl").write_text(text)
    (run / FOLDERS["rass"] / "rass.json").write_text(
        json.dumps({"harm_scorer": {"threshold": 0.5}})
    )
    text = {"text": ["6 selected. Selection: layer 2 (synthetic)."]}
    (run / FOLDERS["rass"] / "section.json").write_text(json.dumps(text))
    return run


def provenance(folder: Path) -> dict[str, str]:
    """Each selected prompt's generator (:func:`generator_of`)."""
    with (folder / FOLDERS["rass"] / "rass.jsonl").open(encoding="utf-8") as f:
        return {row["text"]: generator_of(row) for row in map(json.loads, f)}


def generator_of(row: dict[str, Any]) -> str:
    """``steer coef C`` or ``recombine`` (or the method) of a candidate or selected row."""
    source = row.get("provenance", {})
    coef = source.get("coef")
    return source.get("method", "?") + (f" coef {coef:g}" if coef is not None else "")


def funnel(folder: Path, out: Path, n: int, seed: int) -> dict[str, dict[str, int]]:
    """Per generator: candidates produced, screened in, judged benign, selected; writes a seeded
    sample of up to ``n`` benign candidates outside the band to ``out`` (a prompt file)."""
    import random

    path = folder / FOLDERS["rass"] / "rass_candidates.jsonl"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    meta = json.loads((folder / FOLDERS["rass"] / "rass.json").read_text(encoding="utf-8"))
    threshold = meta.get("harm_scorer", {}).get("threshold", 0.5)
    screened = [r for r in rows if "margin" in r]  # the screen sets no scores on what it drops
    flags = run_check(cue_check, [r.get("english", r["text"]) for r in screened])
    benign = [r for r, f in zip(screened, flags, strict=True) if f is None]
    benign = [r for r in benign if r["p_harmful"] < threshold]
    table: dict[str, dict[str, int]] = {}
    for key, group in (("produced", rows), ("screened", screened), ("benign", benign)):
        for r in group:
            table.setdefault(generator_of(r), {}).setdefault(key, 0)
            table[generator_of(r)][key] += 1
    for r in rows:
        row = table[generator_of(r)]
        row["selected"] = row.get("selected", 0) + int(r["reason"] == "")
    outside = [r for r in benign if r["reason"].startswith("outside the band")]
    sample = random.Random(seed).sample(outside, min(n, len(outside)))
    lines = [json.dumps({"text": r["text"], "label": "borderline"}) for r in sample]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "".join(x + "\n" for x in lines))
    return table


def measure(
    folder: Path, name: str, n: int, max_new_tokens: int, seed: int, scratch: Path
) -> dict[str, Any]:
    """Every set's refused count under the judge, RASS's per generator, and the tests."""
    model = load_run_model(folder, device="cpu")
    selected = folder / FOLDERS["rass"] / "rass.jsonl"
    outside = scratch / f"{name}_outside_band.jsonl"  # never written into the run folder
    table = funnel(folder, outside, n, seed)
    extra = {"RASS": (str(selected), "benign")}
    if outside.read_text(encoding="utf-8").strip():
        extra["outside band"] = (str(outside), "benign")
    config = EvalConfig(
        n=n,
        sets=BASELINES,
        extra=extra,
        max_new_tokens=max_new_tokens,
        seed=seed,
        judges=(JUDGE,),
    )
    result = evaluate(model, config)
    counts = {s: r["counts"][JUDGE] for s, r in result.sets.items()}
    sets = {s: {"n": r["n"], "refused": counts[s]["refused"]} for s, r in result.sets.items()}
    for s in sets:
        sets[s]["degenerate"] = counts[s].get("degenerate", 0)
    made_by = provenance(folder)
    with (folder / FOLDERS["rass"] / "rass_candidates.jsonl").open(encoding="utf-8") as f:
        outside_made_by = {r["text"]: generator_of(r) for r in map(json.loads, f)}
    for row in result.prompts:
        if row["set"] not in ("RASS", "outside band"):
            continue
        by = made_by if row["set"] == "RASS" else outside_made_by
        key = "refused" if row["set"] == "RASS" else "refused_outside"
        g = table.setdefault(by.get(row["text"], "?"), {})
        g[key + "_n"] = g.get(key + "_n", 0) + 1
        g[key] = g.get(key, 0) + int(row["refused"][JUDGE])
    generators = table
    rass = sets["RASS"]
    tests = {
        b: fisher_exact(rass["refused"], rass["n"], sets[b]["refused"], sets[b]["n"])
        for b in (*BASELINES, "outside band")
        if b in sets
    }
    section = json.loads((folder / FOLDERS["rass"] / "section.json").read_text(encoding="utf-8"))
    return {
        "name": name,
        "folder": str(folder),
        "sets": sets,
        "generators": generators,
        "fisher_p": tests,
        "selection": section["text"][0],
        "answers": [r for r in result.prompts if r["set"] == "RASS"],
    }


def generator_key(name: str) -> tuple[str, float]:
    """Sort key: recombination first, then steering by coefficient."""
    method, _, coef = name.partition(" coef ")
    return (method != "recombine", float(coef) if coef else 0.0)


def verdict(a: dict[str, int], b: dict[str, int], p: float) -> str:
    if p >= 0.05:
        return f"not determined (p = {p:.2g})"
    higher = a["refused"] / a["n"] > b["refused"] / b["n"]
    return f"{'higher' if higher else 'lower'} (p = {p:.2g})"


def report(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# RASS against its baselines",
        "",
        f"Made by `{meta['command']}` on {meta['hardware']}. Refused share (substring judge "
        "with the degeneration detector, 95 % Wilson interval) of the prompts RASS selected "
        "and of held-out baseline prompts, answered by the run's model; RASS against each "
        "baseline by Fisher's exact test.",
        "",
        "| model | RASS | "
        + " | ".join(BASELINES)
        + " | "
        + " | ".join(f"RASS vs {b}" for b in BASELINES)
        + " |",
        "|---" * (2 + 2 * len(BASELINES)) + "|",
    ]
    for r in records:
        s = r["sets"]
        rates = [
            rate_text(s[x]["refused"], s[x]["n"]) + f" (n {s[x]['n']})"
            for x in ("RASS", *BASELINES)
        ]
        tests = [verdict(s["RASS"], s[b], r["fisher_p"][b]) for b in BASELINES]
        lines.append(f"| {r['name']} | " + " | ".join(rates + tests) + " |")
    lines += ["", "## The band against the generators' other benign candidates", ""]
    for r in records:
        s = r["sets"]
        if "outside band" in s:
            lines.append(
                f"- {r['name']}: selected {rate_text(s['RASS']['refused'], s['RASS']['n'])}"
                f" refused, benign candidates outside the band "
                f"{rate_text(s['outside band']['refused'], s['outside band']['n'])}: "
                + verdict(s["RASS"], s["outside band"], r["fisher_p"]["outside band"])
            )
    lines += ["", "## The generators", ""]
    lines += [
        "Candidates each generator produced, passing the screen, judged benign (harm judge "
        "and harm-cue re-check), selected; the refused share of its selected prompts and of "
        "its sampled benign candidates outside the band.",
        "",
        "| model | generator | produced | screened | benign | selected | refused (selected) "
        "| refused (outside band) |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in records:
        for g, c in sorted(r["generators"].items(), key=lambda kv: generator_key(kv[0])):
            cells = [str(c.get(k, 0)) for k in ("produced", "screened", "benign", "selected")]
            for key in ("refused", "refused_outside"):
                n = c.get(key + "_n", 0)
                cells.append(f"{rate_text(c[key], n)} (n {n})" if n else "–")
            lines.append(f"| {r['name']} | {g} | " + " | ".join(cells) + " |")
    lines += ["", "## Where each run selected", ""]
    lines += [f"- {r['name']}: {r['selection']}" for r in records]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    out = args.out / f"{NAME}.json"
    if args.report_only:
        data = json.loads(out.read_text(encoding="utf-8"))
    else:
        records = []
        for spec in args.runs:
            folder, _, name = spec.partition("=")
            path = project_path(folder)
            scratch = args.out / f"{NAME}_data"
            record = measure(
                path, name or path.name, args.n, args.max_new_tokens, args.seed, scratch
            )
            records.append(record)
        command = "python experiments/rass_baselines.py " + " ".join(sys.argv[1:])
        data = {"meta": {"command": command.strip(), "hardware": hardware()}, "runs": records}
        write_json(out, data)
    write_text(args.out / f"{NAME}.md", report(data["runs"], data["meta"]))


if __name__ == "__main__":
    main()
