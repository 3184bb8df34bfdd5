"""Command of the attribution stage: ``attribute`` (per-token attribution, HTML report + JSON).

Its options come from :class:`~refusal_lens.attribution.methods.AttributionConfig` and from
the config of every method registered in ``METHODS`` (``--steps`` of integrated_gradients,
``--layers`` of projection, ...), read from the registry's source so that ``--help`` imports
no torch: a new method's settings become options with no edit here (a setting name two
methods share must mean the same to both).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from refusal_lens.cli.common import (
    Loader,
    ModelArg,
    OptionalDirectionOpt,
    PromptsArg,
    Sampler,
    app,
    model_options,
    out_folder,
    out_option,
    prompt_options,
    say,
)
from refusal_lens.cli.fields import _lookup, _module, config_fields
from refusal_lens.cli.options import config_options
from refusal_lens.configs import StageConfig

REPORT_NAME = "attribution.html"
RECORDS_NAME = "attribution.json"
METHODS_MODULE = "refusal_lens.attribution.methods"
REGISTRY = "METHODS"


@functools.cache
def method_configs() -> dict[str, str]:
    """``{method: "module:Config"}`` of every method in the registry, read from its source:
    each entry is ``"name": AttributionMethod(run, Config, ...)`` (no Config: no settings)."""
    for node in _module(METHODS_MODULE).tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == REGISTRY:
            assert isinstance(node.value, ast.Dict), f"{REGISTRY} is not a dict literal"
            return {
                ast.literal_eval(key): _config_of(entry)
                for key, entry in zip(node.value.keys, node.value.values, strict=True)
                if key is not None
            }
    raise LookupError(f"No {REGISTRY} in {METHODS_MODULE}")


def _config_of(entry: ast.expr) -> str:
    assert isinstance(entry, ast.Call), f"a {REGISTRY} entry is not AttributionMethod(...)"
    named = {k.arg: k.value for k in entry.keywords}
    node = named.get("config", entry.args[1] if len(entry.args) > 1 else None)
    name = "MethodConfig" if node is None else ast.unparse(node)
    found = _lookup(METHODS_MODULE, name)
    if found is None:
        raise LookupError(f"No class {name} in {METHODS_MODULE}")
    return f"{found[0]}:{name}"


def method_options(func: Callable) -> Callable:
    """An option per setting of every registered method; the command gets each method
    config, built, as a keyword ``settings_<Config>``."""
    by_target: dict[str, list[str]] = {}
    for method, target in method_configs().items():
        by_target.setdefault(target, []).append(method)
    for target, methods in by_target.items():
        if config_fields(target):
            panel = f"Settings of --method {', '.join(methods)}"
            dest = "settings_" + target.partition(":")[2]
            func = config_options(target, dest=dest, panel=panel)(func)
    return func


@app.command(
    epilog="Example: refusal-lens attribute smollm2-135m xstest-safe --n 8 --method occlusion "
    "--out runs/attribution"
)
@model_options
@prompt_options(n=8)
@config_options(
    f"{METHODS_MODULE}:AttributionConfig",
    exclude=("options",),
    helps={"method": "The attribution method."},
    choices={"method": tuple(method_configs())},
)
@method_options
def attribute(
    model: ModelArg,
    prompts: PromptsArg,
    out: out_option("attribute") = None,
    direction: OptionalDirectionOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length shown; 0: no answers")] = 48,
    *,
    load: Loader,
    pick: Sampler,
    config: StageConfig,
    **method_settings: StageConfig,
) -> None:
    """Attribute each prompt's refusal to its tokens: attribution.{html,json}.

    --out DIR gets attribution.html (an offline report), attribution.json (records with the
    answers) and the loadable artifact attributions.{json,safetensors}; --out FILE.html names
    the report, the rest goes next to it. --method projection needs --direction.
    """
    from refusal_lens.attribution.methods import attribute as run_attribute
    from refusal_lens.attribution.methods import method_of
    from refusal_lens.hooks import check_layers
    from refusal_lens.residual_direction import Direction

    out = out_folder(out, model, "attribute")
    spec = method_of(config.method)
    own = [s for s in method_settings.values() if type(s) is spec.config]
    config = config.replace(options=own[0]) if own else config
    _check_method(config.method, direction)
    prompt_set = pick(prompts)
    handle = load(model)
    attributions = run_attribute(
        handle,
        prompt_set,
        config,
        direction=None if direction is None else Direction.load(direction),
    )
    answers = _answers(handle, prompt_set, max_new_tokens, config.batch_size)
    settings = {
        "model": model,
        "prompts": prompts,
        "direction": None if direction is None else str(direction),
        "n": len(prompt_set),
        "seed": pick.seed,
        "max_new_tokens": max_new_tokens,
        **{k: v for k, v in config.to_dict().items() if k != "options"},
        **config.options.to_dict(),
    }
    if "layers" in settings:  # as read, every layer when not given
        settings["layers"] = list(check_layers(handle, settings["layers"]))
    _write(out, handle, attributions, answers, settings)
    _print_attributions(attributions)


def _check_method(method: str, direction: Path | None) -> None:
    from refusal_lens.attribution.methods import method_of
    from refusal_lens.errors import RefusalLensError

    if method_of(method).needs_direction and direction is None:
        raise RefusalLensError(
            f"--method {method} needs --direction DIR, a folder written by "
            "`refusal-lens direction` (e.g. runs/direction)."
        )


def _paths(out: Path) -> tuple[Path, Path]:
    """The report and the JSON: in folder ``out``, or ``out`` itself if it names an .html
    file (the JSON then goes next to it, as .json)."""
    if out.suffix.lower() in (".html", ".htm"):
        return out, out.with_suffix(".json")
    return out / REPORT_NAME, out / RECORDS_NAME


def _answers(handle: Any, prompt_set: Any, max_new_tokens: int, batch_size: int) -> Any:
    if max_new_tokens <= 0:
        return None
    from refusal_lens.generation import generate

    return generate(handle, prompt_set, max_new_tokens, batch_size, show_progress=False)


def _write(out: Path, handle: Any, attributions: Any, answers: Any, settings: dict) -> None:
    """The report and the JSON (:func:`_paths`); other files in the folder are kept."""
    from refusal_lens.artifacts import write_json
    from refusal_lens.attribution.views import attribution_records, write_attribution_report

    report, records = _paths(out)
    attributions.save(records.parent)
    write_attribution_report(report, attributions, answers, model=handle.model_id)
    rows = attribution_records(attributions, answers)
    write_json(records, {"config": settings, "model": handle.describe(), "attributions": rows})
    say(f"wrote {report} and {records}")


def _print_attributions(attributions: Any) -> None:
    for a in attributions:
        top = ", ".join(f"{t!r} {v:+.2f}" for t, v in a.top(3)) or "(not attributed)"
        verdict = "refused " if a.refused else "answered"
        prompt = a.prompt if len(a.prompt) <= 60 else a.prompt[:59] + "…"
        say(f"{a.refusal_score:+6.2f} {verdict}  {top}  | {prompt}")
