"""Step 9 of the method: each mitigation judged on the same held-out test prompts.

- w′ ablation (Wang et al.), at the λ chosen on validation prompts: any model;
- re-alignment from the base with D_b = the sanitized trigger-matched data, and with D_b = the
  RASS set (paper 2's Table 3 layout: same D_h, α, recipe and seed; only D_b changes): models
  the run aligned itself;
- a weight-orthogonalized export of the w′ mitigation, where the architecture allows it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from refusal_lens.alignment import AlignResult, align
from refusal_lens.boundary.rass_result import SELECTED_NAME
from refusal_lens.directions.orthogonalize import write_orthogonalized
from refusal_lens.errors import RefusalLensError
from refusal_lens.evaluation import EvalResult, compare_results, evaluate_on
from refusal_lens.interventions import ablate, as_direction
from refusal_lens.pipeline.context import StageContext
from refusal_lens.pipeline.records import Interventions, Mitigations, kept_path, w_prime
from refusal_lens.pipeline.registry import (
    DIRECTION,
    EVALUATE,
    INTERVENTIONS,
    MITIGATIONS,
    ORGANISM,
    RASS,
    REGISTRY,
    TRIGGERS,
)
from refusal_lens.pipeline.sections import rates_table, table
from refusal_lens.pipeline.settings import JUDGES
from refusal_lens.prompts import load_prompts

EMPTY_D_B = "not trained: D_b is empty (the harm judge and its re-check kept no item)"
EXPORT_DIR = "export"


def d_b_size(path: Path) -> int:
    """How many prompts a D_b file holds; 0 for an empty file (the harm judge and its re-check
    kept no item), which :func:`load_prompts` refuses."""
    if not path.read_text(encoding="utf-8").strip():
        return 0
    return len(load_prompts(str(path)))


def realigned(ctx: StageContext, label: str, benign: Path) -> EvalResult | None:
    """Align the base again with the organism's recipe, D_b = the prompts in ``benign``;
    None, untrained, when ``benign`` holds no prompt."""
    recipe = AlignResult.load(ctx.input(ORGANISM)).config
    n = d_b_size(benign)
    if n == 0:
        return None
    recipe = replace(recipe, benign=str(benign), n_benign=n)
    result = align(ctx.base(), recipe, release=ctx.run.release)  # one copy while it trains
    model = ctx.run.load(str(result.path))
    evaluation = evaluate_on(model, ctx.eval_sets(), ctx.settings["eval"])
    evaluation.save(ctx.out / label)
    ctx.run.unload(str(result.path))
    return evaluation


def mitigations(ctx: StageContext) -> None:
    """9. Judge every mitigation on the test prompts of step 2, and export the w′ edit."""
    c, out, aligned = ctx.config, ctx.out, ctx.aligned()
    evaluated = ctx.input(EVALUATE)
    results: dict[str, tuple[EvalResult, str]] = {}
    if aligned:
        results["base (before alignment)"] = (EvalResult.load(evaluated / "base"), "")
    label = "organism (aligned by this run)" if aligned else "model as given"
    results[label] = (EvalResult.load(evaluated / "model"), "no edit")
    chosen = Interventions.load(ctx.input(INTERVENTIONS))
    w = w_prime(ctx.input(DIRECTION), chosen.lam)
    ablated = ablated_evaluation(ctx, w)
    ablated.save(out / "ablate_w_prime")
    results[f"ablate w′ (λ={chosen.lam:g})"] = (ablated, chosen.why)
    unasked = "not asked for (--no-mitigations.export)"
    export = export_w_prime(ctx, w) if c.mitigations.export else unasked
    # the re-alignments come last, each loading the base and then its own aligned model: the
    # step holds no other model meanwhile (the run drops the organism when the base loads)
    skipped: dict[str, str] = {}
    if aligned and c.mitigations.realign:
        for name, path in (
            ("re-align, D_b = sanitized", kept_path(ctx.input(TRIGGERS))),
            ("re-align, D_b = RASS", ctx.input(RASS) / SELECTED_NAME),
        ):
            if (res := realigned(ctx, name.split("= ")[1].lower(), path)) is not None:
                results[name] = (res, f"|D_b| = {d_b_size(path)}")
            else:
                skipped[name] = EMPTY_D_B
    record = Mitigations(**mitigation_record(results, export), skipped=skipped)
    record.save(out)
    ctx.write_section(**mitigation_section(record.to_dict()))


def ablated_evaluation(ctx: StageContext, w: Any) -> EvalResult:
    """The studied model on the test prompts with ``w`` ablated."""
    model = ctx.model()
    with ablate(model, w):
        return evaluate_on(model, ctx.eval_sets(), ctx.settings["eval"])


def export_w_prime(ctx: StageContext, w: Any) -> str:
    """The w′ ablation baked into the weights: an HF model directory that ``load_model``
    loads; or why it could not be written."""
    model = ctx.model()
    direction = as_direction(model, w)
    source = replace(model, bridge=None)  # its folder and tokenizer, not its weights
    del model
    ctx.run.release()  # the export loads its own float32 copy: the run's copy goes first
    record = {"direction": direction.metadata()}
    try:
        write_orthogonalized(source, direction.vector, None, ctx.out / EXPORT_DIR, record)
    except RefusalLensError as e:
        return f"not exported: {e}"
    return f"{REGISTRY.folder(MITIGATIONS.name)}/{EXPORT_DIR}"


def mitigation_record(results: dict[str, tuple[EvalResult, str]], export: str) -> dict[str, Any]:
    """``mitigations.json``: one row per condition, the sets, the best by the substring
    judge's combined score (what the model says), the export."""
    first = next(iter(results.values()))[0]
    rows = [
        {"condition": name, "note": note, "rates": r.sets, "combined": r.combined}
        for name, (r, note) in results.items()
    ]
    edits = [row for row in rows if not row["condition"].startswith("base")]  # no edit too
    judge = "substring" if "substring" in first.combined else next(iter(first.combined))
    best = min(edits, key=lambda row: row["combined"][judge])["condition"]
    return {
        "judges": list(first.config.judges),
        "sets": [{"name": s, "kind": v["kind"]} for s, v in first.sets.items()],
        "rows": rows,
        "best": best,
        "best_by": f"lowest combined score ({judge} judge)",
        "export": export,
        "tests": paired_tests(results, judge),
    }


