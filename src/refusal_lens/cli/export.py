"""The ``export`` command: a saved direction as a llama.cpp control vector or a steering-vectors
file (:mod:`refusal_lens.directions.export`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from refusal_lens.cli.common import app, parse_ints, say


class ExportFormat(StrEnum):
    """The formats of ``refusal_lens.directions.export.FORMATS`` (listed here so that
    ``--help`` imports no torch)."""

    gguf = "gguf"
    steering_vectors = "steering-vectors"


@app.command()
def export(
    direction: Annotated[
        Path,
        typer.Argument(
            metavar="DIRECTION",
            help="Folder written by `direction`, or its direction.safetensors file.",
        ),
    ],
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="gguf: llama.cpp control vector (also read by repeng); steering-vectors: "
            "the fields of steering_vectors.SteeringVector, saved with torch.save.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="The file to write.")],
    layers: Annotated[
        str | None,
        typer.Option(
            help="refusal-lens layers to steer ('8,9' or '8:12'), each the residual stream "
            "before that block; written as block layer-1 in the file. Default: the "
            "direction's own layer.",
        ),
    ] = None,
    scale: Annotated[
        float, typer.Option(help="Coefficient on the saved vector; negative steers away.")
    ] = 1.0,
) -> None:
    """Export a direction for llama.cpp, repeng or steering-vectors.

    The file adds scale × the direction at every token to the output of decoder block
    layer-1, which is the residual stream before block layer where it was read.

    Example: refusal-lens export runs/smollm2-135m/direction --format gguf --out refusal.gguf

    Steering layers 8 to 11 away from refusal: ... --layers 8:12 --scale -1
    """
    from refusal_lens.directions import Direction
    from refusal_lens.directions.export import export_direction

    chosen = parse_ints(layers, "--layers")
    value = Direction.load(direction)
    path = export_direction(value, out, fmt.value, layers=chosen, scale=scale)
    shown = sorted(set(chosen)) if chosen is not None else [value.layer]
    say(f"wrote {path} ({fmt.value}: layers {shown} as blocks {[x - 1 for x in shown]})")
