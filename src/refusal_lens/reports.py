"""Plain data and Markdown for refusal results (no computation here)."""

from __future__ import annotations

from typing import Any

from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet
from refusal_lens.scoring import RefusalReport


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
