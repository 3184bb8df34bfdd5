"""``run``: the whole method (``refusal_lens.pipeline.run_pipeline``) in one command."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from refusal_lens.cli.common import OptionalOutOpt, app, say
from refusal_lens.cli.options import config_options

STAGE_LIST = (
    "model, organism, evaluate, direction, interventions, attribution, triggers, geometry, "
    "rass, mitigations"
)


@app.command()
@config_options(
    "refusal_lens.pipeline.config:RunConfig",
    exclude=("model",),
    factory="preset",
    helps={"stages": f"Comma-separated stages to run ({STAGE_LIST}); default: all."},
)
def run(
    model: Annotated[str, typer.Argument(help="Model spec")] = "smollm2-135m",
    out: OptionalOutOpt = None,
    force: Annotated[str | None, typer.Option(help="Rerun this stage and every later one.")] = None,
    *,
    config: Any,  # RunConfig (the pipeline module imports torch)
) -> None:
    """The method in one command: every stage into --out (default runs/<model>/), each in its
    own NN-stage/ folder, reused when its settings and inputs are unchanged; then one
    self-contained report.html. --quick: reduced counts (about ten minutes on 2 cores)."""
    from refusal_lens.pipeline import run_pipeline

    report = run_pipeline(config.replace(model=model), out, force=force, say=say)
    say(f"open {report} in a browser")
