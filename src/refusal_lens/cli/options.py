"""Command-line options made from a stage's config dataclass: one ``--field-name`` per field.

>>> @app.command()
... @config_options("refusal_lens.alignment.train:AlignConfig", factory="organism")
... def align(model: ModelArg, *, config) -> None: ...

adds ``--alpha``, ``--n-harmful``, ``--variant`` ... (every field of ``AlignConfig``) to the
command and, when it runs, passes ``config=AlignConfig.organism(**the options given)``. A new
config field is a new option with no edit here.

The config class is named by its dotted path and its fields are read from the module's source
(:mod:`ast`), not by importing it: the stage modules import torch, and ``--help`` must stay
instant. The class itself is imported only when the command runs.

- type: ``int``, ``float``, ``str``, ``bool`` (a ``--x/--no-x`` flag), ``Path``;
  ``tuple[T, ...]`` takes comma-separated values (``--coefs -1,0,1``; int tuples also take a
  range ``0:30``); a field that may be ``None`` also takes ``none``.
- a field whose type is another config dataclass (``DirectionConfig.select``) contributes its
  own fields; one whose name is taken by an outer field is prefixed (``--select-batch-size``).
- default: an option left out is not passed, so the config's own default applies; help shows
  the default as written in the source, and the field's trailing comment (else
  ``refusal_lens.cli.fields.HELP``).
- errors: a value the config rejects (``validate``) is a usage error naming the option, with
  exit code 2 and no traceback.
- fields of other types (e.g. ``dict``) get no option; list them in ``exclude`` to say so.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from refusal_lens.cli.fields import CHOICES, ConfigField, choices_of, config_fields, flat_fields

_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT", Path: "PATH"}


# --------------------------------------------------------------------------------------------
# Parsing values and building the config


_NONE = object()  # "none" given for a field that may be None


def _parser(f: ConfigField, choices: tuple[str, ...] = ()) -> Callable[[str], Any]:
    kind = {int: "an integer", float: "a number"}.get(f.type, "a value")

    def one(text: str) -> Any:
        if choices and text.strip() not in choices:
            listed = ", ".join(choices)
            raise typer.BadParameter(f"{text.strip()!r} is not one of {listed}.")
        try:
            return f.type(text.strip())
        except ValueError:
            raise typer.BadParameter(f"{text.strip()!r} is not {kind}.") from None

    def parse(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        if f.optional and text.strip().lower() == "none":
            return _NONE
        if not f.is_tuple:
            return one(text)
        if f.type is int and re.fullmatch(r"\s*-?\d+\s*:\s*-?\d+\s*", text):
            start, stop = (int(x) for x in text.split(":"))
            return tuple(range(start, stop))
        return tuple(one(x) for x in text.split(",") if x.strip())

    return parse


def _option(
    option: str, f: ConfigField, prefix: str, panel: str, help_text: str, choices: tuple[str, ...]
) -> Any:
    """The Typer option of field ``f``; with ``choices`` (a str field or a tuple of them) only
    those values, listed in --help."""
    decl = f"--{prefix}{option}"
    shown = f.default if f.default is not None else False
    if f.type is bool:
        return Annotated[
            bool | None,
            typer.Option(
                f"{decl}/--no-{prefix}{option}",
                help=help_text,
                show_default=shown,
                rich_help_panel=panel,
            ),
        ]
    if choices and not f.is_tuple and not f.optional:
        return Annotated[
            Literal[choices] | None,  # type: ignore[valid-type]
            typer.Option(
                decl,
                help=help_text,
                show_default=shown,
                rich_help_panel=panel,
            ),
        ]
    metavar = f"<{'|'.join(choices)}>" if choices else _METAVARS.get(f.type, "VALUE")
    if f.is_tuple:
        metavar = f"{metavar},..."
    return Annotated[
        Any,
        typer.Option(
            decl,
            help=help_text + (" 'none' for None." if f.optional and f.default else ""),
            parser=_parser(f, choices),
            metavar=metavar,
            show_default=shown,
            rich_help_panel=panel,
        ),
    ]


def import_class(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _hint(message: str, options: dict[str, str]) -> str | None:
    """The option (of ``options``: field name -> option) the error message names first."""
    hits = [
        (m.start(), option)
        for name, option in options.items()
        if (m := re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", message))
    ]
    return f"'{min(hits)[1]}'" if hits else None


def _construct(make: Callable[..., Any], kwargs: dict[str, Any], options: dict[str, str]) -> Any:
    """``make(**kwargs)``; a value it rejects is a usage error naming the option."""
    from refusal_lens.errors import RefusalLensError

    try:
        return make(**kwargs)
    except RefusalLensError as exc:
        raise typer.BadParameter(str(exc), param_hint=_hint(str(exc), options)) from None


def build_config(
    target: str,
    values: dict[tuple[str, ...], Any],
    factory: str | None = None,
    options: dict[tuple[str, ...], str] | None = None,
    dotted: bool = False,
) -> Any:
    """The config ``target`` with ``values`` (field path -> value; None: not given) set and
    its nested configs built from theirs. ``options`` (field path -> option) names the
    option in the usage error of a value the config rejects. ``dotted``: nested configs'
    given values go to ``factory`` as dicts, which it merges into its preset."""
    options = options or {}
    given: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        if value is not None:
            value = None if value is _NONE else value
            (nested.setdefault(path[0], {}) if len(path) > 1 else given)[path[-1]] = value
    nested_types = {f.name: f.nested for f in config_fields(target) if f.nested}
    for name, sub in nested.items():
        if dotted:
            given[name] = sub
            continue
        named = {p[-1]: o for p, o in options.items() if p[:-1] == (name,)}
        given[name] = _construct(import_class(nested_types[name]), sub, named)  # type: ignore[arg-type]
    cls = import_class(target)
    named = {p[0]: o for p, o in options.items() if len(p) == 1}
    if dotted:  # the factory names a nested field by its path (``rass.contexts must be``)
        named |= {".".join(p): o for p, o in options.items() if len(p) > 1}
    return _construct(getattr(cls, factory) if factory else cls, given, named)


# --------------------------------------------------------------------------------------------
# The decorator


def _resolved_parameters(func: Callable, dest: str | None) -> list[inspect.Parameter]:
    """``func``'s parameters but ``dest``, string annotations evaluated one by one (so the
    config's own annotation may name a class imported only for type checking)."""
    namespace = vars(sys.modules[func.__module__])  # func may be wrapped by a type checker
    params = []
    for p in inspect.signature(func).parameters.values():
        if p.name == dest:
            continue
        if isinstance(p.annotation, str):
            p = p.replace(annotation=eval(p.annotation, namespace))
        params.append(p)
    return params


