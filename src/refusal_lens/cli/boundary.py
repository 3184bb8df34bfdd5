"""Commands of the boundary stage: ``geometry`` (layer-wise boundary, figures) and ``rass``
(steer, generate and select boundary prompts)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from refusal_lens.cli.common import (
    BaseOpt,
    DirectionOpt,
    HarmJudgeOpt,
    Loader,
    ModelArg,
    OptionalDirectionOpt,
    OutOpt,
    PromptsArg,
    Sampler,
    app,
    model_options,
    parse_ints,
    prompt_options,
    say,
)
from refusal_lens.cli.options import config_options
from refusal_lens.configs import StageConfig


@app.command()
@model_options
@prompt_options(seed=False)
@config_options("refusal_lens.boundary.geometry:GeometryConfig")
def geometry(
    model: ModelArg,
    out: OutOpt,
    harmful: Annotated[str, typer.Option(help="Prompt spec of the harmful class")] = "harmful",
    harmless: Annotated[str, typer.Option(help="Prompt spec of the harmless class")] = "harmless",
    borderline: Annotated[str, typer.Option(help="Prompt spec placed between")] = "borderline",
    direction: OptionalDirectionOpt = None,
    panels: Annotated[str | None, typer.Option(help="Layers shown in the grid: 1,4,8")] = None,
    refused_by: Annotated[
        str, typer.Option(help="Borderline refused by: score (> 0) or substring (generation)")
    ] = "score",
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Place harmful, harmless and borderline prompts against each layer's boundary.

    Writes geometry.{json,safetensors}, grid.png, margins.png and probe_accuracy.png; --n
    samples each prompt set (seed: --seed).
    """
    from refusal_lens.boundary.geometry import boundary_geometry
    from refusal_lens.boundary.views import write_geometry_figures
    from refusal_lens.residual_direction import Direction

    if refused_by not in ("score", "substring"):
        raise typer.BadParameter("use score or substring.", param_hint="'--refused-by'")
    handle = load(model)
    pick = replace(pick, seed=config.seed)
    sets = [pick(spec) for spec in (harmful, harmless, borderline)]
    refused = _substring_refusals(handle, sets[2]) if refused_by == "substring" else None
    r = Direction.load(direction) if direction is not None else None
    geo = boundary_geometry(handle, *sets, direction=r, config=config, refused=refused)
    geo.save(out)
    paths = write_geometry_figures(geo, out, parse_ints(panels, "--panels"))
    _print_geometry(geo)
    say(f"wrote {out}/geometry.json and {', '.join(p.name for p in paths)}")


def _substring_refusals(handle: Any, borderline: Any) -> list[bool]:
    from refusal_lens.scoring import refusal_rate

    return refusal_rate(handle, borderline, "substring", show_progress=False).refused


def _print_geometry(geo: Any) -> None:
    say(f"{'layer':>5} {'probe acc':>9} {'borderline harmful-side':>24} {'AUROC':>6}")
    for row in geo.summary():
        auc = row["margin_auroc_refused"]
        say(
            f"{row['layer']:>5} {row['probe_accuracy']:>9.2f} "
            f"{row['borderline_harmful_share']:>24.2f} {'–' if auc is None else f'{auc:.2f}':>6}"
        )


@app.command()
@model_options
@prompt_options(seed=False)
@config_options("refusal_lens.boundary.rass:RASSConfig")
def rass(
    model: ModelArg,
    seeds: PromptsArg,
    direction: DirectionOpt,
    harm_judge: HarmJudgeOpt,
    out: OutOpt,
    base: BaseOpt = None,
    harmful: Annotated[str, typer.Option(help="Reference harmful prompts")] = "harmful",
    harmless: Annotated[str, typer.Option(help="Reference harmless prompts")] = "harmless",
    lexicon: Annotated[
        Path | None,
        typer.Option(help="Trigger lexicon for recombination: lexicon.json or a `triggers` folder"),
    ] = None,
    benign_contexts: Annotated[
        str | None, typer.Option(help="Prompt spec of benign contexts for recombination")
    ] = None,
    translator: Annotated[
        str,
        typer.Option(
            metavar="model|none|SPEC",
            help="Who translates for --languages: model (MODEL itself), none, or a model spec "
            "(e.g. qwen2.5-coder-0.5b), loaded without --system",
        ),
    ] = "none",
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Generate requests near the safety boundary by steering; select them by margin.

    Candidates the --harm-judge calls harmful (at its own threshold) are dropped. Writes
    rass.jsonl (selected, a prompt set), rass_candidates.jsonl, rass_summary.json, rass.json
    and margins.png; --n samples the seeds (seed: --seed).
    """
    from refusal_lens.boundary.rass import rass as run_rass
    from refusal_lens.residual_direction import Direction

    _check_rass_options(translator, lexicon, benign_contexts)
    handle = load(model)
    everything = Sampler()  # the reference sets and contexts are used whole
    result = run_rass(
        handle,
        replace(pick, seed=config.seed)(seeds),
        Direction.load(direction),
        (everything(harmful), everything(harmless)),
        _harm_scorer(harm_judge, handle if base is None else load(base)),
        config,
        lexicon=_read_lexicon(lexicon),
        benign_contexts=everything(benign_contexts).texts if benign_contexts else (),
        translator=_translator(translator, model, handle, load),
    )
    _write_rass(result, out)


def _check_rass_options(translator: str, lexicon: Path | None, contexts: str | None) -> None:
    if translator not in ("model", "none"):
        from refusal_lens.errors import ModelSpecError
        from refusal_lens.models.spec import resolve_spec

        try:
            resolve_spec(translator)
        except ModelSpecError as exc:
            raise typer.BadParameter(
                f"use model, none or a model spec. {exc}", param_hint="'--translator'"
            ) from exc
    if lexicon is not None and contexts is None:
        raise typer.BadParameter(
            "--lexicon needs --benign-contexts SPEC to recombine with.", param_hint="'--lexicon'"
        )


def _translator(spec: str, model: str, handle: Any, load: Loader) -> Any:
    """``--translator``: None, the studied model, or another model spec loaded without the
    studied model's --system prompt (the studied model itself when the spec names it)."""
    from refusal_lens.boundary.translate import model_translator

    if spec == "none":
        return None
    if spec in ("model", model):
        return model_translator(handle)
    return model_translator(replace(load, system=None)(spec))


def _harm_scorer(folder: Path, base: Any) -> Any:
    from refusal_lens.triggers.harm import HarmJudge, harm_scorer

    return harm_scorer(HarmJudge.load(folder), base)


def _read_lexicon(path: Path | None) -> list | None:
    """The trigger lexicon: a lexicon.json, or the one in a folder written by ``triggers``."""
    if path is None:
        return None
    from refusal_lens.errors import RefusalLensError
    from refusal_lens.triggers.masks import LEXICON_NAME, load_lexicon

    path = path / LEXICON_NAME if path.is_dir() else path
    if not path.is_file():
        raise RefusalLensError(f"No trigger lexicon at {path}; run `refusal-lens triggers`.")
    return load_lexicon(path)


def _write_rass(result: Any, out: Path) -> None:
    from refusal_lens.boundary.views import plot_rass_margins
    from refusal_lens.plots import pyplot

    result.save(out)
    pyplot().close(plot_rass_margins(result, out / "margins.png"))
    for group, counts in result.summary()["groups"].items():
        say(f"{group:<28} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for warning in result.warnings:
        say(f"warning: {warning}")
    say(f"Selected {len(result.selected)} prompts -> {out}/rass.jsonl")
