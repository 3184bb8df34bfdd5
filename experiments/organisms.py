"""Two organisms side by side: each paper's finding on SmolLM2 aligned here and on Qwen aligned
by its makers, read from their run folders.

    refusal-lens run --quick MODEL --out runs/quick/MODEL      # both models
    python experiments/attribution_eval.py --run runs/quick/MODEL --out figures/organisms/MODEL \
        --n 12                                                    # both models
    python experiments/organisms.py [--runs runs/quick/smollm2-135m runs/quick/qwen2.5-coder-0.5b]
        [--n 32] [--max-new-tokens 32] [--threads 0]
    python experiments/organisms.py --report-only   # the .md again from OUT/organisms.json

Per run folder, nothing of the run is recomputed; the script reads:

- Arditi et al.: from ``04-interventions/interventions.json``, the share refused (substring
  judge, validation prompts) of the harmful sets with ``r`` ablated and of Alpaca with ``r``
  added; from ``03-direction/selection.json``, how many scored candidates pass KL < kl_max;
- Wang et al.: the same file's rows for w′ at each λ: benign look-alikes (borderline and
  XSTest-safe) against the harmful sets;
- attribution: ``OUT/<model>/attribution_eval.json`` (``attribution_eval.py --run``):
  occlusion's deletion AUC against random deletion, and its AUROC against XSTest's focus words;
- paper 1: ``07-geometry/geometry.json``: the layer where the probe's margin best tells the
  refused borderline prompts from the answered ones;
- RASS: ``08-rass/rass.jsonl``, the selected prompts. This is the one measurement made here:
  the run's model (its score fit applied, :func:`refusal_lens.pipeline.load_run_model`)
  answers a seeded sample of ``n`` selected prompts and ``n`` held-out XSTest-safe prompts
  (greedy, ``max_new_tokens``), judged by the substring and fitted score judges.

Each finding gets a verdict by a rule stated in the table's notes; every refusal share is
given with its 95 % Wilson interval. Writes
``OUT/organisms.{md,json}``. ``--smoke``: a ``run --quick`` of the tiny random model (few
prompts; the organism check and RASS left out, since a random model neither refuses nor
writes requests) in a new temporary folder, read the same way (see ``common.py``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from common import hardware, newcombe, parse, parser, project_path, share_text, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import EvalConfig, evaluate
from refusal_lens.pipeline import RunConfig, load_run_model, run_pipeline
from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.stats import fisher_exact, mcnemar, wilson

DEFAULT_RUNS = [Path("runs/quick/smollm2-135m"), Path("runs/quick/qwen2.5-coder-0.5b")]
BENIGN_LOOKALIKES = ("borderline", "XSTest-safe")
HARMFUL = ("XSTest-unsafe", "AdvBench", "JailbreakBench")
JUDGE = "substring"


def read(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def share(rates: dict[str, dict[str, float]], sets: tuple[str, ...]) -> float:
    """Mean share refused over the sets the run evaluated."""
    return mean(rates[s][JUDGE] for s in sets if s in rates)


# --- each finding, from one run folder ---------------------------------------------------------


def paired(record: dict, a: str, b: str, sets: tuple[str, ...]) -> dict | None:
    """The exact McNemar test of conditions ``a`` and ``b`` on the same prompts of ``sets``
    (pooled), by the substring judge; None for runs that kept no per-prompt verdicts."""
    flags = record.get("refused")
    if not flags or a not in flags or b not in flags:
        return None
    fa = [f for s in sets if s in flags[a] for f in flags[a][s][JUDGE]]
    fb = [f for s in sets if s in flags[b] for f in flags[b][s][JUDGE]]
    return mcnemar(fa, fb) if fa else None


def arditi(folder: Path) -> dict[str, Any]:
    record = read(folder, f"{FOLDERS['interventions']}/interventions.json")
    inter = record["refusal"]
    add = next(k for k in inter if k.startswith("add r"))
    selection = read(folder, f"{FOLDERS['direction']}/selection.json")
    scored = [c for c in selection["candidates"] if c["kl"] is not None]
    kl_max = selection["config"]["kl_max"]
    return {
        "harmful_no_edit": share(inter["no edit"], HARMFUL),
        "harmful_ablate_r": share(inter["ablate r"], HARMFUL),
        "alpaca_no_edit": inter["no edit"]["Alpaca"][JUDGE],
        "alpaca_add_r": inter[add]["Alpaca"][JUDGE],
        "test_ablate_r": paired(record, "ablate r", "no edit", HARMFUL),
        "test_add_r": paired(record, add, "no edit", ("Alpaca",)),
        "kl_max": kl_max,
        "n_scored": len(scored),
        "n_pass_kl": sum(c["kl"] < kl_max for c in scored),
        "min_kl": min(c["kl"] for c in scored),
        "direction": read(folder, f"{FOLDERS['direction']}/direction.json"),
        "fallback": selection["fallback"],
    }


def wang(folder: Path, harmful_drop: float) -> dict[str, Any]:
    record = read(folder, f"{FOLDERS['interventions']}/interventions.json")
    inter = record["refusal"]
    rows = {
        cond: {"benign": share(r, BENIGN_LOOKALIKES), "harmful": share(r, HARMFUL)}
        for cond, r in inter.items()
        if cond == "no edit" or cond.startswith("ablate w′")
    }
    base = rows["no edit"]
    kept = {c: r for c, r in rows.items() if r["harmful"] >= base["harmful"] - harmful_drop}
    best = min(kept, key=lambda c: kept[c]["benign"])
    test = paired(record, best, "no edit", BENIGN_LOOKALIKES)
    return {"rows": rows, "best": best, "harmful_drop": harmful_drop, "test": test}


def attribution(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    occ = results["summary"]["occlusion"]
    return {
        "n": len(results["prompts"]),
        "auc": occ["deletion"]["auc"],
        "vs_random": occ["vs_random"],
        "random_auc": results["summary"]["random"]["deletion"]["auc"],
        "auroc_focus": occ["auroc"].get("XSTest-safe"),
    }


def geometry(folder: Path) -> dict[str, Any] | None:
    record = read(folder, f"{FOLDERS['geometry']}/geometry.json")
    # the layers where the borderline prompts hold both verdicts
    rows = [r for r in record["summary"] if r["margin_auroc_refused"] is not None]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["margin_auroc_refused"])
    return {
        "layer": best["layer"],
        "n_layers": max(record["layers"]) + 1,
        "auroc": best["margin_auroc_refused"],
        "refused": best["refused_margin_median"],
        "answered": best["answered_margin_median"],
        "first_layer_07": next(
            (r["layer"] for r in rows if r["margin_auroc_refused"] >= 0.7), None
        ),
    }


def rass(folder: Path, n: int, max_new_tokens: int, seed: int) -> dict[str, Any]:
    """Refusal of the RASS-selected prompts against XSTest-safe, generated here (XSTest-safe
    alone when the run has no RASS step)."""
    has_rass = (folder / FOLDERS["rass"] / "stage.json").is_file()
    selected = folder / FOLDERS["rass"] / "rass.jsonl"
    model = load_run_model(folder, device="cpu")
    config = EvalConfig(
        n=n,
        sets=("XSTest-safe",),
        extra={"RASS": (str(selected), "benign")} if has_rass else {},
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    result = evaluate(model, config)
    summary = read(folder, f"{FOLDERS['rass']}/rass_summary.json") if has_rass else {"groups": {}}
    return {
        "selected": summary.get("selected"),
        "removed_as_harmful": sum(g.get("judged harmful", 0) for g in summary["groups"].values()),
        "refused": {s: {j: r[j] for j in config.judges} for s, r in result.sets.items()},
        "counts": {s: r["counts"][JUDGE] for s, r in result.sets.items()},
        "n": {s: r["n"] for s, r in result.sets.items()},
        "threshold": model.refusal_threshold,
    }


def stage_times(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each stage's wall time and the process's peak memory after it, as the run recorded
    them (a stage reused from an earlier run shows the time of the run that made it)."""
    return [
        {k: s.get(k) for k in ("name", "status", "seconds", "peak_rss_mb")} for s in run["stages"]
    ]


