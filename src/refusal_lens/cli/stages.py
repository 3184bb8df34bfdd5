"""Commands of the foundation and alignment stages: info, collect, score, align, evaluate, run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from refusal_lens.cli.common import (
    DeviceOpt,
    DtypeOpt,
    LimitOpt,
    ModelArg,
    PromptsArg,
    SystemOpt,
    _console,
    _load,
    _parse_ints,
    _prompts,
    app,
)


@app.command()
def info(
    model: ModelArg,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the model's facts: layers, width, chat template, post-instruction, refusal tokens."""
    facts = _load(model, device, dtype, system).describe()
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    from rich.table import Table

    table = Table(show_header=False, title=f"refusal-lens info: {model}")
    for key, value in facts.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    _console().print(table)


@app.command()
def collect(
    model: ModelArg,
    prompts: PromptsArg,
    out: Annotated[Path, typer.Argument(help="Output folder for residuals.safetensors + .json")],
    layers: Annotated[str | None, typer.Option(help="'0,5,10' or '0:30' (default: all)")] = None,
    positions: Annotated[
        str | None, typer.Option(help="Negative positions, '-1,-2' (default: post-instruction)")
    ] = None,
    hook: Annotated[str, typer.Option(help="resid_pre, resid_mid or resid_post")] = "resid_pre",
    batch_size: int = 16,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
) -> None:
    """Collect residual streams (prompt, layer, pos, d_model) and write them as safetensors."""
    from refusal_lens.activations import collect_residuals

    prompt_set = _prompts(prompts, limit)
    res = collect_residuals(
        _load(model, device, dtype, system),
        prompt_set,
        _parse_ints(layers),
        _parse_ints(positions),
        hook=hook,
        batch_size=batch_size,
        out=out,
    )
    _console().print(f"wrote {tuple(res.acts.shape)} residuals to {out}/")


@app.command()
def score(
    model: ModelArg,
    prompts: PromptsArg,
    judge: Annotated[str, typer.Option(help="score (first-token log-odds) or substring")] = "score",
    limit: LimitOpt = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    out: Annotated[Path | None, typer.Option(help="Write per-prompt results as JSON")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
) -> None:
    """Refusal rate of a prompt set, by the refusal-score or the substring judge."""
    from refusal_lens.evaluation import report_json
    from refusal_lens.scoring import refusal_rate

    prompt_set = _prompts(prompts, limit)
    handle = _load(model, device, dtype, system)
    report = refusal_rate(
        handle,
        prompt_set,
        judge,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    _console().print(
        f"{prompt_set.name}: refusal rate {report.rate:.1%} ({sum(report.refused)}/{report.n}), "
        f"judge={report.judge}"
    )
    if out is not None:
        from refusal_lens.artifacts import write_json

        write_json(out, report_json(handle, prompt_set, report))


@app.command()
def align(
    model: Annotated[str, typer.Argument(help="Model spec of the base model")] = "smollm2-135m",
    alpha: Annotated[float, typer.Option(help="Weight of D_h in the loss, in [0, 1]")] = 0.5,
    variant: Annotated[str, typer.Option(help="sft or psft")] = "sft",
    mode: Annotated[str, typer.Option(help="lora or full")] = "lora",
    benign: Annotated[
        str, typer.Option(help="D_b queries: alpaca (from --data), or a prompt spec")
    ] = ("alpaca"),
    n_harmful: int = 160,
    n_benign: int = 200,
    answer_tokens: Annotated[int, typer.Option(help="Length of the self-distilled answers")] = 24,
    epochs: int = 1,
    lr: float = 5e-4,
    lora_rank: int = 16,
    seed: int = 0,
    data: Annotated[Path, typer.Option(help="Folder with alpaca_instructions.json")] = Path(
        "../shared/data"
    ),
    out: Annotated[
        Path | None, typer.Option(help="Output model directory (default: cache)")
    ] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
) -> None:
    """Safety-align a chat model (paper 2's α-weighted SFT) and print the model directory."""
    from refusal_lens.alignment import AlignConfig
    from refusal_lens.alignment import align as run_align

    config = AlignConfig(
        model=model,
        alpha=alpha,
        variant=variant,
        mode=mode,
        benign=benign,
        answer_tokens=answer_tokens,
        n_harmful=n_harmful,
        n_benign=n_benign,
        epochs=epochs,
        lr=lr,
        lora_rank=lora_rank,
        seed=seed,
        benign_path=str(data / "alpaca_instructions.json"),
        device=device,
        dtype=dtype,
    )
    typer.echo(run_align(config, out))


@app.command()
def evaluate(
    model: ModelArg,
    n: Annotated[int, typer.Option(help="Prompts per set (seeded sample)")] = 100,
    data: Annotated[Path, typer.Option(help="Folder with the public benchmark files")] = Path(
        "../shared/data"
    ),
    judges: Annotated[str, typer.Option(help="Comma-separated: score,substring")] = (
        "score,substring"
    ),
    out: Annotated[Path | None, typer.Option(help="Write JSON and Markdown here")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
) -> None:
    """RR on benign sets, ASR on harmful sets, and paper 2's combined score, per judge."""
    from refusal_lens.evaluation import EvalConfig, results_table
    from refusal_lens.evaluation import evaluate as run_evaluate

    config = EvalConfig(data=str(data), n=n, judges=tuple(judges.split(",")))
    result = run_evaluate(_load(model, device, dtype, None), config)
    text = "\n\n".join(
        f"judge: {judge}\n\n" + results_table({model: result}, judge) for judge in config.judges
    )
    typer.echo(text)
    typer.echo(
        "\ncombined = mean RR over benign sets + mean ASR over harmful sets (lower is better)"
    )
    if out is not None:
        from refusal_lens.artifacts import atomic_path, write_json

        write_json(out / "evaluation.json", {"config": config, "result": result})
        with atomic_path(out / "evaluation.md") as tmp:
            tmp.write_text(text + "\n")


@app.command()
def run(
    model: Annotated[str, typer.Argument(help="Model spec")] = "smollm2-135m",
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<model>)")] = None,
    n: Annotated[int, typer.Option(help="Prompts per shipped set")] = 32,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "float32",
) -> None:
    """The pipeline so far: model facts, residuals and refusal rates for the shipped sets."""
    from refusal_lens.pipeline import RunConfig, run_pipeline

    config = RunConfig(model=model, n_prompts=n, device=device, dtype=dtype)
    folder = run_pipeline(config, out)
    _console().print(f"run written to {folder}/ (see summary.md)")
