"""Commands of the triggers stage: ``harm-judge`` (fit and save the harm probe), ``triggers``
(trigger masks and lexicon of refused requests) and ``sanitize`` (trigger-matched benign data
from saved masks)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from refusal_lens.cli.common import (
    BaseOpt,
    HarmJudgeOpt,
    Loader,
    ModelArg,
    PromptsArg,
    Sampler,
    app,
    model_options,
    out_folder,
    out_option,
    prompt_options,
    say,
)
from refusal_lens.cli.options import config_options, renamed
from refusal_lens.configs import StageConfig


@app.command(
    "harm-judge",
    epilog="Example: refusal-lens harm-judge smollm2-135m --n 128 --out runs/harm-judge",
)
@model_options
@prompt_options(seed=False)
@config_options("refusal_lens.triggers.harm:HarmJudgeConfig")
def harm_judge(
    model: ModelArg,
    out: out_option("harm-judge") = None,
    harmful: Annotated[str, typer.Option(help="Prompt spec of the harmful class.")] = "harmful",
    benign: Annotated[
        list[str], typer.Option(help="Prompt spec(s) of the benign class; repeat for several.")
    ] = ["harmless", "borderline"],  # noqa: B006 (typer reads the default, never mutates it)
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Fit the harm judge (a probe on the model's residual stream) and save it.

    Fit it on the base model, with benign look-alikes (borderline) among the benign prompts.
    Writes harm_judge.{safetensors,json}; --n samples each prompt set (seed: --seed).
    """
    from refusal_lens.triggers.harm import fit_harm_judge

    out = out_folder(out, model, "harm-judge")
    pick = replace(pick, seed=config.seed)
    benign_set = pick(benign[0])
    for spec in benign[1:]:
        benign_set = benign_set + pick(spec)
    judge = fit_harm_judge(load(model), pick(harmful), benign_set, config)
    judge.save(out)
    say(
        f"harm judge: layer {judge.layer}, held-out accuracy {judge.val_accuracy:.2f}, "
        f"threshold {judge.config.threshold:g}"
    )
    say(f"wrote harm_judge.safetensors and harm_judge.json to {out}/")


@app.command(
    epilog="Example: refusal-lens triggers aligned-model harmful --harm-judge runs/harm-judge "
    "--base smollm2-135m --n 32 --out runs/triggers"
)
@model_options
@prompt_options()
@config_options("refusal_lens.triggers.masks:TriggerConfig")
def triggers(
    model: ModelArg,
    prompts: PromptsArg,
    harm_judge: HarmJudgeOpt,
    out: out_option("triggers") = None,
    base: BaseOpt = None,
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Which words of each refused request drive the refusal: harmful cues and triggers.

    MODEL is the (aligned) model that refuses; --base the model the --harm-judge reads.
    Writes masks.jsonl, lexicon.json (the ranked trigger lexicon), triggers.json and
    lexicon.png.
    """
    from refusal_lens.triggers.harm import HarmJudge
    from refusal_lens.triggers.masks import trigger_masks

    out = out_folder(out, model, "triggers")
    judge = HarmJudge.load(harm_judge)
    handle = load(model)
    base_handle = handle if base is None else load(base)
    masks = trigger_masks(handle, pick(prompts), base_handle, judge, config)
    masks.save(out)
    _plot_lexicon(masks.lexicon, out / "lexicon.png")
    _print_masks(masks)
    say(f"wrote masks.jsonl, lexicon.json and triggers.json to {out}/")


def _plot_lexicon(lexicon: list, path: Path) -> None:
    if not lexicon:
        return
    from refusal_lens.plots import pyplot
    from refusal_lens.triggers.views import plot_lexicon

    pyplot().close(plot_lexicon(lexicon, path))


def _print_masks(masks: Any) -> None:
    rows = masks.masks
    say(
        f"{len(rows)} requests: {sum(m.refused for m in rows)} refused, "
        f"{sum(bool(m.harmful_cues) for m in rows)} with a harmful cue, "
        f"{sum(bool(m.triggers) for m in rows)} with a trigger"
    )
    for entry in masks.lexicon[:10]:
        say(
            f"  {entry.word:<16} {entry.kind:<12} carrier {entry.carrier_effect:+.2f} "
            f"in {entry.n_requests} request(s)"
        )


@app.command(
    epilog="Example: refusal-lens sanitize smollm2-135m --triggers runs/triggers "
    "--harm-judge runs/harm-judge --out runs/sanitize"
)
@renamed({"--masks": "--triggers"})
@model_options
@config_options("refusal_lens.triggers.sanitize:SanitizeConfig")
def sanitize(
    model: Annotated[str, typer.Argument(help="Model spec of the base model (answers)")],
    masks: Annotated[
        Path,
        typer.Option("--triggers", metavar="DIR", help="Folder written by `triggers` (required)."),
    ],
    harm_judge: HarmJudgeOpt,
    out: out_option("sanitize") = None,
    rewriter: Annotated[
        str | None,
        typer.Option(
            metavar="SPEC",
            help="A chat model (model spec, e.g. qwen2.5-coder-0.5b) that rewrites each whole "
            "request instead of replacing cues word by word; loaded without --system",
        ),
    ] = None,
    *,
    load: Loader,
    config: StageConfig,
) -> None:
    """Rewrite the masked requests into trigger-matched benign data, judged and filtered.

    Harmful cues are replaced (or deleted), or with --rewriter the chat model rewrites each
    request; triggers kept. A rewrite is kept when the --harm-judge calls it benign and MODEL
    (the base model) answers it. Writes sanitized.jsonl (a prompt set, usable as align
    --benign), rejected.jsonl, sanitized.json.
    """
    from refusal_lens.triggers.harm import HarmJudge
    from refusal_lens.triggers.masks import TriggerMasks
    from refusal_lens.triggers.sanitize import sanitize as run_sanitize

    _check_spec(rewriter, "'--rewriter'")
    out = out_folder(out, model, "sanitize")
    saved = TriggerMasks.load(masks)
    base = load(model)
    data = run_sanitize(
        base,
        saved.masks,
        HarmJudge.load(harm_judge),
        config,
        rewriter=_rewriter(rewriter, model, base, load),
    )
    data.save(out)
    say(f"kept {len(data.kept)} of {len(data.items)} rewrites")
    for item in data.items[:5]:
        say(f"  {'kept    ' if item.kept else 'rejected'} {item.text!r} {item.reason}")
    say(f"wrote sanitized.jsonl, rejected.jsonl and sanitized.json to {out}/")


def _check_spec(spec: str | None, hint: str) -> None:
    """A model spec option that names no model fails before anything is loaded."""
    if spec is None:
        return
    from refusal_lens.errors import ModelSpecError
    from refusal_lens.models.spec import resolve_spec

    try:
        resolve_spec(spec)
    except ModelSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from exc


def _rewriter(spec: str | None, model: str, base: Any, load: Loader) -> Any:
    """``--rewriter``: None, or ``model_rewriter`` on the spec, loaded without the --system
    prompt (the base model itself when the spec names it)."""
    if spec is None:
        return None
    from refusal_lens.triggers.rewrite import model_rewriter

    return model_rewriter(base if spec == model else replace(load, system=None)(spec))