def validation_sizes(n_validation: int, eval_sets: Any) -> dict[str, int]:
    """Prompts behind each pooled intervention share: ``n_validation`` per set the run
    evaluated, over the harmful sets, the benign look-alikes and Alpaca."""
    return {
        "harmful": n_validation * sum(s in eval_sets for s in HARMFUL),
        "benign": n_validation * sum(s in eval_sets for s in BENIGN_LOOKALIKES),
        "alpaca": n_validation * ("Alpaca" in eval_sets),
    }


def sizes_of(o: dict[str, Any]) -> dict[str, int]:
    """:func:`validation_sizes` as recorded, or (records before they were kept) from the
    sets of the run's preset."""
    if "sizes" in o:
        return o["sizes"]
    sets = RunConfig.preset(quick=o["quick"]).evaluate.sets
    return validation_sizes(o["n_validation"], sets)


def organism(folder: Path, args) -> dict[str, Any]:
    run = read(folder, "run.json")
    c = run["config"]
    record = read(folder, f"{FOLDERS['organism']}/organism.json")
    print(f"{folder}: measuring RASS and XSTest-safe refusal ...", flush=True)
    return {
        "folder": str(folder),
        "model": run["model"],
        "quick": run["config"]["quick"],
        "n_validation": c["interventions"]["n_validation"],
        "sizes": validation_sizes(c["interventions"]["n_validation"], c["evaluate"]["sets"]),
        "aligned_here": record["aligned"],
        "calibration": record.get("calibration"),
        "arditi": arditi(folder),
        "wang": wang(folder, c["interventions"]["harmful_drop"]),
        "attribution": attribution(args.out / "organisms" / run["model"] / "attribution_eval.json"),
        "geometry": geometry(folder),
        "rass": rass(folder, args.n, args.max_new_tokens, args.seed),
        "stages": stage_times(run),
        "run_seconds": run["seconds"],
        "run_hardware": run["hardware"],
        "versions": run["versions"],
    }


