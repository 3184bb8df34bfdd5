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
from refusal_lens.cli.options import config_options
from refusal_lens.configs import StageConfig

REPORT_NAME = "attribution.html"
RECORDS_NAME = "attribution.json"


@app.command()
@model_options
@prompt_options(n=8)
@config_options("refusal_lens.attribution.methods:AttributionConfig")
def attribute(
    model: ModelArg,
    prompts: PromptsArg,
    out: OutOpt,
    direction: OptionalDirectionOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length shown; 0: no answers")] = 48,
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Attribute each prompt's refusal to its tokens: attribution.{html,json}.

    --out DIR gets attribution.html (an offline report), attribution.json (records with the
    answers) and the loadable artifact attributions.{json,safetensors}; --out FILE.html names
    the report, the rest goes next to it. --method projection needs --direction.
    """
    from refusal_lens.attribution.methods import attribute as run_attribute
    from refusal_lens.direction import Direction

    _check_method(config.method, direction)
    prompt_set = pick(prompts)
    handle = load(model)
    attributions = run_attribute(
        handle,
        prompt_set,
        config,
        direction=None if direction is None else Direction.load(direction),
    )
    answers = _answers(handle, prompt_set, max_new_tokens, config.batch_size)
    settings = {
        "model": model,
        "prompts": prompts,
        "direction": None if direction is None else str(direction),
        "n": len(prompt_set),
        "seed": pick.seed,
        "max_new_tokens": max_new_tokens,
        **config.to_dict(),
        "layers": list(range(handle.n_layers)) if config.method == "projection" else None,
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


def _write(out: Path, handle: Any, attributions: Any, answers: Any, settings: dict) -> None:
    """The report and the JSON (:func:`_paths`); other files in the folder are kept."""
    from refusal_lens.artifacts import write_json
    from refusal_lens.attribution.views import attribution_records, write_attribution_report

    report, records = _paths(out)
    attributions.save(records.parent)
    write_attribution_report(report, attributions, answers, model=handle.model_id)
    rows = attribution_records(attributions, answers)
    write_json(records, {"config": settings, "model": handle.describe(), "attributions": rows})
    say(f"wrote {report} and {records}")


def _print_attributions(attributions: Any) -> None:
    for a in attributions:
        top = ", ".join(f"{t!r} {v:+.2f}" for t, v in a.top(3)) or "(not attributed)"
        verdict = "refused " if a.refused else "answered"
        prompt = a.prompt if len(a.prompt) <= 60 else a.prompt[:59] + "…"
        say(f"{a.refusal_score:+6.2f} {verdict}  {top}  | {prompt}")
