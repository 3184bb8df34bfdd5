"""Do the papers' claims reproduce? The results index's table, made from the figures' JSON.

    python experiments/claims.py [--figures figures] [--out figures]

Reads only what the experiments wrote (no model runs), per claim and bundled model
(``refusal_lens.models.spec.BUNDLED``; a model the data has no entry for gets a row "not
measured" that says which file lacks it):

1. *Paper 1: RASS finds prompts the model over-refuses (more than look-alikes).*
   ``rass_baselines.json``: the pipeline run of each model in :data:`RUNS` (its own selection
   rule), the refused share of RASS's selected prompts against the hand-written look-alikes
   (XSTest-safe) under the run's judge, Fisher's exact test as stored there. For the model of
   ``rass/rass.json`` also ``rass_eval.json``: the full-size RASS run at the refusal direction's
   fixed layer, the same two sets under the same judge (counts: share × n).
2. *Paper 1: RASS prompts as* ``D_b`` *lower over-refusal.* ``trigger_alignment.json``: arm
   (c) (RASS-selected ``D_b``) against (a) (Alpaca ``D_b``), per set and judge by the paired
   sign-flip test over seeds (:func:`refusal_lens.stats.paired_seeds`, as that script's
   table); the sets that differ at p < 0.05 are listed.
3. *Paper 1: RASS extends to other languages.* ``rass_language.json`` with its hand labels
   (``experiments/data/rass_language_labels.jsonl``): per model and language, the selected
   prompts' refused share against the language's harmless test prompts, Fisher's exact test
   (``rass_language.claim``).
4. *Paper 2: trigger-aware* ``D_b`` *gives a better refusal trade-off.*
   ``trigger_alignment.json``: arm (d) (person-written benign rewrites that keep the triggers)
   against (a), as in 2.

Verdict rules (level 0.05):

- Claims 1 and 3 (unpaired, Fisher): p < 0.05 and the RASS prompts refused more →
  **reproduced**; p < 0.05 and refused less → **does not reproduce**: lower; else **not
  reproduced**: not decided. In claim 1 the run's own rule decides; the fixed-layer run is
  reported beside it ("…; reproduced at layer 20").
- Claims 2 and 4 (paired, per set): "look-alike" sets are :data:`LOOK_ALIKE` (benign prompts
  that look harmful; harmless and Alpaca are plain requests and do not count). On the primary
  judge (the first of the record's judges, the score judge): no look-alike set lower → **not
  reproduced**: not decided (**does not reproduce**: higher when one is higher instead);
  some lower and none higher, and no harmful set's ASR higher → **reproduced**; some lower but
  an ASR higher → **does not reproduce**: a move along the trade-off, not past it. Where the
  other judge's verdict differs, it is added in brackets.

Writes ``OUT/claims.md`` (claim | model | measured | verdict, then the provenance line) and
``OUT/claims.json`` (the same, with the numbers each verdict rests on). Deterministic: the
same inputs give byte-identical files. ``--smoke``: the same, from the same inputs, into a
temporary folder.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from common import FIGURES, add_smoke_flag, parse, points, project_path, write_text
from rass_baselines import JUDGE as BASELINES_JUDGE
from rass_eval import counted
from rass_language import LABELS, claim, labelled, read_labels
from trigger_alignment import GENERIC

from refusal_lens.artifacts import write_json
from refusal_lens.models.spec import BUNDLED
from refusal_lens.prompts.polyrefuse import LANGUAGE_NAMES
from refusal_lens.stats import fisher_exact, paired_seeds, rate_text

ALPHA = 0.05
NAME = "claims"
MODEL_LABELS = {"smollm2-135m": "SmolLM2 organism", "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B"}
# The pipeline run of each model in rass_baselines.json that used the run's own selection rule
# (its other runs are variants: wider steering coefficients, the |margin| rule).
RUNS = {"smollm2-135m": "smollm2-organism", "qwen2.5-coder-0.5b": "qwen2.5-coder"}
LOOK_ALIKE_BASELINE = "XSTest-safe"  # the hand-written look-alikes (rass_baselines, rass_eval)
LOOK_ALIKE = ("borderline", "XSTest-safe", "trigger-only (held-out rewrites)")
RASS_ARM, REWRITES_ARM = "(c)", "(d)"  # trigger_alignment's arms, by their prefix
CLAIMS = {
    "rass_hardness": "Paper 1: RASS finds prompts the model over-refuses (more than look-alikes)",
    "rass_mitigation": "Paper 1: RASS prompts as `D_b` lower over-refusal",
    "rass_language": "Paper 1: RASS extends to other languages",
    "trigger_alignment": "Paper 2: trigger-aware `D_b` gives a better refusal trade-off",
}
INPUTS = {  # under --figures
    "baselines": "rass_baselines.json",
    "eval": "rass_eval.json",
    "rass_run": "rass/rass.json",
    "alignment": "trigger_alignment.json",
    "language": "rass_language.json",
}


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--figures", type=project_path, default=FIGURES, help="the JSON to read")
    p.add_argument("--out", type=project_path, default=FIGURES)
    add_smoke_flag(p)
    return parse(p, argv)


def bundled_of(name: str) -> str | None:
    """The bundled model ``name`` (a model, run or aligned folder's name) is or derives from."""
    name = Path(name).name.lower()
    hits = [m for m in BUNDLED if name == m or name.startswith(m + "-")]
    return max(hits, key=len) if hits else None


def label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def minus(text: str) -> str:
    """Signed points as the results pages write them (a true minus sign)."""
    return text.replace("-", "−")


def short(name: str) -> str:
    """A set's name without its bracketed note (``trigger-only (held-out rewrites)``)."""
    return name.split(" (")[0]


def fisher_decision(k: int, n: int, kb: int, nb: int, p: float) -> dict[str, str]:
    """Claims 1 and 3: the RASS prompts refused more than the comparison set, by Fisher's test."""
    if p >= ALPHA:
        return {"verdict": "not reproduced", "detail": "not decided"}
    if k / n > kb / nb:
        return {"verdict": "reproduced", "detail": ""}
    return {"verdict": "does not reproduce", "detail": "lower"}


def tradeoff_decision(tests: dict[str, dict], harmful: list[str]) -> dict[str, str]:
    """Claims 2 and 4 on one judge: look-alike refusal lower, without a higher ASR."""
    lower = [s for s in LOOK_ALIKE if s in tests and tests[s]["verdict"] == "lower"]
    higher = [s for s in LOOK_ALIKE if s in tests and tests[s]["verdict"] == "higher"]
    asr = [s for s in harmful if tests[s]["verdict"] == "higher"]
    if higher and not lower:
        return {"verdict": "does not reproduce", "detail": "higher"}
    if higher or not lower:
        return {"verdict": "not reproduced", "detail": "not decided"}
    if asr:
        return {
            "verdict": "does not reproduce",
            "detail": "a move along the trade-off, not past it",
        }
    return {"verdict": "reproduced", "detail": ""}


def verdict_text(d: dict[str, str], scope: str = "", bold: bool = True) -> str:
    word = f"**{d['verdict']}**" if bold else d["verdict"]
    return word + (f" {scope}" if scope else "") + (f": {d['detail']}" if d["detail"] else "")


def absent(claim_id: str, model: str, why: str) -> dict[str, Any]:
    return {
        "claim": claim_id,
        "model": model,
        "label": label(model),
        "measured": "not measured",
        "verdict": "not measured",
        "detail": why,
        "text": f"not measured: {why}",
    }


# --- claim 1 ----------------------------------------------------------------------------


def selection_rule(selection: str) -> str:
    """The run's selection rule and layer, from the run's RASS section (as rass_baselines
    quotes it)."""
    layer = re.search(r"layer (\d+)", selection)
    rule = (
        "boundary-fit rule"
        if "fitted refusal probability" in selection
        else "margin rule"
        if "|margin|" in selection
        else "rule"
    )
    return f"run's {rule}" + (f" (layer {layer.group(1)})" if layer else "")


def eval_part(rass_eval: dict | None, rass_run: dict | None, model: str) -> dict | None:
    """rass_eval's full-size run of ``model`` (the model of ``rass/rass.json``), if any."""
    if not rass_eval or not rass_run or bundled_of(rass_run["model"]) != model:
        return None
    hard = rass_eval["hardness"]
    k, n = counted(hard["RASS selected"], BASELINES_JUDGE)
    kb, nb = counted(hard[LOOK_ALIKE_BASELINE], BASELINES_JUDGE)
    p = fisher_exact(k, n, kb, nb)
    layer = rass_run["direction"]["layer"]
    return {
        "layer": layer,
        "judge": BASELINES_JUDGE,
        "selected": {"refused": k, "n": n},
        LOOK_ALIKE_BASELINE: {"refused": kb, "n": nb},
        "fisher_p": p,
        **fisher_decision(k, n, kb, nb, p),
        "measured": f"full-size rass_eval, fixed layer {layer}: {rate_text(k, n)} of {n} against "
        f"{rate_text(kb, nb)} (Fisher p = {p:.2g})",
    }


def rass_hardness(data: dict, model: str, path: str) -> dict[str, Any]:
    runs = {r["name"]: r for r in (data["baselines"] or {}).get("runs", [])}
    run = runs.get(RUNS.get(model, ""))
    if run is None:
        return absent("rass_hardness", model, f"{path} has no run of {model}")
    s = run["sets"]
    k, n = s["RASS"]["refused"], s["RASS"]["n"]
    kb, nb = s[LOOK_ALIKE_BASELINE]["refused"], s[LOOK_ALIKE_BASELINE]["n"]
    p = run["fisher_p"][LOOK_ALIKE_BASELINE]
    decision = fisher_decision(k, n, kb, nb, p)
    measured = (
        f"{selection_rule(run['selection'])}: {rate_text(k, n)} of {n} selected refused against "
        f"{LOOK_ALIKE_BASELINE} {rate_text(kb, nb)} (Fisher p = {p:.2g})"
    )
    extra = eval_part(data["eval"], data["rass_run"], model)
    text = verdict_text(decision)
    if extra:
        measured += ". " + extra["measured"][0].upper() + extra["measured"][1:]
        text = verdict_text(decision, "under the run's rule") + "; "
        text += verdict_text(extra, f"at layer {extra['layer']}", bold=False)
    return {
        "claim": "rass_hardness",
        "model": model,
        "label": label(model),
        "run": run["name"],
        "judge": BASELINES_JUDGE,
        "selected": {"refused": k, "n": n},
        LOOK_ALIKE_BASELINE: {"refused": kb, "n": nb},
        "fisher_p": p,
        **decision,
        "fixed_layer": {key: v for key, v in extra.items() if key != "measured"} if extra else None,
        "measured": measured,
        "text": text,
    }


# --- claims 2 and 4 ---------------------------------------------------------------------


def arm_tests(record: dict, prefix: str) -> tuple[str, dict[str, dict[str, dict]]] | None:
    """The arm starting with ``prefix`` against (a): per judge and set, ``paired_seeds``."""
    results = record["results"]
    arm = next((k for k in results if k.startswith(prefix)), None)
    if arm is None or GENERIC not in results:
        return None
    base, runs = results[GENERIC], results[arm]
    sets = list(base[0]["flags"])
    tests = {
        judge: {
            s: paired_seeds(
                [r["flags"][s][judge]["rate"] for r in base],
                [r["flags"][s][judge]["rate"] for r in runs],
            )
            for s in sets
        }
        for judge in record["eval_config"]["judges"]
    }
    return arm, tests


def alignment_claim(data: dict, model: str, path: str, claim_id: str, prefix: str) -> dict:
    record = data["alignment"]
    arms = (record or {}).get("results", {}).values()
    trained = {bundled_of(r["model"]) for runs in arms for r in runs}
    found = arm_tests(record, prefix) if record and model in trained else None
    if found is None:
        others = ", ".join(sorted(m for m in trained if m)) or "no model"
        why = f"not trained: {path} has no re-alignment of {model} (only of {others})"
        return absent(claim_id, model, why)
    arm, tests = found
    judges = list(tests)
    primary = judges[0]
    kinds = {s: v["kind"] for s, v in record["results"][GENERIC][0]["sets"].items()}
    harmful = [s for s in tests[primary] if kinds.get(s) == "harmful"]
    decisions = {j: tradeoff_decision(tests[j], harmful) for j in judges}
    text = verdict_text(decisions[primary])
    for j in judges[1:]:
        if decisions[j] != decisions[primary]:
            text += f" ({j} judge: {verdict_text(decisions[j], bold=False)})"
    seeds = len(record["seeds"])
    if prefix == RASS_ARM:
        moved = [
            f"{short(s)} {minus(points(t['diff']))} points ({j} judge, paired p = {t['p']:.2g})"
            for j in judges
            for s, t in tests[j].items()
            if t["p"] < ALPHA
        ]
        measured = (
            f"{seeds} seeds, {record['budget']['n_benign']} prompts each: against Alpaca `D_b`, "
            + ("no set differs except " + ", ".join(moved) if moved else "no set differs")
        )
    else:
        t = tests[primary]
        lower = [s for s in LOOK_ALIKE if s in t and t[s]["verdict"] == "lower"]
        asr = [s for s in harmful if t[s]["verdict"] == "higher"]
        cells = ", ".join(f"{short(s)} {minus(points(t[s]['diff']))}" for s in lower)
        measured = f"{seeds} seeds: benign rewrites " + (
            f"lower look-alike refusal ({cells} points)" if lower else "lower no look-alike refusal"
        )
        raised = ", ".join(f"{short(s)} {minus(points(t[s]['diff']))}" for s in asr)
        measured += (
            f" but raise ASR ({raised}, {primary} judge, all p < {ALPHA:g})"
            if asr
            else f" and raise no ASR ({primary} judge, p < {ALPHA:g})"
        )
    return {
        "claim": claim_id,
        "model": model,
        "label": label(model),
        "arm": arm,
        "against": GENERIC,
        "seeds": record["seeds"],
        "n_db": record["budget"]["n_benign"],
        "primary_judge": primary,
        "tests": tests,
        "by_judge": decisions,
        **decisions[primary],
        "measured": measured,
        "text": text,
    }


# --- claim 3 ----------------------------------------------------------------------------


def language_rows(data: dict, model: str, path: str) -> list[dict]:
    record = data["language"]
    entries = (record or {}).get("models", {})
    languages = next((v for k, v in entries.items() if bundled_of(k) == model), None)
    if not languages:
        return [absent("rass_language", model, f"not run: {path} has no entry of {model}")]
    name = next(k for k in entries if bundled_of(k) == model)
    hand = labelled(record, read_labels())[name]
    rows = []
    for language, entry in languages.items():
        lang = LANGUAGE_NAMES.get(language, language)
        row_label = f"{label(model)}, {lang}"
        if "selected" not in entry:
            why = f"RASS selected no prompt in {lang} ({path})"
            rows.append(absent("rass_language", model, why) | {"label": row_label})
            continue
        k, n, kb, nb, p = claim(entry)
        h = hand[language]
        decision = fisher_decision(k, n, kb, nb, p)
        if h["labelled"] == n:
            k_lang = h["in_language"]
            in_language = f"all {lang}" if k_lang == n else f"{k_lang} of {n} in {lang}"
            by_hand = f"{in_language}, {h['benign'] / n:.0%} benign by hand".replace("%", " %")
        else:
            detected = sum(d == language for d in entry["selected"]["detected"])
            by_hand = f"{detected} detected in {lang}, {h['labelled']} of {n} labelled by hand"
        rows.append(
            {
                "claim": "rass_language",
                "model": model,
                "label": row_label,
                "language": language,
                "selected": {"refused": k, "n": n},
                "harmless_test": {"refused": kb, "n": nb},
                "hand_labels": h,
                "fisher_p": p,
                **decision,
                "measured": f"{n} selected, {by_hand}; refused {rate_text(k, n)} against {lang} "
                f"harmless test prompts {rate_text(kb, nb)} (Fisher p = {p:.2g})",
                "text": verdict_text(decision),
            }
        )
    return rows


# --- the table --------------------------------------------------------------------------


def load(figures: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Each input's JSON (``None`` where the file is absent) and its path as recorded."""
    paths = {key: figures / name for key, name in INPUTS.items()}
    data = {
        k: json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
        for k, p in paths.items()
    }
    return data, {k: p.as_posix() for k, p in paths.items()}


def build(figures: Path) -> dict[str, Any]:
    data, paths = load(figures)
    rows: list[dict] = []
    for model in BUNDLED:
        rows.append(rass_hardness(data, model, paths["baselines"]))
    for model in BUNDLED:
        rows.append(alignment_claim(data, model, paths["alignment"], "rass_mitigation", RASS_ARM))
    for model in BUNDLED:
        rows += language_rows(data, model, paths["language"])
    for model in BUNDLED:
        rows.append(
            alignment_claim(data, model, paths["alignment"], "trigger_alignment", REWRITES_ARM)
        )
    read = [paths[k] for k in INPUTS if data[k] is not None]
    if data["language"] is not None and LABELS.is_file():
        read.append(LABELS.as_posix())
    return {"claims": CLAIMS, "rows": rows, "sources": read}


def report(record: dict[str, Any], command: str) -> str:
    lines = [
        "# Do the papers' claims reproduce?",
        "",
        "| claim | model | measured | verdict |",
        "|---|---|---|---|",
    ]
    seen = set()
    for row in record["rows"]:
        claim_cell = "" if row["claim"] in seen else record["claims"][row["claim"]]
        seen.add(row["claim"])
        if row["verdict"] == "not measured":
            cells = [claim_cell, row["label"], row["detail"], "not measured"]
        else:
            cells = [claim_cell, row["label"], row["measured"], row["text"]]
        lines.append("| " + " | ".join(cells) + " |")
    sources = record["sources"]
    made = ", ".join(sources[:-1]) + f" and {sources[-1]}" if len(sources) > 1 else sources[0]
    lines += [
        "",
        "Verdicts at the 5 % level, by the rules in the script's docstring: Fisher's exact test "
        "for RASS's prompts against a look-alike set; a paired sign-flip test over seeds for a "
        "`D_b` against Alpaca's, on the look-alike sets (borderline, XSTest-safe, trigger-only) "
        "and the harmful sets' ASR. […]: 95 % Wilson interval.",
        "",
        f"Made by `{command}` from {made}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    record = build(args.figures)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python experiments/claims.py", *given])
    record = {"command": command, **record}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{NAME}.json", record)
    text = report(record, command)
    write_text(args.out / f"{NAME}.md", text)
    print(text)


if __name__ == "__main__":
    main()
