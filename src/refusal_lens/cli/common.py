"""The Typer app, the options every command shares, and helpers.

One setting has one name, the same in every command (``tests/test_cli_options.py`` checks):

- ``--out``: optional everywhere; where the command writes its files (a folder; files in it
  that the command does not write are kept). Left out: ``runs/<model>/<command>/``, and
  ``runs/<model>/`` for ``run`` and ``mitigate``, which share the pipeline's folder; ``judge``,
  which reads no model, writes its JSON lines to stdout.
- an input written by an earlier command is named after that command: ``--direction``,
  ``--harm-judge``, ``--triggers``.
- ``--judge``: the refusal judge, ``score`` or ``substring``; default ``substring`` everywhere
  (a pipeline stage's judge is its setting ``--STAGE.judge``, with the same choices).
- ``--n`` a seeded sample of N prompts, ``--limit`` the first N prompts, ``--positions``
  positions counted back from the last token, ``--device``/``--device-map``/``--dtype``/
  ``--system`` how the model is loaded and its prompts formatted; ``--data`` (before or after
  the command) the benchmark data folder.

An old name is kept, hidden, for one release (:func:`refusal_lens.cli.options.renamed`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, no_type_check

import typer

from refusal_lens.cli.options import add_parameters, keyword
from refusal_lens.locations import DATA_ENV

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        metavar="DIR",
        help=f"Folder with the public benchmark files (sets ${DATA_ENV} for this command); "
        "before or after the command's name.",
    ),
]


@contextlib.contextmanager
def data_folder(data: Path | None) -> Iterator[None]:
    """``$REFUSAL_LENS_DATA`` set to ``data`` (if given) while the block runs."""
    previous = os.environ.get(DATA_ENV)
    if data is not None:
        os.environ[DATA_ENV] = str(data)
    try:
        yield
    finally:
        if data is not None and previous is None:
            os.environ.pop(DATA_ENV, None)
        elif data is not None:
            os.environ[DATA_ENV] = str(previous)


def with_data_option(func: Callable) -> Callable:
    """``func`` with a ``--data`` option (the same as before the command's name)."""
    inner = add_parameters(func, [keyword("data", DataOpt, None)], lambda values: {})

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with data_folder(kwargs.get("data")):
            return inner(*args, **kwargs)

    return wrapper


class _App(typer.Typer):
    """A Typer app whose every command also takes ``--data`` after its name."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        register = super().command(*args, **kwargs)

        def decorator(func: Callable) -> Callable:
            register(with_data_option(func))
            return func

        return decorator


app = _App(
    help="Mechanistic study of over-refusal in chat models.",
    epilog="Example: refusal-lens score smollm2-135m harmless --limit 8",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from refusal_lens import __version__

        typer.echo(f"refusal-lens {__version__}")
        raise typer.Exit()


@app.callback()
@no_type_check  # Typer hands the root callback click's base Context, not a typer.Context
def _root(
    ctx: typer.Context,
    data: DataOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Mechanistic study of over-refusal in chat models."""
    ctx.with_resource(data_folder(data))


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
OUT_HELP = (
    "Folder the results are written to (files in it that this command does not write are "
    "kept). Default: {default}."
)


def out_option(command: str | None) -> Any:
    """``--out``, optional: default ``runs/<model>/<command>/`` (``runs/<model>/`` for the
    pipeline's commands, ``command`` None)."""
    default = f"runs/<model>/{command}/" if command else "runs/<model>/"
    return Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help=OUT_HELP.format(default=default))
    ]


def model_folder(model: str) -> str:
    """A model spec as a folder name: a model folder's or file's name, a spec or hub id as
    written (``/`` as ``--``), like ``run``'s ``runs/<model>/``."""
    path = Path(model)
    return path.stem if path.exists() else model.replace("/", "--")


def out_folder(out: Path | None, model: str, command: str) -> Path:
    """``--out``, or the default ``runs/<model>/<command>/``."""
    return out if out is not None else Path("runs") / model_folder(model) / command


JUDGES = ("score", "substring")
DEFAULT_JUDGE = "substring"  # judges what the model answers, and catches degenerate answers
JUDGE_HELP = (
    "Refusal judge: substring (a greedy answer, the degeneration detector, the refusal "
    "phrases) or score (first-token refusal log-odds above the threshold; no generation)."
)
JudgeOpt = Annotated[Literal[JUDGES], typer.Option("--judge", help=JUDGE_HELP)]  # type: ignore[valid-type]
JudgesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--judge",
        metavar="<score|substring>",
        help=JUDGE_HELP + " Repeat, or separate with commas, for several. Default: substring.",
    ),
]


def parse_judges(given: list[str] | None) -> tuple[str, ...]:
    """``--judge`` given once or more, each a judge or a comma list; default substring."""
    names = [n.strip() for text in given or [DEFAULT_JUDGE] for n in text.split(",")]
    names = list(dict.fromkeys(n for n in names if n))
    for name in names:
        if name not in JUDGES:
            message = f"{name!r} is not one of {', '.join(JUDGES)}."
            raise typer.BadParameter(message, param_hint="'--judge'")
    return tuple(names)


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


DTYPES = ("float32", "bfloat16", "float16")


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
        _panel_option("dtype", Literal[DTYPES], "float32", "Model", help="Weights' dtype."),
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