# --- the table ---------------------------------------------------------------------------------


def pct(x: float, n: int) -> str:
    """A share of ``n`` in percent with its 95 % Wilson interval (count: share × n)."""
    return share_text(x, n)


def verdict(holds: bool | None, p: float | None = None, apart: bool | None = None) -> str:
    """The finding's verdict: it holds when its rule is met and, where a test applies, the
    test rejects no change at the 5 % level; "not determined" when the rule is met but the
    prompts cannot tell it from no change. Without the paired test (``p`` None, records
    without per-prompt verdicts), ``apart`` says whether Newcombe's interval of the change
    excludes 0 (marked †)."""
    if holds is None:
        return "–"
    if not holds:
        return "**does not hold**" + ("" if p is None else f" (p = {p:.2g})")
    if p is None:
        return "**holds**" if apart is None else ("**holds**†" if apart else "**not determined**†")
    return f"**holds** (p = {p:.2g})" if p < 0.05 else f"**not determined** (p = {p:.2g})"


def p_of(test: dict | None) -> float | None:
    return None if test is None else test["p"]


def apart(before: float, after: float, n: int) -> bool:
    """Whether Newcombe's 95 % interval of ``after − before`` (two shares of ``n`` prompts, as
    for independent samples: conservative on the same prompts) excludes 0."""
    kb, ka = round(before * n), round(after * n)
    lo, hi = newcombe(before, wilson(kb, n), after, wilson(ka, n))
    return lo > 0 or hi < 0


def edit_cells(o: dict[str, Any]) -> dict[str, str]:
    """The findings on the edits: ablating and adding r, the KL filter, ablating w′."""
    a, w, n = o["arditi"], o["wang"], sizes_of(o)
    best, base = w["rows"][w["best"]], w["rows"]["no edit"]
    nh, nb, na = n["harmful"], n["benign"], n["alpaca"]
    tested = w["best"] != "no edit"
    return {
        "ablating r frees harmful prompts": f"harmful refused {pct(a['harmful_no_edit'], nh)} "
        f"→ {pct(a['harmful_ablate_r'], nh)}: "
        + verdict(
            a["harmful_ablate_r"] <= a["harmful_no_edit"] / 2 if a["harmful_no_edit"] else None,
            p_of(a.get("test_ablate_r")),
            apart(a["harmful_no_edit"], a["harmful_ablate_r"], nh),
        ),
        "adding r induces refusal": f"Alpaca refused {pct(a['alpaca_no_edit'], na)} → "
        f"{pct(a['alpaca_add_r'], na)}: "
        + verdict(
            a["alpaca_add_r"] > 0.5,
            p_of(a.get("test_add_r")),
            apart(a["alpaca_no_edit"], a["alpaca_add_r"], na),
        ),
        "some candidate passes KL < 0.1": f"{a['n_pass_kl']} of {a['n_scored']} (lowest KL "
        f"{a['min_kl']:.3f}; chosen: layer {a['direction']['layer']}, KL "
        f"{a['direction']['scores']['kl']:.3f}): " + verdict(a["n_pass_kl"] > 0),
        "ablating w′ lowers over-refusal, harmful refusal kept": f"best {w['best']}: benign "
        f"look-alikes {pct(base['benign'], nb)} → {pct(best['benign'], nb)}, harmful "
        f"{pct(base['harmful'], nh)} → {pct(best['harmful'], nh)}: "
        + verdict(
            base["benign"] - best["benign"] >= 0.10,
            p_of(w.get("test")) if tested else None,
            apart(base["benign"], best["benign"], nb) if tested else None,
        ),
    }


