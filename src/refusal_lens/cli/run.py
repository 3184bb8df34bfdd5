"""``run``: the whole method (``refusal_lens.pipeline.run_pipeline``) in one command, and
``mitigate``: the mitigation search with the stages it reads.

Both take the pipeline's settings by their one name: a run-level setting ``--SETTING``
(``--device``, ``--quick``), a stage's setting ``--STAGE.SETTING`` (``--search.trials``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from refusal_lens.cli.attribution import method_configs
from refusal_lens.cli.common import app, out_option, say
from refusal_lens.cli.fields import config_fields, constant
from refusal_lens.cli.options import config_options, renamed
from refusal_lens.pipeline.registry import REGISTRY, SEARCH

RUN_CONFIG = "refusal_lens.pipeline.config:RunConfig"
STAGE_LIST = ", ".join(REGISTRY.default)
MITIGATE_STAGES = REGISTRY.closure(SEARCH.name)  # `mitigate`: the search and what it reads
CHOICES = {
    "stages": REGISTRY.names,
    "languages": ("en", *constant("refusal_lens.prompts.polyrefuse:LANGUAGES")),
    "method": tuple(method_configs()),
}
ForceOpt = Annotated[
    Literal[REGISTRY.names] | None,  # type: ignore[valid-type]
    typer.Option(help="Rerun this stage and every later one."),
]


@app.command(
    epilog="Example: refusal-lens run smollm2-135m --quick --rass.contexts 8 --out runs/smollm2"
)
@config_options(
    RUN_CONFIG,
    exclude=("model",),
    factory="preset",
    helps={"stages": f"Comma-separated stages to run ({STAGE_LIST}); default: all."},
    dotted=True,
    names={"with_search": "search"},
    choices=CHOICES,
)
def run(
    model: Annotated[str, typer.Argument(help="Model spec")] = "smollm2-135m",
    out: out_option(None) = None,
    force: ForceOpt = None,
    *,
    config: Any,  # RunConfig (the pipeline module imports torch)
) -> None:
    """The method in one command: every stage into --out, each in its own NN-stage/ folder,
    reused when its settings and inputs are unchanged; then one self-contained report.html.
    --quick: reduced counts (about ten minutes on 2 cores). A stage's settings are
    --STAGE.SETTING (--rass.contexts 8)."""
    from refusal_lens.pipeline import run_pipeline

    report = run_pipeline(config.replace(model=model), out, force=force, say=say)
    say(f"open {report} in a browser")


# `mitigate` takes the run-level settings and the search's: not the other stages'
MITIGATE_EXCLUDE = (
    "model",
    "stages",
    "with_search",
    "languages",
    *(f.name for f in config_fields(RUN_CONFIG) if f.nested and f.name != SEARCH.name),
)


@app.command(
    epilog="Example: refusal-lens mitigate smollm2-135m --quick --search.trials 24 "
    "--search.harmful-drop 0.05 --device cuda --out runs/smollm2"
)
@renamed(
    {
        "--trials": "--search.trials",
        "--seeds": "--search.seeds",
        "--delta": "--search.harmful-drop",
        "--kl-max": "--search.kl-max",
        "--budget": "--search.budget",
        "--kinds": "--search.kinds",
        "--heldout": "--search.n-heldout",
        "--judge": "--search.judge",
        "--judge-tokens": "--search.tokens",
    }
)
@config_options(
    RUN_CONFIG,
    exclude=MITIGATE_EXCLUDE,
    factory="preset",
    dotted=True,
    choices=CHOICES,
    fixed={"stages": MITIGATE_STAGES},
)
def mitigate(
    model: Annotated[str, typer.Argument(help="Model spec")] = "smollm2-135m",
    out: out_option(None) = None,
    force: ForceOpt = None,
    *,
    config: Any,  # RunConfig
) -> None:
    """Mitigation by search: the edit that minimises benign refusal under a harmful-refusal
    floor (--search.harmful-drop) and a KL bound (--search.kl-max), judged on held-out
    prompts, its front drawn and the winner exported (10-search/export/: the edit, and an HF
    model where weights can hold it). Runs the stages it needs first (reused when complete;
    the same folder as `run`), then the report."""
    from refusal_lens.pipeline import run_pipeline

    report = run_pipeline(config.replace(model=model), out, force=force, say=say)
    export = report.parent / REGISTRY.folder(SEARCH.name) / "export"
    say(f"open {report} in a browser; the edit: {export}")
