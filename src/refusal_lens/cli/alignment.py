"""Command of the alignment stage: ``align`` (paper 2's α-weighted SFT)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from refusal_lens.cli.common import Loader, app, model_options, out_folder, out_option, say
from refusal_lens.cli.options import config_options
from refusal_lens.configs import StageConfig


@app.command(
    epilog="Example: refusal-lens align smollm2-135m --alpha 0.5 --epochs 2 --out runs/aligned"
)
@model_options
@config_options("refusal_lens.alignment.train:AlignConfig", factory="organism")
def align(
    model: Annotated[str, typer.Argument(help="Model spec of the base model")] = "smollm2-135m",
    out: out_option("align") = None,
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
    alignment.json in --out records where the model lies, its base, the recipe and the
    training statistics.
    """
    from refusal_lens.alignment import align as run_align

    result = run_align(load(model), config, model_dir)
    out = out_folder(out, model, "align")
    result.save(out)
    say(f"wrote {out}/alignment.json")
    typer.echo(result.path)
