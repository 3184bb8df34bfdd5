"""Command of the attribution stage: `attribute` (per-token attribution, HTML report + JSON)."""

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
    _prompts,
    app,
)


@app.command()
def attribute(
    model: ModelArg,
    prompts: PromptsArg,
    method: Annotated[
        str, typer.Option(help="occlusion | grad_x_input | integrated_gradients | projection")
    ] = "occlusion",
    direction: Annotated[
        Path | None,
        typer.Option(help="Folder written by `direction` (needed by --method projection)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="HTML report; the JSON goes next to it (.json)")] = Path(
        "runs/attribution.html"
    ),
    max_new_tokens: Annotated[int, typer.Option(help="Answer length shown; 0: no answers")] = 48,
    n: Annotated[int | None, typer.Option(help="Attribute N prompts (seeded sample)")] = 8,
    seed: int = 0,
    steps: Annotated[int, typer.Option(help="Path points of integrated_gradients")] = 16,
    attribute_unrefused: Annotated[
        bool, typer.Option("--attribute-unrefused", help="Also attribute prompts not refused")
    ] = False,
    batch_size: int = 8,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
) -> None:
    """Attribute each prompt's refusal to its tokens; write an offline HTML report and JSON."""
    from refusal_lens.artifacts import write_json
    from refusal_lens.attribution.methods import METHODS
    from refusal_lens.attribution.methods import attribute as run_attribute
    from refusal_lens.attribution.views import attribution_records, write_attribution_report
    from refusal_lens.directions import Direction
    from refusal_lens.errors import RefusalLensError
    from refusal_lens.generation import generate

    if method not in METHODS:
        raise RefusalLensError(f"Unknown --method {method!r}; use one of {', '.join(METHODS)}.")
    if method == "projection" and direction is None:
        raise RefusalLensError(
            "--method projection needs --direction DIR, a folder written by "
            "`refusal-lens direction` (e.g. runs/direction)."
        )
    if out.suffix.lower() not in (".html", ".htm"):
        raise RefusalLensError(f"--out must name an .html file, not {out}.")
    direction_value = None if direction is None else Direction.load(direction)
    prompt_set = _prompts(prompts, None)
    if n is not None:
        prompt_set = prompt_set.sample(n, seed)
    handle = _load(model, device, dtype, system)
    attributions = run_attribute(
        handle,
        prompt_set,
        method,
        direction=direction_value,
        steps=steps,
        batch_size=batch_size,
        attribute_unrefused=attribute_unrefused,
    )
    answers = (
        generate(handle, prompt_set, max_new_tokens, batch_size, show_progress=False)
        if max_new_tokens > 0
        else None
    )
    config = {
        "model": model,
        "prompts": prompts,
        "method": method,
        "direction": None if direction is None else str(direction),
        "n": n,
        "seed": seed,
        "steps": steps,
        "attribute_unrefused": attribute_unrefused,
        "max_new_tokens": max_new_tokens,
        "layers": list(range(handle.n_layers)) if method == "projection" else None,
    }
    model_id = handle.model_id
    write_attribution_report(out, attributions, answers, model=model_id)
    write_json(
        out.with_suffix(".json"),
        {
            "config": config,
            "model": handle.describe(),
            "attributions": attribution_records(attributions, answers),
        },
    )
    console = _console()
    console.print(f"wrote {out} and {out.with_suffix('.json')}", markup=False, soft_wrap=True)
    for a in attributions:
        top = ", ".join(f"{t!r} {v:+.2f}" for t, v in a.top(3)) or "(not attributed)"
        verdict = "refused " if a.refused else "answered"
        prompt = a.prompt if len(a.prompt) <= 60 else a.prompt[:59] + "…"
        console.print(
            f"{a.refusal_score:+6.2f} {verdict}  {top}  | {prompt}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