def _option_names(p: inspect.Parameter) -> set[str]:
    """The ``--names`` a command parameter answers to (none for an argument)."""
    decls: list[str] = []
    for meta in getattr(p.annotation, "__metadata__", ()):
        if isinstance(meta, typer.models.ArgumentInfo):
            return set()
        if isinstance(meta, typer.models.OptionInfo):
            decls += [meta.default] if isinstance(meta.default, str) else []
            decls += list(meta.param_decls or ())
    names = {n for d in decls for n in d.split("/") if n.startswith("--")}
    return names or {"--" + p.name.replace("_", "-")}


def add_parameters(
    func: Callable,
    added: list[inspect.Parameter],
    bind: Callable[[dict[str, Any]], dict[str, Any]],
    drop: str | None = None,
) -> Callable:
    """``func`` as a command with the keyword parameters ``added`` (Typer options) in place of
    its parameter ``drop``: at call time their values go to ``bind``, whose result is passed
    to ``func`` as keywords."""
    params = _resolved_parameters(func, drop)
    taken = set().union(*map(_option_names, params))
    for name in set().union(*map(_option_names, added)) & taken:
        raise TypeError(f"{func.__name__}: option {name} is declared twice")
    names = [p.name for p in added]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in names}
        return func(*args, **kwargs, **bind(values))

    keep = [p for p in params if p.kind != inspect.Parameter.VAR_KEYWORD]
    positional = [p for p in keep if p.kind != inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in keep if p.kind == inspect.Parameter.KEYWORD_ONLY]
    signature = inspect.Signature([*positional, *keyword, *added])
    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return wrapper


