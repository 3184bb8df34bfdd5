"""The ``refusal-lens`` command line: one command per stage, plus ``run`` for the pipeline.

Each module holds the commands of one stage folder, registered in the order the data flows.
Heavy imports (torch, transformer_lens) happen inside the commands, and options come from
the stages' config dataclasses read from source (``options.py``), so ``--help`` is instant.
"""

from __future__ import annotations

import importlib
import logging

import typer

from refusal_lens.cli.common import app

COMMAND_MODULES = (
    "primitives",  # info, collect, score, evaluate
    "judge",  # judge (given answers)
    "alignment",  # align
    "directions",  # direction, steer, orthogonalize
    "export",
    "attribution",  # attribute
    "triggers",  # harm-judge, triggers, sanitize
    "boundary",  # geometry, rass
    "run",  # run, mitigate
)
for _module in COMMAND_MODULES:
    importlib.import_module(f"refusal_lens.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from refusal_lens.errors import RefusalLensError

    try:
        app()
    except RefusalLensError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(2) from None
