"""Command of the attribution stage: ``attribute`` (per-token attribution, HTML report + JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from refusal_lens.cli.common import (
    Loader,
    ModelArg,
    OptionalDirectionOpt,
    OutOpt,
    PromptsArg,
    Sampler,
    app,
    model_options,
    prompt_options,
    say,
)

REPORT_NAME = "attribution.html"
RECORDS_NAME = "attribution.json"


@app.command()
@model_options
@prompt_options(n=8)
def attribute(
    model: ModelArg,
    prompts: PromptsArg,
    out: OutOpt,
    method: Annotated[
        str, typer.Option(help="occlusion | grad_x_input | integrated_gradients | projection")
    ] = "occlusion",
    direction: OptionalDirectionOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length shown; 0: no answers")] = 48,
    steps: Annotated[int, typer.Option(help="Path points of integrated_gradients")] = 16,
    attribute_unrefused: Annotated[
        bool, typer.Option("--attribute-unrefused", help="Also attribute prompts not refused")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 8,
    *,
    load: Loader,
    pick: Sampler,
) -> None:
    """Attribute each prompt's refusal to its tokens: attribution.{html,json}.

    --out DIR gets attribution.html (an offline report) and attribution.json; --out FILE.html
    names the report, the JSON goes next to it. --method projection needs --direction.
    """
    from refusal_lens.attribution.methods import attribute as run_attribute
    from refusal_lens.direction import Direction

    _check_method(method, direction)
    prompt_set = pick(prompts)
    handle = load(model)
    attributions = run_attribute(
        handle,
        prompt_set,
        method,
        direction=None if direction is None else Direction.load(direction),
        steps=steps,
        batch_size=batch_size,
        attribute_unrefused=attribute_unrefused,
    )
    answers = _answers(handle, prompt_set, max_new_tokens, batch_size)
    settings = {
        "model": model,
        "prompts": prompts,
        "method": method,
        "direction": None if direction is None else str(direction),
        "n": len(prompt_set),
        "seed": pick.seed,
        "steps": steps,
        "attribute_unrefused": attribute_unrefused,
        "max_new_tokens": max_new_tokens,
        "layers": list(range(handle.n_layers)) if method == "projection" else None,
    }
    _write(out, handle, attributions, answers, settings)
    _print_attributions(attributions)


def _check_method(method: str, direction: Path | None) -> None:
    from refusal_lens.attribution.methods import METHODS
    from refusal_lens.errors import RefusalLensError

    if method not in METHODS:
        raise RefusalLensError(f"Unknown --method {method!r}; use one of {', '.join(METHODS)}.")
    if method == "projection" and direction is None:
        raise RefusalLensError(
            "--method projection needs --direction DIR, a folder written by "
            "`refusal-lens direction` (e.g. runs/direction)."
        )


def _paths(out: Path) -> tuple[Path, Path]:
    """The report and the JSON: in folder ``out``, or ``out`` itself if it names an .html
    file (the JSON then goes next to it, as .json)."""
    if out.suffix.lower() in (".html", ".htm"):
        return out, out.with_suffix(".json")
    return out / REPORT_NAME, out / RECORDS_NAME


def _answers(handle: Any, prompt_set: Any, max_new_tokens: int, batch_size: int) -> Any:
    if max_new_tokens <= 0:
        return None
    from refusal_lens.generation import generate

    return generate(handle, prompt_set, max_new_tokens, batch_size, show_progress=False)


def _write(out: Path, handle: Any, attributions: list, answers: Any, settings: dict) -> None:
    """The report and the JSON (:func:`_paths`); other files in the folder are kept."""
    from refusal_lens.artifacts import write_json
    from refusal_lens.attribution.views import attribution_records, write_attribution_report

    report, records = _paths(out)
    write_attribution_report(report, attributions, answers, model=handle.model_id)
    rows = attribution_records(attributions, answers)
    write_json(records, {"config": settings, "model": handle.describe(), "attributions": rows})
    say(f"wrote {report} and {records}")


def _print_attributions(attributions: list) -> None:
    for a in attributions:
        top = ", ".join(f"{t!r} {v:+.2f}" for t, v in a.top(3)) or "(not attributed)"
        verdict = "refused " if a.refused else "answered"
        prompt = a.prompt if len(a.prompt) <= 60 else a.prompt[:59] + "…"
        say(f"{a.refusal_score:+6.2f} {verdict}  {top}  | {prompt}")
