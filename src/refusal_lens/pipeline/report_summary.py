"""The report's top table: refusal rate (RR) and attack success rate (ASR) per condition.

Read from ``NN-mitigations/mitigations.json`` (one row per condition: the base model, the
aligned organism and each mitigation, under every judge), or, when the mitigations stage did
not run, from ``NN-evaluate/model/evaluation.json`` as a single row. RR is the share of benign
prompts refused, ASR the share of harmful prompts complied with (the files already hold ASR
for harmful sets), and the combined score is mean RR + mean ASR: lower is better for all
three. Every cell carries its 95 % Wilson interval, and a column gives the share of degenerate
answers (broken text: neither a refusal nor a success) over all sets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from refusal_lens.errors import RefusalLensError
from refusal_lens.evaluation import EVAL_FILE, degenerate_cell
from refusal_lens.pipeline import records
from refusal_lens.pipeline.registry import EVALUATE, MITIGATIONS, REGISTRY
from refusal_lens.pipeline.sections import rate_cell

EVALUATION_ROW = "model"  # the one condition of a run without the mitigations stage
MITIGATIONS_FILE = f"{REGISTRY.folder(MITIGATIONS.name)}/{records.MITIGATIONS_FILE}"
EVALUATION_FILE = f"{REGISTRY.folder(EVALUATE.name)}/{EVALUATION_ROW}/{EVAL_FILE}"
JUDGE_NOTES = {  # what each judge of refusal_lens.scoring calls a refusal
    "score": "refused when the first answer token's refusal score is above the model's "
    "threshold (0, or fitted to its own refusals: see the organism section)",
    "substring": "refused when the greedy answer contains a refusal phrase",
}


def read_json(path: Path) -> Any:
    """A JSON file of the run, with an error that names it when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RefusalLensError(f"{path} is not valid JSON ({error}); rerun its stage.") from error


def _columns(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One column per set: ``RR <set>`` for a benign set, ``ASR <set>`` for a harmful one."""
    columns = []
    for s in sets:
        if s.get("kind") not in ("benign", "harmful"):
            raise RefusalLensError(f"Set {s.get('name')!r} has kind {s.get('kind')!r}.")
        rate = "RR" if s["kind"] == "benign" else "ASR"
        columns.append({**s, "rate": rate, "label": f"{rate} {s['name']}"})
    return columns


def _row(row: dict[str, Any], judges: list[str], columns: list[dict[str, Any]], best: str | None):
    rates = row.get("rates") or {}
    combined = row.get("combined") or {}
    cells = [[_cell(rates.get(c["name"]) or {}, j, c.get("n")) for j in judges] for c in columns]
    return {
        "condition": row["condition"],
        "note": row.get("note"),
        "cells": cells,
        "degenerate": [degenerate_cell(rates, j) for j in judges],  # "–" in older files
        "combined": [combined.get(j) for j in judges],
        "best": row["condition"] == best,
    }


def _cell(rates: dict[str, Any], judge: str, n: int | None) -> str:
    """``"38 % [25–52]"`` (the degenerate answers are counted in their own column)."""
    return rate_cell({k: v for k, v in rates.items() if k != "counts"}, judge, n)


def _set_sizes(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The sets, each with its prompt count ``n`` when a file gives one (the set list, or the
    first row's rates as an ``EvalResult`` saves them)."""
    first = (data["rows"][0].get("rates") or {}) if data["rows"] else {}
    return [{"n": (first.get(s["name"]) or {}).get("n"), **s} for s in data["sets"]]


def _table(data: dict[str, Any], source: str, run_dir: Path) -> dict[str, Any]:
    judges = list(data["judges"])
    columns = _columns(_set_sizes(data))
    best, export = data.get("best"), data.get("export")
    return {
        "source": source,
        "judges": judges,
        "judge_notes": [(j, JUDGE_NOTES.get(j, "")) for j in judges],
        "columns": columns,
        "rows": [_row(r, judges, columns, best) for r in data["rows"]],
        "best": best,
        "best_by": data.get("best_by"),
        "export": export,  # a folder of the run, or a sentence saying why there is none
        "export_is_folder": bool(export) and (run_dir / export).is_dir(),
    }


def from_evaluation(evaluation: dict[str, Any]) -> dict[str, Any]:
    """``evaluation.json`` in the layout of ``mitigations.json``: one row, no best."""
    judges = list(evaluation["combined"])
    sets = evaluation["sets"]
    return {
        "judges": judges,
        "sets": [{"name": n, "kind": s["kind"], "n": s.get("n")} for n, s in sets.items()],
        "rows": [
            {
                "condition": EVALUATION_ROW,
                "rates": sets,
                "combined": evaluation["combined"],
            }
        ],
    }


def summary_table(run_dir: Path) -> dict[str, Any] | None:
    """The top table of ``run_dir``; None when neither stage wrote its results."""
    mitigations, evaluation = run_dir / MITIGATIONS_FILE, run_dir / EVALUATION_FILE
    try:
        if mitigations.is_file():
            return _table(read_json(mitigations), MITIGATIONS_FILE, run_dir)
        if evaluation.is_file():
            return _table(from_evaluation(read_json(evaluation)), EVALUATION_FILE, run_dir)
    except KeyError as error:
        raise RefusalLensError(
            f"The results in {run_dir} lack the key {error}; rerun the stage that wrote them."
        ) from error
    return None
