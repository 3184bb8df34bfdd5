"""The Typer app, argument types and helpers shared by every command."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Mechanistic study of over-refusal in chat models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ModelArg = Annotated[
    str,
    typer.Argument(help="Model spec: smollm2-135m, a model directory, a .gguf file or a hub id."),
]
PromptsArg = Annotated[
    str,
    typer.Argument(
        help="Prompt spec: harmful | harmless | borderline (shipped), NAME:PATH for a benchmark "
        "file (xstest, xstest-safe, xstest-unsafe, advbench, jailbreakbench, harmbench, alpaca, "
        "orbench), or a .jsonl file."
    ),
]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if any)")]
DtypeOpt = Annotated[str, typer.Option(help="float32, bfloat16 or float16.")]
LimitOpt = Annotated[int | None, typer.Option(help="Use only the first N prompts")]
SystemOpt = Annotated[
    str | None,
    typer.Option("--system", help="System prompt to send (default: what the template does)."),
]


def _console():
    from rich.console import Console

    return Console()


def _load(model: str, device: str | None, dtype: str, system: str | None):
    from refusal_lens.models import load_model

    return load_model(model, device=device, dtype=dtype, system_prompt=system)


def _prompts(spec: str, limit: int | None):
    from refusal_lens.prompts import load_prompts

    prompts = load_prompts(spec)
    return prompts if limit is None else prompts[:limit]


def _parse_ints(text: str | None) -> list[int] | None:
    if text is None:
        return None
    if ":" in text:
        start, stop = (int(x) for x in text.split(":"))
        return list(range(start, stop))
    return [int(x) for x in text.split(",") if x.strip()]


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    from refusal_lens.errors import RefusalLensError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise RefusalLensError(
            f"{option} takes numbers separated by commas, not {text!r}."
        ) from None