def cells(o: dict[str, Any]) -> dict[str, str]:
    """One column of the table: each finding's numbers and verdict for one organism."""
    g, r, t = o["geometry"], o["rass"], o["attribution"]
    out = edit_cells(o)
    out |= {
        "occlusion is faithful (deletion beats random)": "not measured"
        if t is None
        else f"AUC {t['auc']:+.2f} vs random {t['random_auc']:+.2f} (difference "
        f"{t['vs_random']['mean']:+.2f} ± {t['vs_random']['se']:.2f}, {t['n']} prompts): "
        + verdict(t["vs_random"]["mean"] > 2 * t["vs_random"]["se"]),
        "occlusion finds XSTest's focus words": "not measured"
        if t is None or t["auroc_focus"] is None
        else f"AUROC {t['auroc_focus']['pooled']:.2f} pooled, "
        f"{t['auroc_focus']['per_prompt_mean']:.2f} per prompt "
        f"({t['auroc_focus']['n_prompts']} prompts; 0.5 = chance): "
        + verdict(t["auroc_focus"]["pooled"] >= 0.7),
        "refused look-alikes sit nearer the harmful side": "no layer has both verdicts"
        if g is None
        else f"best layer {g['layer']} of "
        f"{g['n_layers']}: AUROC {g['auroc']:.2f}, median margin refused {g['refused']:+.2f} vs "
        f"answered {g['answered']:+.2f}"
        + (f"; AUROC ≥ 0.7 from layer {g['first_layer_07']}: " if g["first_layer_07"] else ": ")
        + verdict(g["auroc"] >= 0.7),
    }
    xs, n_xs = r["refused"]["XSTest-safe"][JUDGE], r["n"]["XSTest-safe"]
    if "RASS" not in r["refused"]:
        out["RASS prompts refused more than XSTest-safe"] = (
            f"no RASS step; XSTest-safe {pct(xs, n_xs)}"
        )
        return out
    sel = r["refused"]["RASS"][JUDGE]
    out["RASS prompts refused more than XSTest-safe"] = (
        f"{r['selected']} selected ({r['removed_as_harmful']} removed as harmful); refused "
        f"{pct(sel, r['n']['RASS'])} (n {r['n']['RASS']}) vs XSTest-safe {pct(xs, n_xs)} "
        f"(n {n_xs}): " + verdict(sel > xs, rass_p(r))
    )
    return out


def rass_p(r: dict[str, Any]) -> float | None:
    """Fisher's exact test of RASS's refused share against XSTest-safe's (unpaired), from the
    counts (records before counts were kept: share × n)."""
    if "RASS" not in r["n"]:
        return None
    counts = r.get("counts") or {
        s: {"refused": round(r["refused"][s][JUDGE] * r["n"][s]), "n": r["n"][s]}
        for s in ("RASS", "XSTest-safe")
    }
    a, b = counts["RASS"], counts["XSTest-safe"]
    return fisher_exact(a["refused"], a["n"], b["refused"], b["n"])


NOTES = (
    "Verdict rules: ablation holds when harmful refusal at least halves; addition when more "
    "than half of Alpaca is refused; w′ when the benign look-alikes (borderline, XSTest-safe) "
    "fall by ≥ 10 points at a λ whose harmful refusal stays within the run's harmful_drop; "
    "faithfulness when occlusion's deletion AUC beats random by more than 2 SE; focus words "
    "when the pooled AUROC is ≥ 0.7; geometry when some layer's margin tells refused from "
    "answered borderline prompts with AUROC ≥ 0.7; RASS when its prompts are refused more "
    "often than XSTest-safe. A rule that is met holds only when its test rejects no change "
    "at the 5 % level (exact McNemar on the same prompts for the edits, Fisher's exact test "
    "for RASS against XSTest-safe); otherwise it is not determined. †: the record holds no "
    "per-prompt verdicts of the edits (runs made before they were kept), so in place of "
    "McNemar's test the rule holds only when Newcombe's 95 % interval of the change (from the "
    "two Wilson intervals, as for independent samples: conservative on the same prompts) "
    "excludes 0. Refusal shares use the substring judge, each with its [95 % Wilson "
    "interval] (count: share × n); interventions are on the run's validation prompts "
    "(n_validation per set, pooled over the harmful sets and over the look-alikes; records "
    "without the set list: the sets of the run's preset), RASS and XSTest-safe on n "
    "generated answers here."
)


