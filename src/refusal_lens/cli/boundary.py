"""Commands of the boundary stage: ``geometry`` (layer-wise boundary, figures) and ``rass``
(steer, generate and select boundary prompts)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from refusal_lens.cli.common import (
    DEFAULT_JUDGE,
    BaseOpt,
    DirectionOpt,
    HarmJudgeOpt,
    JudgeOpt,
    Loader,
    ModelArg,
    OptionalDirectionOpt,
    PromptsArg,
    Sampler,
    app,
    model_options,
    out_folder,
    out_option,
    parse_ints,
    prompt_options,
    say,
)
from refusal_lens.cli.fields import constant
from refusal_lens.cli.options import config_options, renamed
from refusal_lens.configs import StageConfig


@app.command(
    epilog="Example: refusal-lens geometry smollm2-135m --n 32 --panels 1,4,8 --judge score "
    "--out runs/geometry"
)
@renamed({"--refused-by": "--judge", "--position": "--positions"})
@model_options
@prompt_options(seed=False)
@config_options(
    "refusal_lens.boundary.geometry:GeometryConfig",
    names={"position": "positions"},
    helps={"position": "The one position read, counted back from the last token (-1)."},
)
def geometry(
    model: ModelArg,
    out: out_option("geometry") = None,
    harmful: Annotated[str, typer.Option(help="Prompt spec of the harmful class")] = "harmful",
    harmless: Annotated[str, typer.Option(help="Prompt spec of the harmless class")] = "harmless",
    borderline: Annotated[str, typer.Option(help="Prompt spec placed between")] = "borderline",
    direction: OptionalDirectionOpt = None,
    panels: Annotated[str | None, typer.Option(help="Layers shown in the grid: 1,4,8")] = None,
    judge: JudgeOpt = DEFAULT_JUDGE,
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Place harmful, harmless and borderline prompts against each layer's boundary.

    Writes geometry.{json,safetensors}, grid.png, margins.png and probe_accuracy.png; --n
    samples each prompt set (seed: --seed); --judge decides which borderline prompts count
    as refused.
    """
    from refusal_lens.boundary.geometry import boundary_geometry
    from refusal_lens.boundary.views import write_geometry_figures
    from refusal_lens.residual_direction import Direction

    out = out_folder(out, model, "geometry")
    handle = load(model)
    pick = replace(pick, seed=config.seed)
    sets = [pick(spec) for spec in (harmful, harmless, borderline)]
    refused = _substring_refusals(handle, sets[2]) if judge == "substring" else None
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


@app.command(
    epilog="Example: refusal-lens rass smollm2-135m harmful --direction runs/direction "
    "--harm-judge runs/harm-judge --triggers runs/triggers --benign-contexts harmless "
    "--out runs/rass"
)
@renamed({"--lexicon": "--triggers"})
@model_options
@prompt_options(seed=False)
@config_options(
    "refusal_lens.boundary.rass:RASSConfig",
    choices={"languages": tuple(constant("refusal_lens.boundary.translate:LANGUAGES"))},
)
def rass(
    model: ModelArg,
    seeds: PromptsArg,
    direction: DirectionOpt,
    harm_judge: HarmJudgeOpt,
    out: out_option("rass") = None,
    base: BaseOpt = None,
    harmful: Annotated[str, typer.Option(help="Reference harmful prompts")] = "harmful",
    harmless: Annotated[str, typer.Option(help="Reference harmless prompts")] = "harmless",
    lexicon: Annotated[
        Path | None,
        typer.Option(
            "--triggers",
            metavar="DIR",
            help="Folder written by `triggers` (or its lexicon.json): the trigger words "
            "recombined with --benign-contexts.",
        ),
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
    out = out_folder(out, model, "rass")
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
            "--triggers needs --benign-contexts SPEC to recombine with.",
            param_hint="'--triggers'",
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
