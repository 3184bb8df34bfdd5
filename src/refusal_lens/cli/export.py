"""The ``export`` command: a saved direction as a llama.cpp control vector or a steering-vectors
file (:mod:`refusal_lens.directions.export`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from refusal_lens.cli.common import app, out_folder, out_option, parse_ints, say


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
    out: out_option("export") = None,
) -> None:
    """Export a direction for llama.cpp, repeng or steering-vectors.

    The file adds scale × the direction at every token to the output of decoder block
    layer-1, which is the residual stream before block layer where it was read.

    It writes KIND.gguf or KIND.pt (KIND: refusal, false_refusal) into --out.

    Example: refusal-lens export runs/smollm2-135m/03-direction --format gguf --scale -1
    """
    from refusal_lens.directions import Direction
    from refusal_lens.directions.export import export_direction

    chosen = parse_ints(layers, "--layers")
    value = Direction.load(direction)
    suffix = ".gguf" if fmt is ExportFormat.gguf else ".pt"
    folder = out_folder(out, value.model, "export")
    folder.mkdir(parents=True, exist_ok=True)
    path = export_direction(
        value, folder / f"{value.kind}{suffix}", fmt.value, layers=chosen, scale=scale
    )
    shown = sorted(set(chosen)) if chosen is not None else [value.layer]
    say(f"wrote {path} ({fmt.value}: layers {shown} as blocks {[x - 1 for x in shown]})")
