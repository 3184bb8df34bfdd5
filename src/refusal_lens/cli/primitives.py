"""Commands on the primitives: ``info``, ``collect``, ``score`` and ``evaluate``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from refusal_lens.cli.common import (
    Loader,
    ModelArg,
    OptionalOutOpt,
    OutOpt,
    PromptsArg,
    Sampler,
    app,
    console,
    model_options,
    prompt_options,
    say,
)
from refusal_lens.cli.options import config_options
from refusal_lens.configs import StageConfig


@app.command()
@model_options
def info(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    *,
    load: Loader,
) -> None:
    """Print the model's facts: layers, width, chat template, post-instruction, refusal tokens."""
    facts = load(model).describe()
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    from rich.table import Table

    table = Table(show_header=False, title=f"refusal-lens info: {model}")
    for key, value in facts.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    console().print(table)


@app.command()
@model_options
@prompt_options()
@config_options(
    "refusal_lens.activations:CollectConfig",
    helps={
        "layers": "Layers, '0,5,10' or '0:30' (default: every layer).",
        "positions": "Negative positions, '-1,-2' (default: the post-instruction positions).",
        "hook": "resid_pre, resid_mid or resid_post.",
    },
)
def collect(
    model: ModelArg,
    prompts: PromptsArg,
    out: OutOpt,
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Collect residual streams (prompt, layer, pos, d_model): residuals.{safetensors,json}."""
    from refusal_lens.activations import collect_residuals

    res = collect_residuals(load(model), pick(prompts), config, out=out)
    say(f"wrote {tuple(res.acts.shape)} residuals to {out}/")


@app.command()
@model_options
@prompt_options()
def score(
    model: ModelArg,
    prompts: PromptsArg,
    judge: Annotated[str, typer.Option(help="score (first-token log-odds) or substring")] = "score",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per answer.")] = 48,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 16,
    out: OptionalOutOpt = None,
    *,
    load: Loader,
    pick: Sampler,
) -> None:
    """Refusal rate of a prompt set by the refusal-score or the substring judge.

    With --out, the per-prompt results go to score.json.
    """
    from refusal_lens.evaluation import report_json
    from refusal_lens.scoring import refusal_rate

    prompt_set = pick(prompts)
    handle = load(model)
    report = refusal_rate(
        handle, prompt_set, judge, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    say(
        f"{prompt_set.name}: refusal rate {report.rate:.1%} ({sum(report.refused)}/{report.n}), "
        f"judge={report.judge}"
    )
    if out is not None:
        from refusal_lens.artifacts import write_json

        write_json(out / "score.json", report_json(handle, prompt_set, report))
        say(f"wrote {out / 'score.json'}")


@app.command()
@model_options
@config_options("refusal_lens.evaluation:EvalConfig", exclude=("extra",))
def evaluate(
    model: ModelArg,
    out: OptionalOutOpt = None,
    *,
    load: Loader,
    config: StageConfig,
) -> None:
    """RR on benign sets, ASR on harmful sets, and paper 2's combined score, per judge.

    With --out, evaluation.json and evaluation.md. Benchmark sets are read from --data.
    """
    from refusal_lens.evaluation import evaluate as run_evaluate

    result = run_evaluate(load(model), config)
    for judge in config.judges:
        typer.echo(f"judge: {judge}\n\n{result.table(judge, model)}\n")
    typer.echo("combined = mean RR over benign sets + mean ASR over harmful sets (lower is better)")
    if out is not None:
        result.save(out)
        say(f"wrote {out}/evaluation.json and evaluation.md")
