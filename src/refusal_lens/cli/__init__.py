"""The ``refusal-lens`` command line: one command per stage, plus ``run`` for the pipeline.

Heavy imports (torch, transformer_lens) happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import importlib
import logging

import typer

from refusal_lens.cli.common import app

# Importing a command module registers its commands, in the order the data flows.
for _module in ("stages", "directions", "attribution", "boundary"):
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
