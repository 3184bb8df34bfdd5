"""The README's memory table: each stage's peak over the weights, before and after issue 34's
changes, on the bundled models, from ``benchmarks/stage_memory.py``'s two result files.

Reads ``figures/stage_memory_before.json`` (the benchmark run on the commit before the
changes) and ``figures/stage_memory.json`` (the current code), writes
``figures/memory_table.md`` and puts the same table into README.md between the
``<!-- memory-table -->`` markers (``tests/test_docs.py`` checks that the two agree).

    python experiments/memory_table.py
    python experiments/memory_table.py --smoke [--out DIR]   # the table only, README untouched
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
BUNDLED = ("smollm2-135m", "qwen2.5-coder-0.5b")
START, END = "<!-- memory-table -->", "<!-- /memory-table -->"
BLOCK = re.compile(re.escape(START) + r"\n(.*?)" + re.escape(END), re.S)


def by_model(path: Path) -> dict[str, dict]:
    return {m["model"]: m for m in json.loads(path.read_text())["models"]}


def table(before: dict[str, dict], after: dict[str, dict]) -> str:
    """One row per stage: (peak − fixed) / weights of each bundled model, before → after."""
    models = [m for m in BUNDLED if m in before and m in after]
    head = "| stage | " + " | ".join(f"{m} ({after[m]['weights_mib']:,.0f} MiB)" for m in models)
    lines = [head + " |", "|---|" + "---:|" * len(models)]
    stages = list(dict.fromkeys(r["stage"] for m in models for r in after[m]["stages"]))
    for stage in stages:
        cells = []
        for m in models:
            old = {r["stage"]: r["ratio"] for r in before[m]["stages"]}.get(stage)
            new = {r["stage"]: r["ratio"] for r in after[m]["stages"]}.get(stage)
            was = "–" if old is None else f"{old:.2f}"
            cells.append(f"{was} → **{new:.2f}**" if new is not None else f"{was} → –")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    fixed = max(r["fixed_mib"] for m in models for r in after[m]["stages"])
    dash = " A dash: not measured (see the benchmark's figures)." if "–" in "".join(lines) else ""
    return "\n".join(lines) + (
        f"\n\nPeak resident memory of each stage run alone, less a fixed {fixed:,.0f} MiB "
        "(the interpreter and libraries, warmed up), over the float32 weights' bytes; "
        "before → after. Made by `python experiments/memory_table.py` from "
        f"`benchmarks/stage_memory.py --fresh-cache` (figures/stage_memory*.md).{dash}\n"
    )


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--out", type=Path, default=FIGURES, help="where memory_table.md goes")
    cli.add_argument("--smoke", action="store_true", help="write the table only, elsewhere")
    args = cli.parse_args()
    if args.smoke and args.out.resolve() == FIGURES.resolve():
        args.out = Path(tempfile.mkdtemp(prefix="refusal-lens-smoke-"))
    text = table(
        by_model(FIGURES / "stage_memory_before.json"), by_model(FIGURES / "stage_memory.json")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory_table.md").write_text(text)
    print(text)
    if args.smoke:
        return
    readme = ROOT / "README.md"
    old = readme.read_text()
    if not BLOCK.search(old):
        raise SystemExit(f"README.md has no {START} … {END} block to fill")
    readme.write_text(BLOCK.sub(lambda _: f"{START}\n{text}{END}", old))


if __name__ == "__main__":
    main()
