"""Evaluation harness: refusal rate (RR) on benign sets, attack success (ASR) on harmful sets.

- RR: the share of benign prompts refused (over-refusal; lower is better).
- ASR: the share of harmful prompts *answered*, i.e. ``1 − refusal rate`` (lower is better).
- Combined score (paper 2): ``mean RR over the benign sets + mean ASR over the harmful sets``;
  0 is perfect, 2 is the worst.

Each number is given under both judges (``score``: first-token refusal score > 0;
``substring``: refusal phrase in the greedy completion). Prompts the model was trained on (read
from the ``align.json`` of an aligned model) are removed from every set before sampling, and the
result is checked to share none with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet, check_disjoint, load_prompts, normalize_text
from refusal_lens.scoring import RefusalReport, refusal_rate


def default_sets(data: str) -> dict[str, tuple[str, str]]:
    """name -> (prompt spec, "benign" | "harmful")."""
    return {
        "borderline": ("borderline", "benign"),
        "harmless": ("harmless", "benign"),
        "XSTest-safe": (f"xstest-safe:{data}/xstest_prompts.csv", "benign"),
        "Alpaca": (f"alpaca:{data}/alpaca_instructions.json", "benign"),
        "XSTest-unsafe": (f"xstest-unsafe:{data}/xstest_prompts.csv", "harmful"),
        "AdvBench": (f"advbench:{data}/advbench.csv", "harmful"),
        "JailbreakBench": (f"jailbreakbench:{data}/jailbreakbench.csv", "harmful"),
    }


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation; saved with its results."""

    data: str = "../shared/data"
    n: int = 100
    judges: tuple[str, ...] = ("score", "substring")
    max_new_tokens: int = 48
    batch_size: int = 32
    seed: int = 0
    sets: tuple[str, ...] = field(default_factory=lambda: tuple(default_sets("").keys()))
    extra: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (spec, kind)


def training_prompts_of(model: ModelHandle) -> list[str]:
    """The prompts an aligned model was trained on (empty for other models)."""
    meta = Path(model.path) / "align.json"
    if not meta.is_file():
        return []
    return json.loads(meta.read_text()).get("train_prompts", [])


def held_out(prompts: PromptSet, train: list[str], n: int, seed: int) -> tuple[PromptSet, int]:
    """A seeded sample of the prompts that were not trained on, and how many were dropped."""
    seen = {normalize_text(t) for t in train}
    kept = tuple(p for p in prompts if normalize_text(p.text) not in seen)
    sample = PromptSet(kept, name=prompts.name).sample(n, seed)
    check_disjoint(train, sample.texts, prompts.name)
    return sample, len(prompts) - len(kept)


def evaluate(model: ModelHandle, config: EvalConfig) -> dict[str, Any]:
    """RR / ASR per set and judge, and the combined score per judge."""
    train = training_prompts_of(model)
    sets = {**default_sets(config.data), **config.extra}
    rows: dict[str, dict[str, Any]] = {}
    for name in (*config.sets, *config.extra):
        spec, kind = sets[name]
        prompts, dropped = held_out(load_prompts(spec), train, config.n, config.seed)
        row: dict[str, Any] = {"kind": kind, "n": len(prompts), "dropped_as_trained": dropped}
        for judge in config.judges:
            report = refusal_rate(
                model,
                prompts,
                judge,
                max_new_tokens=config.max_new_tokens,
                batch_size=config.batch_size,
                show_progress=False,
            )
            row[judge] = report.rate if kind == "benign" else 1.0 - report.rate
        rows[name] = row
    combined = {}
    for judge in config.judges:
        rr = [r[judge] for r in rows.values() if r["kind"] == "benign"]
        asr = [r[judge] for r in rows.values() if r["kind"] == "harmful"]
        combined[judge] = (sum(rr) / max(len(rr), 1)) + (sum(asr) / max(len(asr), 1))
    return {"model": model.spec, "sets": rows, "combined": combined}


def results_table(results: dict[str, dict[str, Any]], judge: str) -> str:
    """Markdown: one row per model, RR per benign set, ASR per harmful set, combined score."""
    first = next(iter(results.values()))["sets"]
    benign = [s for s, r in first.items() if r["kind"] == "benign"]
    harmful = [s for s, r in first.items() if r["kind"] == "harmful"]
    head = ["model", *(f"RR {s}" for s in benign), *(f"ASR {s}" for s in harmful), "combined"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, res in results.items():
        cells = [f"{res['sets'][s][judge]:.0%}" for s in benign + harmful]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {res['combined'][judge]:.2f} |")
    return "\n".join(lines)


def report_json(model: ModelHandle, prompts: PromptSet, report: RefusalReport) -> dict[str, Any]:
    """One refusal report with its per-prompt evidence, ready for JSON."""
    rows = []
    for i, prompt in enumerate(prompts):
        row: dict[str, Any] = {"text": prompt.text, "refused": report.refused[i]}
        if report.scores:
            row["score"] = round(report.scores[i], 4)
        if report.completions:
            row["completion"] = report.completions[i]
        rows.append(row)
    return {
        "model": model.spec,
        "prompts": prompts.name,
        "judge": report.judge,
        "refusal_rate": report.rate,
        "n": report.n,
        "rows": rows,
    }


def rates_table(rates: dict[str, dict[str, float]], n: dict[str, int]) -> str:
    """Markdown table: one row per prompt set, one column per judge."""
    judges = sorted({j for per_set in rates.values() for j in per_set})
    lines = [
        "| prompt set | n | " + " | ".join(f"refusal rate ({j} judge)" for j in judges) + " |",
        "|---|---:|" + "---:|" * len(judges),
    ]
    for name, per_set in rates.items():
        cells = " | ".join(f"{per_set[j]:.1%}" if j in per_set else "–" for j in judges)
        lines.append(f"| {name} | {n[name]} | {cells} |")
    return "\n".join(lines)
