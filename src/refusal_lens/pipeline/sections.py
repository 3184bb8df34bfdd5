"""``section.json``: what a stage shows in the report, built from its own results.

Each stage writes one next to its artifacts: a title, paragraphs, tables (cells already
formatted from the saved numbers), figures (file names in the stage folder), prompts with
both judges' verdicts, and token views. ``report.py`` only lays these out; it computes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import write_json
from refusal_lens.pipeline.runner import SECTION_FILE
from refusal_lens.stats import rate_text

SIGN = (
    "Positive (red): removing or damping the token lowers the refusal score, so it pushes "
    "towards refusal. Negative (blue): it pushes away from refusal. One symmetric scale, "
    "[−s, +s], for every prompt of the section."
)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def table(
    caption: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], note: str = ""
) -> dict[str, Any]:
    return {"caption": caption, "columns": list(columns), "rows": [list(r) for r in rows]} | (
        {"note": note} if note else {}
    )


def figure(file: str, caption: str) -> dict[str, str]:
    return {"file": file, "caption": caption}


def verdicts(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Both judges' verdicts on one prompt, from an ``evaluation_prompts.jsonl`` row."""
    out: dict[str, dict[str, Any]] = {}
    for judge, refused in row["refused"].items():
        out[judge] = {"refused": refused}
        if judge in row.get("verdict", {}):
            out[judge]["verdict"] = row["verdict"][judge]
        if judge == "score" and "score" in row:
            out[judge]["value"] = row["score"]
    return out


def prompt_entry(row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A prompt as the report shows it: text, greedy answer, both verdicts, extra facts."""
    entry = {"text": row["text"], "verdicts": verdicts(row), "extra": {"set": row["set"]}}
    if "completion" in row:
        entry["answer"] = row["completion"]
    entry["extra"] |= {k: v for k, v in extra.items() if v is not None}
    return entry


def rates_table(
    caption: str,
    conditions: dict[str, dict[str, dict[str, Any]]],
    kinds: dict[str, str],
    judges: Sequence[str],
    note: str = "",
    n: int | None = None,
) -> dict[str, Any]:
    """One row per condition, one column per set: ``score / substring`` cells, each with its
    95 % Wilson interval. ``conditions`` holds each set's rate as the stage saved it (RR for
    benign sets, ASR for harmful ones when ``kinds`` says so), with its verdict ``counts``
    (evaluation rows), or bare rates measured on ``n`` prompts per set."""
    sets = list(kinds)
    label = {"benign": "RR", "harmful": "ASR"}
    columns = ["condition", *(f"{label.get(kinds[s], 'refused')} {s}" for s in sets)]
    rows = [
        [name, *(" / ".join(rate_cell(by_set[s], j, n) for j in judges) for s in sets)]
        for name, by_set in conditions.items()
    ]
    note = note or f"each cell: {' / '.join(judges)} judge"
    return table(caption, columns, rows, note + "; [95 % interval]; degenerate answers counted")


def rate_cell(row: dict[str, Any], judge: str, n: int | None) -> str:
    """A rate with its interval, ``+k degenerate`` when some answers were broken."""
    rate, size = row.get(judge), row.get("n", n)
    if rate is None or not size:
        return pct(rate)
    text = rate_text(round(rate * size), size)
    broken = row.get("counts", {}).get(judge, {}).get("degenerate", 0)
    return text + (f" +{broken} degenerate" if broken else "")


def write_section(
    out: Path,
    folder: str,
    title: str,
    text: Sequence[str] = (),
    tables: Sequence[dict] = (),
    figures: Sequence[dict] = (),
    prompts: Sequence[dict] = (),
    tokens: dict | None = None,
    parts: Sequence[dict] = (),
) -> None:
    """Write ``section.json`` of the stage in ``folder`` (``NN-name``), titled ``title``;
    steps call it as ``ctx.write_section(...)``. ``parts``: subsections, each a dict with a
    ``title`` and its own ``text`` and ``tables`` (one per language in step 11)."""
    section: dict[str, Any] = {"stage": folder, "title": title}
    for key, value in (("text", text), ("tables", tables), ("figures", figures)):
        section[key] = list(value)
    if prompts:
        section["prompts"] = list(prompts)
    if tokens is not None:
        section["tokens"] = tokens
    if parts:
        section["parts"] = [
            {
                "title": p["title"],
                "text": list(p.get("text", ())),
                "tables": list(p.get("tables", ())),
            }
            for p in parts
        ]
    write_json(out / SECTION_FILE, section)
