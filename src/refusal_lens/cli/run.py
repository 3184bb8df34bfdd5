"""``run``: the whole pipeline (``refusal_lens.pipeline.run_pipeline``) in one command."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from refusal_lens.cli.common import OptionalOutOpt, app, say
from refusal_lens.cli.options import config_options


@app.command()
@config_options(
    "refusal_lens.pipeline:RunConfig", exclude=("model", "n_prompts", "device", "dtype")
)
def run(
    model: Annotated[str, typer.Argument(help="Model spec")] = "smollm2-135m",
    out: OptionalOutOpt = None,
    n: Annotated[int, typer.Option(min=1, help="Seeded sample of N prompts per set.")] = 32,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if any)")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    *,
    config: Any,  # RunConfig (the pipeline module imports torch)
) -> None:
    """The pipeline: model facts, residuals and refusal rates for the shipped sets.

    Written under --out (default runs/<model>).
    """
    from refusal_lens.pipeline import run_pipeline

    config = dataclasses.replace(config, model=model, n_prompts=n, device=device, dtype=dtype)
    folder = run_pipeline(config, out)
    say(f"run written to {folder}/ (see summary.md)")
