"""Commands of the directions stage: `direction` (extract and select) and `steer`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from refusal_lens.cli.common import (
    DeviceOpt,
    DtypeOpt,
    LimitOpt,
    ModelArg,
    PromptsArg,
    SystemOpt,
    _console,
    _load,
    _parse_ints,
    _prompts,
    app,
)


@app.command()
def direction(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="Folder for the direction, scores and figure")] = Path(
        "runs/direction"
    ),
    harmful: Annotated[str, typer.Option(help="Prompt spec of the harmful class")] = "harmful",
    harmless: Annotated[str, typer.Option(help="Prompt spec of the harmless class")] = "harmless",
    n_train: Annotated[int, typer.Option(help="Train prompts per class")] = 128,
    n_val: Annotated[int, typer.Option(help="Validation prompts per class")] = 32,
    layers: Annotated[str | None, typer.Option(help="'0,5,10' or '0:30' (default: all)")] = None,
    positions: Annotated[
        str | None, typer.Option(help="Post-instruction positions, '-1,-2' (default: all)")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Candidates fully scored after the screen; 0=all")] = 8,
    kl_max: float = 0.1,
    induce_min: float = 0.0,
    max_layer_frac: float = 0.8,
    seed: int = 0,
    batch_size: int = 16,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
) -> None:
    """Extract difference-of-means candidates and select the refusal direction."""
    from refusal_lens.directions.find import DirectionConfig, find_direction
    from refusal_lens.directions.select import SelectConfig

    parsed_layers, parsed_positions = _parse_ints(layers), _parse_ints(positions)
    config = DirectionConfig(
        harmful=harmful,
        harmless=harmless,
        n_train=n_train,
        n_val=n_val,
        seed=seed,
        layers=None if parsed_layers is None else tuple(parsed_layers),
        positions=None if parsed_positions is None else tuple(parsed_positions),
        batch_size=batch_size,
        select=SelectConfig(
            kl_max=kl_max, induce_min=induce_min, max_layer_frac=max_layer_frac, top_k=top_k
        ),
    )
    selection = find_direction(_load(model, device, dtype, system), config, out)
    console = _console()
    console.print(selection.message)
    console.print(f"wrote direction.safetensors, selection.{{json,md,png}} to {out}/")


@app.command()
def steer(
    model: ModelArg,
    direction_dir: Annotated[Path, typer.Argument(help="Folder written by `direction`")],
    prompts: PromptsArg,
    ablate: Annotated[bool, typer.Option("--ablate", help="Ablate at every layer")] = False,
    add: Annotated[
        float | None, typer.Option("--add", help="Add COEF × direction at its layer")
    ] = None,
    layer: Annotated[int | None, typer.Option(help="Layer for --add (default: its own)")] = None,
    judge: Annotated[str, typer.Option(help="substring (generates) or score")] = "substring",
    limit: LimitOpt = 16,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    show: Annotated[int, typer.Option(help="Completions to print")] = 3,
    out: Annotated[Path | None, typer.Option(help="Write per-prompt results as JSON")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
) -> None:
    """Generations and refusal rates before and after ablating or adding a direction."""
    from refusal_lens.directions import Direction
    from refusal_lens.directions.steer import steer as run_steer

    direction_value = Direction.load(direction_dir)
    prompt_set = _prompts(prompts, limit)
    handle = _load(model, device, dtype, system)
    result = run_steer(
        handle,
        prompt_set,
        direction_value,
        ablate=ablate,
        coef=add,
        layer=layer,
        judge=judge,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    console = _console()
    what = "ablated" if ablate else f"added × {add}"
    console.print(
        f"{prompt_set.name} ({result.before.n} prompts, judge={judge}): refusal rate "
        f"{result.before.rate:.1%} before, {result.after.rate:.1%} with the direction {what}"
    )
    for text, row in list(zip(prompt_set.texts, result.rows(), strict=True))[:show]:
        console.print(f"\n[bold]{text}[/bold]")
        for key in ("before", "after"):
            evidence = row.get(f"{key}_completion", row.get(f"{key}_score"))
            console.print(f"  {key}: {evidence!r}", markup=False)
    if out is not None:
        from refusal_lens.artifacts import write_json

        write_json(
            out,
            {
                "model": handle.describe(),
                "prompts": prompt_set.name,
                "judge": judge,
                "intervention": result.intervention,
                "rate_before": result.before.rate,
                "rate_after": result.after.rate,
                "rows": [
                    {"prompt": t, **r} for t, r in zip(prompt_set.texts, result.rows(), strict=True)
                ],
            },
        )
