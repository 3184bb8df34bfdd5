"""``run``: the whole method (``refusal_lens.pipeline.run_pipeline``) in one command."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from refusal_lens.cli.common import OptionalOutOpt, app, say
from refusal_lens.cli.options import config_options
from refusal_lens.pipeline.registry import REGISTRY, SEARCH

STAGE_LIST = ", ".join(REGISTRY.default)
MITIGATE_STAGES = REGISTRY.closure(SEARCH.name)  # `mitigate`: the search and what it reads


@app.command()
@config_options(
    "refusal_lens.pipeline.config:RunConfig",
    exclude=("model",),
    factory="preset",
    helps={"stages": f"Comma-separated stages to run ({STAGE_LIST}); default: all."},
    dotted=True,
    names={"with_search": "search"},
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
    self-contained report.html. --quick: reduced counts (about ten minutes on 2 cores).
    A stage's settings are --STAGE.SETTING (--rass.contexts 8)."""
    from refusal_lens.pipeline import run_pipeline

    report = run_pipeline(config.replace(model=model), out, force=force, say=say)
    say(f"open {report} in a browser")


OPTION_OF = {  # search setting -> the option of `mitigate`
    "harmful_drop": "--delta",
    "kl_max": "--kl-max",
    "budget (minutes)": "--budget (minutes)",
    "trials": "--trials",
    "seeds": "--seeds",
    "kinds": "--kinds",
    "n_heldout": "--heldout",
    "judge": "--judge",
    "tokens": "--judge-tokens",
}


@app.command()
def mitigate(
    model: Annotated[str, typer.Argument(help="Model spec")] = "smollm2-135m",
    out: OptionalOutOpt = None,
    trials: Annotated[
        int | None, typer.Option(help="Trials per search (default 60; --quick 24).")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(help="Over-refusal searches, one per seed (3).")
    ] = None,
    delta: Annotated[
        float | None,
        typer.Option(help="δ: harmful refusal may fall this far below the unedited (0.05)."),
    ] = None,
    kl_max: Annotated[
        float | None, typer.Option(help="κ: first-token KL bound on plain prompts (0.1).")
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(help="Minutes for the search step; trials stop early to meet it."),
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option(help="Edit kinds searched: ablate,add (ablate alone: the winner is weights)."),
    ] = None,
    heldout: Annotated[
        int | None,
        typer.Option(help="Held-out test prompts per set in the comparison (default: evaluate.n)."),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help="How trials are judged: score (one forward pass per prompt) or substring "
            "(a short greedy answer, the degeneration detector, the refusal phrases)."
        ),
    ] = None,
    judge_tokens: Annotated[
        int | None, typer.Option(help="Tokens per answer when --judge substring (24).")
    ] = None,
    quick: Annotated[bool, typer.Option(help="The quick preset's reduced counts.")] = False,
    force: Annotated[str | None, typer.Option(help="Rerun this stage and every later one.")] = None,
) -> None:
    """Mitigation by search: the edit that minimises benign refusal under a harmful-refusal
    floor (--delta) and a KL bound (--kl-max), judged on held-out prompts, its front drawn and
    the winner exported (10-search/export/: the edit, and an HF model where weights can hold
    it). Runs the stages it needs first (reused when complete), then the report."""
    from refusal_lens.errors import RefusalLensError
    from refusal_lens.pipeline import RunConfig, run_pipeline

    given = {
        "trials": trials,
        "seeds": seeds,
        "harmful_drop": delta,
        "kl_max": kl_max,
        "budget": budget,
        "kinds": None if kinds is None else tuple(k.strip() for k in kinds.split(",")),
        "n_heldout": heldout,
        "judge": judge,
        "tokens": judge_tokens,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    try:
        config = RunConfig.preset(quick, model=model, stages=MITIGATE_STAGES, search=changes)
    except RefusalLensError as exc:  # name the option the user typed, not the field
        message = str(exc)
        for field, option in OPTION_OF.items():
            message = message.replace(f"search.{field} ", f"{option} ", 1)
        raise RefusalLensError(message) from None
    report = run_pipeline(config, out, force=force, say=say)
    export = report.parent / REGISTRY.folder(SEARCH.name) / "export"
    say(f"open {report} in a browser; the edit: {export}")
