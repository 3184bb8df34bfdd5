"""Command of the alignment stage: ``align`` (paper 2's α-weighted SFT)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from refusal_lens.cli.common import Loader, OptionalOutOpt, app, model_options, say
from refusal_lens.cli.options import config_options
from refusal_lens.configs import StageConfig


@app.command()
@model_options
@config_options("refusal_lens.alignment.train:AlignConfig", factory="organism")
def align(
    model: Annotated[str, typer.Argument(help="Model spec of the base model")] = "smollm2-135m",
    out: OptionalOutOpt = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-dir",
            metavar="DIR",
            help="Write the aligned model here (default: the cache, keyed by recipe and data).",
        ),
    ] = None,
    *,
    load: Loader,
    config: StageConfig,
) -> None:
    """Safety-align a chat model (paper 2's α-weighted SFT); print the model's directory.

    The recipe is the project's organism (AlignConfig.organism); every setting is an option.
    With --out, alignment.json records where the model lies, its base, the recipe and the
    training statistics.
    """
    from refusal_lens.alignment import align as run_align

    result = run_align(load(model), config, model_dir)
    if out is not None:
        result.save(out)
        say(f"wrote {out}/alignment.json")
    typer.echo(result.path)