def keyword(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


def config_options(
    target: str,
    *,
    dest: str = "config",
    exclude: Iterable[str] = (),
    prefix: str = "",
    factory: str | None = None,
    helps: dict[str, str] | None = None,
    panel: str | None = None,
    dotted: bool = False,
    names: dict[str, str] | None = None,
    choices: dict[str, tuple[str, ...]] | None = None,
    fixed: dict[str, Any] | None = None,
) -> Callable[[Callable], Callable]:
    """Add an option per field of the config ``target`` (``"package.module:Class"``) to a
    Typer command, and call it with the built config as keyword ``dest``.

    ``exclude``: field names (``outer.inner`` for a nested one) that get no option;
    ``prefix``: put before every option name (``"judge-"`` gives ``--judge-layers``);
    ``factory``: a classmethod that builds the config (``"organism"``);
    ``helps``: help texts by field name, over the source comments; ``panel``: the --help
    section (default: the class name); ``dotted``: nested configs' options are
    ``--outer.inner`` and go to ``factory`` as dicts of the values given; ``names``: option
    names (without --) by field name, where the field's own name would mislead;
    ``choices``: the values of enumerated fields by field name, over ``fields.CHOICES``;
    ``fixed``: values passed to the config whatever the options."""
    exclude = tuple(exclude)
    panel = panel or target.partition(":")[2]
    enumerated = {k: choices_of(v) for k, v in CHOICES.items()} | (choices or {})

    def decorate(func: Callable) -> Callable:
        added, paths, options = [], {}, {}
        for option, f in flat_fields(target, exclude, dotted):
            option = (names or {}).get(f.name, option) if len(f.path) == 1 else option
            help_text = (helps or {}).get(f.name, f.help)
            param = f"{dest}__{'__'.join(f.path)}"
            where = f"Stage {f.path[0]}" if dotted and len(f.path) > 1 else panel
            listed = enumerated.get(f.name, ()) if f.type is str else ()
            option_type = _option(option, f, prefix, where, help_text, listed)
            added.append(keyword(param, option_type))
            paths[param] = f.path
            options[f.path] = f"--{prefix}{option}"

        def bind(values: dict[str, Any]) -> dict[str, Any]:
            by_path = {paths[p]: v for p, v in values.items()}
            by_path |= {(name,): value for name, value in (fixed or {}).items()}
            return {dest: build_config(target, by_path, factory, options, dotted)}

        wrapper = add_parameters(func, added, bind, drop=dest)
        wrapper.config_targets = (  # type: ignore[attr-defined]
            *getattr(func, "config_targets", ()),
            (target, exclude),
        )
        return wrapper

    return decorate


# --------------------------------------------------------------------------------------------
# Old option names


def _hidden_copy(annotation: Any, old: str) -> Any:
    """``annotation`` (a Typer option) as a hidden option ``old`` that defaults to None."""
    import copy

    meta = annotation.__metadata__
    info = copy.copy(next(m for m in meta if isinstance(m, typer.models.OptionInfo)))
    info.default, info.param_decls, info.hidden = old, (), True
    info.rich_help_panel, info.show_default = None, False
    return Annotated[annotation.__origin__ | None, info]


def renamed(aliases: dict[str, str]) -> Callable[[Callable], Callable]:
    """Keep old option names for one release: ``{"--delta": "--search.harmful-drop"}`` adds
    a hidden ``--delta`` that sets ``--search.harmful-drop`` (given both, the new name wins)
    and says on stderr that the old name is deprecated. An old name of a required option
    makes it optional on the command line; the command then asks for one of the two."""

    def decorate(func: Callable) -> Callable:
        params = _resolved_parameters(func, None)
        by_option = {name: p for p in params for name in _option_names(p)}
        empty = inspect.Parameter.empty
        required = {by_option[n].name: n for n in aliases.values() if by_option[n].default is empty}
        hidden = {f"renamed__{old.strip('-').replace('-', '_')}": old for old in aliases}
        extra = [
            keyword(name, _hidden_copy(by_option[aliases[old]].annotation, old))
            for name, old in hidden.items()
        ]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            for name, old in hidden.items():
                value, target = kwargs.pop(name), by_option[aliases[old]]
                if value is None or value == []:
                    continue
                typer.echo(
                    f"note: {old} is deprecated; use {aliases[old]} ({old} goes in the next "
                    "release).",
                    err=True,
                )
                if kwargs.get(target.name) in (None, target.default):
                    kwargs[target.name] = value
            for name, new in required.items():
                if kwargs.get(name) is None:
                    raise typer.BadParameter(f"{new} is required.", param_hint=f"'{new}'")
            return func(**kwargs)

        kept = [
            p.replace(
                kind=inspect.Parameter.KEYWORD_ONLY,
                default=None if p.name in required else p.default,
            )
            for p in params
            if p.kind != inspect.Parameter.VAR_KEYWORD
        ]
        signature = inspect.Signature([*kept, *extra])
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        renames = {**getattr(func, "renamed_options", {}), **aliases}
        wrapper.renamed_options = renames  # type: ignore[attr-defined]
        return wrapper

    return decorate
