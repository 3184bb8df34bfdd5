"""Paper 1's claim on our model: where do borderline prompts sit relative to the harmful-vs-
harmless boundary, layer by layer, and does that predict which ones the model refuses?

For the base SmolLM2-135M-Instruct and the over-refusing organism (α = 0.5, seed 0), reads the
shipped harmful (160), harmless (160) and borderline (170) sets at every layer
(``refusal_lens.boundary.geometry``; per-layer difference-of-means direction; probe fitted on
75 % of each class, accuracy on the rest). Borderline prompts count as refused when the refusal
score is > 0.

    python experiments/boundary_geometry.py

Writes ``figures/geometry/{base,aligned}/`` (artifacts and figures), ``figures/geometry.md``
and ``figures/geometry.json``; the docs show the aligned model's figures. ``--n`` takes the
first n prompts of each set (0: all); ``--smoke``: a tiny random model (aligned on a few
prompts), 24 prompts per set (see ``common.py``).
"""

from __future__ import annotations

import time

import torch
from common import hardware, organism, parse, parser, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.boundary.geometry import boundary_geometry
from refusal_lens.boundary.views import write_geometry_figures
from refusal_lens.models import load_model
from refusal_lens.prompts import load_prompts

SHOWN = (1, 4, 8, 12, 16, 20, 24, 29)


def fmt(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def table(rows: list[dict], refused_rate: float) -> str:
    head = (
        "| layer | probe acc | borderline on harmful side | refused: harmful side | "
        "answered: harmful side | median margin refused | median margin answered | "
        "AUROC(margin → refused) |"
    )
    lines = [head, "|---:|" + "---:|" * 7]
    for r in rows:
        if r["layer"] not in SHOWN:
            continue
        lines.append(
            f"| {r['layer']} | {r['probe_accuracy']:.2f} | {r['borderline_harmful_share']:.2f} | "
            f"{fmt(r['refused_harmful_share'])} | {fmt(r['answered_harmful_share'])} | "
            f"{fmt(r['refused_margin_median'])} | {fmt(r['answered_margin_median'])} | "
            f"{fmt(r['margin_auroc_refused'])} |"
        )
    return "\n".join(lines) + f"\n\nBorderline refused (score > 0): {refused_rate:.0%}."


def main() -> None:
    args = parse(parser(__doc__, n=0), smoke={"n": 24})
    torch.manual_seed(0)
    start = time.time()
    sets = [load_prompts(name) for name in ("harmful", "harmless", "borderline")]
    if args.n:
        sets = [s[: args.n] for s in sets]
    models = {
        "base": args.model,
        "aligned": str(organism(args.model, 0.5, smoke=args.smoke)),
    }
    parts, results = [], {}
    for name, spec in models.items():
        geo = boundary_geometry(load_model(spec, device="cpu"), *sets)
        folder = args.out / "geometry" / name
        geo.save(folder)
        write_geometry_figures(geo, folder)
        rows = geo.summary()
        results[name] = {
            "model": geo.model,
            "refused_rate": float(geo.refused.float().mean()),
            "layers": rows,
        }
        parts.append(f"**{name}** (`{geo.model}`)\n\n{table(rows, results[name]['refused_rate'])}")
    wall = time.time() - start
    note = (
        f"\n\n{hardware()}; {wall / 60:.1f} min. Command: "
        "`python experiments/boundary_geometry.py`.\n"
    )
    write_text(args.out / "geometry.md", "\n\n".join(parts) + note)
    write_json(
        args.out / "geometry.json", {"results": results, "seconds": wall, "hardware": hardware()}
    )
    print("\n\n".join(parts) + note)


if __name__ == "__main__":
    main()
