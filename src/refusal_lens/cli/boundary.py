"""Commands of the boundary stage: `geometry` (layer-wise boundary, figures) and `rass`
(steer, generate and select boundary prompts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from refusal_lens.cli.common import (
    DeviceOpt,
    DtypeOpt,
    ModelArg,
    PromptsArg,
    SystemOpt,
    _console,
    _load,
    _parse_floats,
    _parse_ints,
    _prompts,
    app,
)

DirectionOpt = Annotated[
    Path | None, typer.Option(help="Folder written by `direction` (the refusal direction)")
]


@app.command()
def geometry(
    model: ModelArg,
    harmful: Annotated[str, typer.Option(help="Prompt spec of the harmful class")] = "harmful",
    harmless: Annotated[str, typer.Option(help="Prompt spec of the harmless class")] = "harmless",
    borderline: Annotated[str, typer.Option(help="Prompt spec placed between")] = "borderline",
    direction: DirectionOpt = None,
    layers: Annotated[str | None, typer.Option(help="Layers to read: 1,4,8 or 1:30")] = None,
    panels: Annotated[str | None, typer.Option(help="Layers shown in the grid")] = None,
    refused_by: Annotated[
        str, typer.Option(help="Borderline refused by: score (> 0) or substring (generation)")
    ] = "score",
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("runs/geometry"),
    seed: int = 0,
    batch_size: int = 16,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
) -> None:
    """Place harmful, harmless and borderline prompts against each layer's boundary; write
    geometry.{json,safetensors}, grid.png, margins.png and probe_accuracy.png."""
    from refusal_lens.boundary.geometry import GeometryConfig, boundary_geometry
    from refusal_lens.boundary.views import write_geometry_figures
    from refusal_lens.directions import Direction
    from refusal_lens.errors import RefusalLensError
    from refusal_lens.scoring import refusal_rate

    if refused_by not in ("score", "substring"):
        raise RefusalLensError(f"--refused-by must be score or substring, not {refused_by!r}.")
    handle = _load(model, device, dtype, system)
    sets = [_prompts(spec, None) for spec in (harmful, harmless, borderline)]
    refused = None
    if refused_by == "substring":
        refused = refusal_rate(handle, sets[2], "substring", show_progress=False).refused
    layer_list = _parse_ints(layers)
    config = GeometryConfig(
        layers=tuple(layer_list) if layer_list else None, seed=seed, batch_size=batch_size
    )
    r = Direction.load(direction) if direction is not None else None
    geo = boundary_geometry(handle, *sets, direction=r, config=config, refused=refused)
    geo.save(out)
    paths = write_geometry_figures(geo, out, _parse_ints(panels))
    console = _console()
    console.print(f"{'layer':>5} {'probe acc':>9} {'borderline harmful-side':>24} {'AUROC':>6}")
    for row in geo.summary():
        auc = row["margin_auroc_refused"]
        console.print(
            f"{row['layer']:>5} {row['probe_accuracy']:>9.2f} "
            f"{row['borderline_harmful_share']:>24.2f} {'–' if auc is None else f'{auc:.2f}':>6}"
        )
    console.print(f"Wrote {out}/geometry.json and {', '.join(p.name for p in paths)}")


@app.command()
def rass(
    model: ModelArg,
    seeds: PromptsArg,
    direction: DirectionOpt = None,
    layer: Annotated[
        int | None, typer.Option(help="Selection layer (default: direction's)")
    ] = None,
    coefs: Annotated[str, typer.Option(help="Steering coefficients")] = "-1,-0.5,0,0.5,1",
    contexts: Annotated[int, typer.Option(help="Few-shot lists per language")] = 8,
    samples: Annotated[int, typer.Option(help="Continuations per list and coefficient")] = 4,
    band: Annotated[float, typer.Option(help="Keep |margin| <= band")] = 0.5,
    harmful: Annotated[str, typer.Option(help="Reference harmful prompts")] = "harmful",
    harmless: Annotated[str, typer.Option(help="Reference harmless prompts")] = "harmless",
    judge_model: Annotated[
        str | None, typer.Option(help="Model whose harm probe judges benign (default: MODEL)")
    ] = None,
    judge_benign: Annotated[
        str, typer.Option(help="Extra benign prompts the judge learns from (beside --harmless)")
    ] = "borderline",
    lexicon: Annotated[
        Path | None, typer.Option(help="Trigger lexicon.json for recombination")
    ] = None,
    benign_contexts: Annotated[
        str | None, typer.Option(help="Prompt spec of benign contexts for recombination")
    ] = None,
    languages: Annotated[str, typer.Option(help="Languages, seeds' first: en or en,fr")] = "en",
    translator: Annotated[str, typer.Option(help="model (the model translates) or none")] = "none",
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("runs/rass"),
    seed: int = 0,
    batch_size: int = 16,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
) -> None:
    """Generate requests near the safety boundary by steering, select them by margin and a
    benign judge; write rass.jsonl, candidates.jsonl, summary.json and margins.png."""
    import json

    from refusal_lens.boundary.rass import RASSConfig, probe_judge
    from refusal_lens.boundary.rass import rass as run_rass
    from refusal_lens.boundary.translate import model_translator
    from refusal_lens.boundary.views import plot_rass_margins
    from refusal_lens.directions import Direction
    from refusal_lens.errors import RefusalLensError
    from refusal_lens.plots import pyplot
    from refusal_lens.triggers.harm import fit_harm_judge

    if direction is None:
        raise RefusalLensError(
            "rass needs --direction DIR, a folder written by `refusal-lens direction MODEL`."
        )
    if translator not in ("model", "none"):
        raise RefusalLensError(f"--translator must be model or none, not {translator!r}.")
    if lexicon is not None and benign_contexts is None:
        raise RefusalLensError("--lexicon needs --benign-contexts SPEC to recombine with.")
    handle = _load(model, device, dtype, system)
    judge_handle = handle if judge_model is None else _load(judge_model, device, dtype, system)
    ref_h, ref_b = _prompts(harmful, None), _prompts(harmless, None)
    judge = fit_harm_judge(judge_handle, ref_h, ref_b + _prompts(judge_benign, None))
    config = RASSConfig(
        layer=layer,
        coefs=_parse_floats(coefs, "--coefs"),
        contexts=contexts,
        samples=samples,
        band=band,
        languages=tuple(x.strip() for x in languages.split(",") if x.strip()),
        seed=seed,
        batch_size=batch_size,
    )
    result = run_rass(
        handle,
        _prompts(seeds, None),
        Direction.load(direction),
        (ref_h, ref_b),
        probe_judge(judge, judge_handle),
        config,
        lexicon=json.loads(lexicon.read_text()) if lexicon else None,
        benign_contexts=_prompts(benign_contexts, None).texts if benign_contexts else (),
        translator=model_translator(handle) if translator == "model" else None,
        judge_info=judge.describe(),
    )
    result.save(out)
    pyplot().close(plot_rass_margins(result, out / "margins.png"))
    console = _console()
    for group, counts in result.summary()["groups"].items():
        console.print(f"{group:<28} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"Selected {len(result.selected)} prompts -> {out}/rass.jsonl")