def paired_tests(results: dict[str, tuple[EvalResult, str]], judge: str) -> list[dict[str, Any]]:
    """Every edit against no edit, and the two re-alignments against each other: RR and ASR
    by the exact McNemar test on the same prompts (``evaluation.compare_results``)."""
    names = list(results)
    reference = next(n for n in names if not n.startswith("base"))
    pairs = [(n, reference) for n in names if n not in (reference,) and not n.startswith("base")]
    realigned = [n for n in names if n.startswith("re-align")]
    if len(realigned) == 2:
        pairs.append((realigned[0], realigned[1]))
    return [
        {"a": a, "b": b, "judge": judge, **compare_results(results[a][0], results[b][0], judge)}
        for a, b in pairs
        if results[a][0].prompts and results[b][0].prompts
    ]


def mitigation_section(record: dict[str, Any]) -> dict[str, Any]:
    kinds = {s["name"]: s["kind"] for s in record["sets"]}
    conditions = {row["condition"]: row["rates"] for row in record["rows"]}
    return {
        "text": [
            f"Best: {record['best']} ({record['best_by']}). Weight-orthogonalized w′ "
            f"ablation: {record['export']}.",
            *(f"{name}: {why}." for name, why in record.get("skipped", {}).items()),
        ],
        "tables": [
            rates_table("RR and ASR on the test prompts", conditions, kinds, JUDGES),
            tests_table(record.get("tests", [])),
        ],
    }


def tests_table(tests: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per paired comparison: is RR (ASR) of a lower than that of b?"""
    rows = [[t["a"], t["b"], *(_test_cell(t.get(rate)) for rate in ("RR", "ASR"))] for t in tests]
    judge = tests[0]["judge"] if tests else "substring"
    return table(
        f"Paired tests on the same test prompts ({judge} judge): a against b",
        ["a", "b", "RR of a", "ASR of a"],
        rows,
        "exact McNemar test, 5 % level; 'not determined' when the prompts cannot tell",
    )


def _test_cell(test: dict[str, Any] | None) -> str:
    if test is None:
        return "–"
    return f"{test['verdict']} ({test['a']} vs {test['b']} of {test['n']}; p = {test['p']:.2g})"