def title(o: dict[str, Any]) -> str:
    how = "aligned here" if o["aligned_here"] else "aligned by its makers"
    return f"{o['model']} ({how}; {'quick' if o['quick'] else 'full'} run)"


def speed_table(organisms: list[dict[str, Any]]) -> str:
    """Stage by stage: seconds and peak memory of each run, side by side."""
    head = "| stage | " + " | ".join(f"{o['model']} s | peak MB" for o in organisms) + " |"
    lines = [head, "|---" + "|---:|---:" * len(organisms) + "|"]
    by_name = [{s["name"]: s for s in o["stages"]} for o in organisms]
    for name in by_name[0]:
        row = []
        for stages in by_name:
            s = stages.get(name, {})
            mark = "" if s.get("status") == "ran" else f" ({s.get('status', 'absent')})"
            peak = s.get("peak_rss_mb")
            row += [f"{s.get('seconds', 0):.0f}{mark}", "–" if peak is None else f"{peak:.0f}"]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    total = " | ".join(f"**{o['run_seconds'] / 60:.1f} min** | –" for o in organisms)
    lines.append(f"| whole run | {total} |")
    return "\n".join(lines)


def fit_text(o: dict[str, Any]) -> str:
    """The score judge's fit: its threshold and its agreement with the substring verdicts on
    the check's answers, before and after, with intervals."""
    c = o["calibration"]
    if not c:
        return f"{o['model']}: not fitted"
    n = c["n_refused"] + c["n_answered"]
    return (
        f"{o['model']}: threshold {c['threshold']:+.2f}, agreement on {n} answers "
        f"{pct(c['agreement_before'], n)} → {pct(c['agreement_after'], n)}"
    )


def markdown(results: dict[str, Any]) -> str:
    columns = [cells(o) for o in results["organisms"]]
    head = "| finding | " + " | ".join(title(o) for o in results["organisms"]) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {k} | " + " | ".join(c[k] for c in columns) + " |" for k in columns[0]]
    fits = "; ".join(fit_text(o) for o in results["organisms"])
    return (
        "\n".join(lines)
        + f"\n\n{NOTES} Score-judge fits (step 1): {fits}.\n\nMade by `{results['command']}` "
        f"on {results['hardware']} in {results['minutes']:.1f} min.\n\n"
        + "Stage timings as each run recorded them (`run.json`; peak memory: the process's "
        + "peak resident set after the stage, so it never falls), on "
        + ", ".join(sorted({o["run_hardware"] for o in results["organisms"]}))
        + ":\n\n"
        + speed_table(results["organisms"])
        + "\n"
    )


def smoke_runs(out: Path, model: str) -> list[Path]:
    """A quick run of the tiny random model, with few prompts, for ``--smoke``."""
    folder = out / "runs" / "tiny"
    small: dict[str, Any] = dict(max_new_tokens=4, evaluate=dict(n=4))
    small |= dict(organism=dict(n_check=4, n_harmful=8, n_benign=8))
    small |= dict(direction=dict(n_train=8, n_val=4, top_k=2, n_false_refusal=8))
    small |= dict(interventions=dict(n_validation=4), geometry=dict(n=12, n_lookalikes=8))
    # without "organism", the run studies the model as given (a random model refuses nothing,
    # so the organism check would stop the run); without "rass" (it writes no requests)
    stages = ("model", "evaluate", "direction", "interventions", "geometry")
    config = RunConfig.preset(quick=True, model=model, stages=stages, **small)
    run_pipeline(config, folder)
    return [folder]


def main() -> None:
    cli = parser(__doc__, n=32, max_new_tokens=32, seed=0, threads=0)
    cli.add_argument("--runs", type=project_path, nargs="+", default=DEFAULT_RUNS)
    cli.add_argument("--report-only", action="store_true", help="the .md again from the JSON")
    args = parse(cli, smoke={"n": 4, "max_new_tokens": 4})
    if args.report_only:
        results = json.loads((args.out / "organisms.json").read_text())
        write_text(args.out / "organisms.md", markdown(results))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    runs = smoke_runs(args.out, args.model) if args.smoke else args.runs
    results = {
        "organisms": [organism(folder, args) for folder in runs],
        "command": " ".join(["python experiments/organisms.py", *sys.argv[1:]]),
        "hardware": hardware(),
    }
    results["minutes"] = (time.time() - start) / 60
    write_json(args.out / "organisms.json", results)
    text = markdown(results)
    write_text(args.out / "organisms.md", text)
    print(text)


if __name__ == "__main__":
    main()
