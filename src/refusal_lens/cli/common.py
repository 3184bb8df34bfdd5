"""The Typer app, the options every command shares, and helpers.

The same name means the same thing in every command: ``--out`` the output folder (files of
other stages already in it are kept), ``--direction`` a folder written by ``direction``,
``--harm-judge`` a folder written by ``harm-judge``, ``--n`` a seeded sample of N prompts,
``--limit`` the first N prompts, ``--device``/``--device-map``/``--dtype``/``--system`` how
the model is loaded and its prompts formatted; ``--data`` (before the command) the benchmark
data folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, no_type_check

import typer

from refusal_lens.cli.options import add_parameters, keyword
from refusal_lens.locations import DATA_ENV

app = typer.Typer(
    help="Mechanistic study of over-refusal in chat models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
@no_type_check  # Typer hands the root callback click's base Context, not a typer.Context
def _root(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            metavar="DIR",
            help=f"Folder with the public benchmark files (sets ${DATA_ENV} for this command).",
        ),
    ] = None,
) -> None:
    """Mechanistic study of over-refusal in chat models."""
    if data is None:
        return
    previous = os.environ.get(DATA_ENV)
    os.environ[DATA_ENV] = str(data)

    def restore() -> None:
        if previous is None:
            os.environ.pop(DATA_ENV, None)
        else:
            os.environ[DATA_ENV] = previous

    ctx.call_on_close(restore)


ModelArg = Annotated[
    str,
    typer.Argument(help="Model spec: smollm2-135m, a model directory, a .gguf file or a hub id."),
]
PromptsArg = Annotated[
    str,
    typer.Argument(
        help="Prompt spec: harmful | harmless | borderline (shipped), a benchmark name "
        "(xstest, xstest-safe, xstest-unsafe, advbench, jailbreakbench, harmbench, alpaca, "
        "orbench; NAME:PATH for a file elsewhere), or a .jsonl, .txt (one per line) or .csv "
        "(a 'prompt' column) file."
    ),
]
_OUT_HELP = "Output folder (files already in it that this command does not write are kept)."
OutOpt = Annotated[Path, typer.Option("--out", metavar="DIR", help=_OUT_HELP)]
OptionalOutOpt = Annotated[
    Path | None, typer.Option("--out", metavar="DIR", help=_OUT_HELP + " Default: print only.")
]
DirectionOpt = Annotated[
    Path, typer.Option("--direction", metavar="DIR", help="Folder written by `direction`.")
]
OptionalDirectionOpt = Annotated[
    Path | None,
    typer.Option("--direction", metavar="DIR", help="Folder written by `direction`."),
]
HarmJudgeOpt = Annotated[
    Path, typer.Option("--harm-judge", metavar="DIR", help="Folder written by `harm-judge`.")
]
BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base",
        metavar="MODEL",
        help="The model the harm judge reads (it was fitted on it); default: MODEL itself.",
    ),
]


# --------------------------------------------------------------------------------------------
# Loading the model: --device, --device-map, --dtype, --system


@dataclass(frozen=True)
class Loader:
    """Loads model specs the way the command line asked (``--device --dtype --system``,
    ``--device-map``)."""

    device: str | None = None
    dtype: str = "float32"
    system: str | None = None
    device_map: str | None = None

    def __call__(self, spec: str) -> Any:
        from refusal_lens.models import load_model

        return load_model(
            spec,
            device=self.device,
            dtype=self.dtype,
            system_prompt=self.system,
            device_map=parse_device_map(self.device_map),
        )


def parse_device_map(text: str | None) -> str | dict[str, Any] | None:
    """``--device-map``: a name accelerate knows (auto, balanced, sequential), a JSON object
    of module names to devices, or a ``.json`` file holding one."""
    import json

    inline = text is not None and text.strip().startswith("{")
    if text is None or not (inline or text.endswith(".json")):
        return text
    try:
        value = json.loads(text if inline else Path(text).read_text())
    except (OSError, ValueError) as exc:
        hint = "'--device-map'"
        raise typer.BadParameter(f"not a JSON device map: {exc}", param_hint=hint) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("a JSON device map is an object", param_hint="'--device-map'")
    return value


def _panel_option(name: str, annotation: Any, default: Any, panel: str, **kw: Any) -> Any:
    """A keyword parameter ``name`` that Typer shows as an option in section ``panel``."""
    return keyword(name, Annotated[annotation, typer.Option(rich_help_panel=panel, **kw)], default)


def model_options(func: Callable) -> Callable:
    """Add ``--device``, ``--dtype``, ``--system`` and ``--device-map``; pass ``load``, a
    :class:`Loader`."""
    added = [
        _panel_option(
            "device", str | None, None, "Model", help="cpu, cuda, cuda:1 ... (default: cuda if any)"
        ),
        _panel_option("dtype", str, "float32", "Model", help="float32, bfloat16 or float16."),
        _panel_option(
            "system",
            str | None,
            None,
            "Model",
            help="System prompt of every chat (default: what the template does).",
        ),
        _panel_option(
            "device_map",
            str | None,
            None,
            "Model",
            help="Split a model larger than one device: auto, balanced, a JSON object "
            '{"model.layers.0": 0, "model.layers.1": "disk", ...} or a .json file of one '
            "(instead of --device).",
        ),
    ]
    return add_parameters(func, added, lambda v: {"load": Loader(**v)}, drop="load")


# --------------------------------------------------------------------------------------------
# Choosing prompts: --n, --seed, --limit


@dataclass(frozen=True)
class Sampler:
    """Loads prompt specs, then keeps the first ``limit`` and a seeded sample of ``n``."""

    n: int | None = None
    seed: int = 0
    limit: int | None = None

    def __call__(self, spec: str) -> Any:
        from refusal_lens.prompts import load_prompts

        prompts = load_prompts(spec)
        if self.limit is not None:
            prompts = prompts[: self.limit]
        return prompts if self.n is None else prompts.sample(self.n, self.seed)


def prompt_options(n: int | None = None, limit: int | None = None, seed: bool = True):
    """Add ``--n`` (default ``n``), ``--limit`` and, with ``seed``, ``--seed``; pass ``pick``,
    a :class:`Sampler`. Without ``seed`` the command sets the sampler's seed itself (its
    config has one)."""
    added = [
        _panel_option("n", int | None, n, "Prompts", min=1, help="A seeded sample of N prompts."),
        _panel_option("limit", int | None, limit, "Prompts", min=1, help="The first N prompts."),
    ]
    if seed:
        added.append(_panel_option("seed", int, 0, "Prompts", help="Seed of the --n sample."))
    return lambda func: add_parameters(func, added, lambda v: {"pick": Sampler(**v)}, drop="pick")


# --------------------------------------------------------------------------------------------
# Helpers


def console() -> Any:
    from rich.console import Console

    return Console()


def say(text: str) -> None:
    """Print plain text (no markup, no highlighting, no wrapping)."""
    console().print(text, markup=False, highlight=False, soft_wrap=True)


def parse_ints(text: str | None, option: str) -> list[int] | None:
    """``'0,5,10'`` or ``'0:30'`` as a list of ints; None stays None."""
    if text is None:
        return None
    try:
        if ":" in text:
            start, stop = (int(x) for x in text.split(":"))
            return list(range(start, stop))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        message = f"{text!r} is not a list like '0,5,10' or a range like '0:30'."
        raise typer.BadParameter(message, param_hint=f"'{option}'") from None
