"""Commands on the primitives: ``info``, ``collect``, ``score`` and ``evaluate``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from refusal_lens.cli.common import (
    DEFAULT_JUDGE,
    JudgeOpt,
    JudgesOpt,
    Loader,
    ModelArg,
    PromptsArg,
    Sampler,
    app,
    console,
    model_options,
    out_folder,
    out_option,
    parse_judges,
    prompt_options,
    say,
)
from refusal_lens.cli.options import config_options, renamed
from refusal_lens.configs import StageConfig


@app.command(epilog="Example: refusal-lens info smollm2-135m --json")
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


@app.command(
    epilog="Example: refusal-lens collect smollm2-135m harmful --limit 16 --layers 0:10 "
    "--out runs/collect"
)
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
    out: out_option("collect") = None,
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
) -> None:
    """Collect residual streams (prompt, layer, pos, d_model): residuals.{safetensors,json}."""
    from refusal_lens.activations import collect_residuals

    out = out_folder(out, model, "collect")
    res = collect_residuals(load(model), pick(prompts), config, out=out)
    say(f"wrote {tuple(res.acts.shape)} residuals to {out}/")


@app.command(epilog="Example: refusal-lens score smollm2-135m xstest-safe --limit 32 --judge score")
@model_options
@prompt_options()
def score(
    model: ModelArg,
    prompts: PromptsArg,
    judge: JudgeOpt = DEFAULT_JUDGE,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per answer.")] = 48,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 16,
    out: out_option("score") = None,
    *,
    load: Loader,
    pick: Sampler,
) -> None:
    """Refusal rate of a prompt set by the substring or the refusal-score judge.

    The per-prompt results go to score.json in --out.
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
    from refusal_lens.artifacts import write_json

    out = out_folder(out, model, "score")
    write_json(out / "score.json", report_json(handle, prompt_set, report))
    say(f"wrote {out / 'score.json'}")


@app.command(
    epilog="Example: refusal-lens evaluate smollm2-135m --n 32 --judge score,substring --data data/"
)
@renamed({"--judges": "--judge"})
@model_options
@config_options("refusal_lens.evaluation:EvalConfig", exclude=("extra", "judges"))
def evaluate(
    model: ModelArg,
    judge: JudgesOpt = None,
    out: out_option("evaluate") = None,
    *,
    load: Loader,
    config: StageConfig,
) -> None:
    """RR on benign sets, ASR on harmful sets, and paper 2's combined score, per judge.

    Writes evaluation.json and evaluation.md to --out. Benchmark sets are read from --data.
    """
    from refusal_lens.evaluation import evaluate as run_evaluate

    config = config.replace(judges=parse_judges(judge))
    result = run_evaluate(load(model), config)
    for judge in config.judges:
        typer.echo(f"judge: {judge}\n\n{result.table(judge, model)}\n")
    typer.echo("combined = mean RR over benign sets + mean ASR over harmful sets (lower is better)")
    out = out_folder(out, model, "evaluate")
    result.save(out)
    say(f"wrote {out}/evaluation.json and evaluation.md")
