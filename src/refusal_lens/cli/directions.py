"""Commands of the directions stage: ``direction`` (extract and select), ``steer`` and
``orthogonalize``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from refusal_lens.cli.common import (
    JUDGE_HELP,
    DirectionOpt,
    Loader,
    ModelArg,
    PromptsArg,
    Sampler,
    app,
    console,
    model_options,
    out_folder,
    out_option,
    prompt_options,
    say,
)
from refusal_lens.cli.options import config_options
from refusal_lens.configs import StageConfig


@app.command(
    epilog="Example: refusal-lens direction smollm2-135m --n-train 64 --out runs/direction"
)
@model_options
@config_options("refusal_lens.directions.find:DirectionConfig")
def direction(
    model: ModelArg,
    out: out_option("direction") = None,
    *,
    load: Loader,
    config: StageConfig,
) -> None:
    """Extract difference-of-means candidates and select the refusal direction.

    Writes direction.{safetensors,json} and selection.{json,md,png}.
    """
    from refusal_lens.directions.find import find_direction

    out = out_folder(out, model, "direction")
    selection = find_direction(load(model), config, out)
    say(selection.message)
    say(f"wrote direction.safetensors, selection.{{json,md,png}} to {out}/")


@app.command(
    epilog="Example: refusal-lens steer smollm2-135m borderline --direction runs/direction "
    "--ablate --judge substring"
)
@model_options
@prompt_options(limit=16)
@config_options("refusal_lens.directions.steer:SteerConfig", helps={"judge": JUDGE_HELP})
def steer(
    model: ModelArg,
    prompts: PromptsArg,
    direction: DirectionOpt,
    show: Annotated[int, typer.Option(help="Completions to print")] = 3,
    out: out_option("steer") = None,
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Refusal rates and answers before and after ablating (--ablate) or adding (--add C) a
    direction.

    The result (per-prompt rows included) goes to steer.json in --out.
    """
    from refusal_lens.directions import Direction
    from refusal_lens.directions.steer import steer as run_steer

    direction_value = Direction.load(direction)
    prompt_set = pick(prompts)
    result = run_steer(load(model), prompt_set, direction_value, config)
    what = "ablated" if config.ablate else f"added × {config.add}"
    _print_steer(prompt_set, result, config.judge, what, show)
    out = out_folder(out, model, "steer")
    result.save(out)
    say(f"wrote {out / 'steer.json'}")


def _print_steer(prompt_set: Any, result: Any, judge: str, what: str, show: int) -> None:
    cons = console()
    cons.print(
        f"{prompt_set.name} ({result.before.n} prompts, judge={judge}): refusal rate "
        f"{result.before.rate:.1%} before, {result.after.rate:.1%} with the direction {what}"
    )
    for text, row in list(zip(prompt_set.texts, result.rows(), strict=True))[:show]:
        cons.print(f"\n[bold]{text}[/bold]")
        for key in ("before", "after"):
            evidence = row.get(f"{key}_completion", row.get(f"{key}_score"))
            cons.print(f"  {key}: {evidence!r}", markup=False)


@app.command(
    epilog="Example: refusal-lens orthogonalize smollm2-135m --direction runs/direction "
    "--out models/smollm2-orth"
)
@model_options
def orthogonalize(
    model: ModelArg,
    direction: DirectionOpt,
    out: out_option("orthogonalize") = None,
    *,
    load: Loader,
) -> None:
    """Write a copy of the model with the direction projected out of its weights.

    Every weight that writes to the residual stream is edited; --out becomes an HF model
    directory that every command loads.
    """
    from refusal_lens.directions import Direction
    from refusal_lens.directions.orthogonalize import orthogonalize_weights

    out = out_folder(out, model, "orthogonalize")
    path = orthogonalize_weights(load(model), Direction.load(direction), out)
    say(f"wrote the orthogonalized model to {path}/")
