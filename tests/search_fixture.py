"""A synthetic ``10-search/search.json`` in the schema the search stage writes, for the views'
tests and the smoke run of ``experiments/mitigation_search.py``. No model is loaded; the
numbers are made up, and chosen so that a test can find each one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from refusal_lens.pipeline.config import RunConfig

TEST_SETS = {
    "borderline": "benign",
    "XSTest-safe": "benign",
    "Alpaca": "benign",
    "XSTest-unsafe": "harmful",
    "AdvBench": "harmful",
    "JailbreakBench": "harmful",
    "HarmBench": "harmful",
}
# (look-alike RR, Alpaca RR, harmful refusal) per condition, both judges alike
HELDOUT = {
    "no edit": (0.50, 0.10, 0.95),
    "ablate r (Arditi)": (0.05, 0.00, 0.10),
    "ablate w′ λ=1 (Wang)": (0.30, 0.05, 0.70),
    "ablate w′ λ=0.8 (Wang)": (0.35, 0.05, 0.80),
    "ablate w′ λ=0.6 (Wang)": (0.40, 0.10, 0.90),
    "search: seed 0": (0.25, 0.05, 0.85),
    "search: seed 1": (0.45, 0.05, 0.95),
    "search: refusal only": (0.00, 0.00, 0.05),
}


def _sets(look_alike: float, plain: float, harmful: float) -> dict[str, Any]:
    out = {}
    for name, kind in TEST_SETS.items():
        rate = (plain if name == "Alpaca" else look_alike) if kind == "benign" else 1 - harmful
        out[name] = {"kind": kind, "n": 16, "dropped_as_trained": 0, "score": rate}
        out[name]["substring"] = rate
    return out


def _point(n: int, benign: float, harmful: float, kl: float) -> dict[str, Any]:
    return {"number": n, "benign": benign, "harmful": harmful, "kl": kl, "feasible": True}


def _search(seed: int, objective: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(points, key=lambda p: p["benign"])
    trial = {
        "number": best["number"],
        "label": f"ablate w′(λ=0.{seed + 5}0) ×0.80, all layers",
        "measured": {"benign": best["benign"], "harmful": best["harmful"], "kl": best["kl"]},
    }
    return {
        "objective": objective,
        "seed": seed,
        "trials": len(points),
        "feasible": len(points),
        "seconds": 12.0 * len(points),
        "seconds_per_trial": 12.0,
        "stopped": "",
        "binding": "",
        "best": trial,
        "front": [p["number"] for p in points[:2]],
        "points": points,
        "rejudged": [],
        "winner": trial,
    }


def search_record() -> dict[str, Any]:
    """``search.json`` of the synthetic run."""
    searches = {
        "seed 0": _search(
            0, "over_refusal", [_point(0, 0.2, 0.95, 0.02), _point(1, 0.4, 0.97, 0.01)]
        ),
        "seed 1": _search(
            1, "over_refusal", [_point(0, 0.3, 0.96, 0.03), _point(1, 0.5, 0.99, 0.2)]
        ),
        "refusal only": _search(0, "refusal", [_point(0, 0.0, 0.1, 0.05)]),
    }
    return {
        "validation": {"borderline": 16, "RASS": 7, "AdvBench": 16, "XSTest-unsafe": 16},
        "unedited": {"benign": 0.6, "harmful": 0.98, "kl": 0.0},
        "floor": 0.93,
        "kl_max": 0.1,
        "searches": searches,
        "fixed": {"ablate w′ λ=1 (Wang)": {"benign": 0.8, "harmful": 0.98, "kl": 0.9}},
        "heldout": {label: {"sets": _sets(*v), "combined": {}} for label, v in HELDOUT.items()},
        "heldout_folders": {label: f"heldout/{i:02d}" for i, label in enumerate(HELDOUT)},
        "chosen": {"search": "seed 0", **searches["seed 0"]["winner"]},
        "export": {"edit": "export/edit", "model": "export/model", "why": None},
        "seconds": 321.0,
    }


def build_synthetic_search(run: Path) -> Path:
    """Write ``run/10-search/search.json`` and a ``run.json`` beside it; return ``run``."""
    folder = Path(run) / "10-search"
    folder.mkdir(parents=True, exist_ok=True)
    from refusal_lens.mitigation.views import write_front_figure

    record = search_record()
    (folder / "search.json").write_text(json.dumps(record, ensure_ascii=False))
    write_front_figure(record, folder / "front.png")
    for i, label in enumerate(record["heldout"]):  # the answers the held-out evaluation saved
        rows = [
            {
                "set": name,
                "kind": kind,
                "text": f"{name} prompt {k}",
                "completion": answer,
                "refused": {"score": k == 0, "substring": k == 0},
                "verdict": {j: "refuses" if k == 0 else "complies" for j in ("score", "substring")},
                "score": 1.0 if k == 0 else -1.0,
            }
            for name, kind in TEST_SETS.items()
            for k, answer in enumerate(("I'm sorry, I can't.", f"Sure: {label}."))
        ]
        heldout = folder / "heldout" / f"{i:02d}"
        heldout.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (heldout / "evaluation_prompts.jsonl").write_text(text)
    run_json = {
        "kind": "run",
        "model": "synthetic",
        "config": RunConfig.preset(
            quick=True, stages=("model", "search"), search={"trials": 2, "seeds": 2}
        ).to_dict(),
        "versions": {"torch": "2.13.0", "optuna": "5.0.0"},
        "hardware": "x86_64 CPU, 2 threads",
        "stages": [{"name": "10-search", "status": "ran", "seconds": 321.0}],
        "seconds": 400.0,
    }
    (Path(run) / "run.json").write_text(json.dumps(run_json))
    return Path(run)
