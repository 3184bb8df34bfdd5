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
  the default as written in the source, and the field's trailing comment (else :data:`HELP`).
- errors: a value the config rejects (``validate``) is a usage error naming the option, with
  exit code 2 and no traceback.
- fields of other types (e.g. ``dict``) get no option; list them in ``exclude`` to say so.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import io
import re
import sys
import tokenize
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer

_SCALARS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "Path": Path}
_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT", Path: "PATH"}
_MAX_DEFAULT_CHARS = 40

# Help for fields that have no trailing comment in their config's source.
HELP: dict[str, str] = {
    "alpha": "Weight of D_h (harmful refusals) in the loss, in [0, 1].",
    "answer_tokens": "Length of the self-distilled answers to D_b.",
    "batch_size": "Prompts per forward pass.",
    "benign": "Prompt spec of the benign queries.",
    "coefs": "Steering coefficients.",
    "collapse_share": "Drop a context whose candidates collapse to one text more than this.",
    "dedup_jaccard": "Drop near-duplicates at this word Jaccard similarity or above.",
    "epochs": "Passes over the training data.",
    "exclude_trained": "Drop an aligned model's training prompts from the harmless class.",
    "harmful": "Prompt spec of the harmful class.",
    "harmless": "Prompt spec of the harmless class.",
    "header": "Instruction line above the few-shot lists.",
    "induce_min": "Keep candidates whose addition raises harmless refusal above this.",
    "judges": "Refusal judges: score (first-token log-odds), substring (generation).",
    "kl_max": "Keep candidates whose ablation moves harmless outputs by less KL than this.",
    "l2": "L2 penalty of the logistic probe.",
    "layers": "Layers, '0,5,10' or '0:30' (default: all).",
    "lora_alpha": "LoRA scaling.",
    "lora_rank": "LoRA rank.",
    "lr": "Peak learning rate.",
    "max_layer_frac": "Keep candidates below this share of the layers.",
    "max_new_tokens": "Tokens generated per answer.",
    "memory_budget_gb": "Results larger than this (GiB) stream to the cache when not saved.",
    "max_repeat": "Drop candidates repeating more than this share of their words.",
    "mode": "lora or full fine-tuning.",
    "n": "Prompts per set (seeded sample).",
    "n_benign": "Benign queries (D_b).",
    "n_harmful": "Harmful queries (D_h).",
    "n_train": "Train prompts per class (difference of means).",
    "n_val": "Validation prompts per class (selection scores).",
    "positions": "Post-instruction positions, '-1,-2' (default: all).",
    "rewrite": "replace (most likely benign substitute) or delete the harmful cues.",
    "seed": "Random seed.",
    "sets": "Evaluation sets.",
    "shots": "Examples per few-shot list.",
    "substitutes": "Benign words a harmful cue may be replaced with.",
    "temperature": "Sampling temperature.",
    "threshold": "p(harmful) at or above which a prompt counts as harmful.",
    "top_k": "Candidates fully scored after the first-order screen; 0 scores all.",
    "top_p": "Nucleus sampling mass.",
    "top_triggers": "Trigger words used for recombination.",
    "val_frac": "Share of each class held out.",
    "variant": "sft or psft (refusals with a prefix).",
}


# --------------------------------------------------------------------------------------------
# Reading a config's fields from its source


@dataclass(frozen=True)
class ConfigField:
    """One field of a config dataclass as the command line sees it."""

    name: str
    path: tuple[str, ...]  # (name,) or (outer field, name) for a nested config's field
    type: type
    is_tuple: bool = False
    optional: bool = False
    default: str | None = None  # as shown in --help; None: not shown
    help: str = ""
    nested: str | None = None  # "module:Class" of a nested config dataclass
    children: tuple[ConfigField, ...] = ()


@dataclass
class _Module:
    name: str
    tree: ast.Module
    comments: dict[int, tuple[str, bool]] = field(default_factory=dict)  # line -> (text, alone)


def _module_path(dotted: str) -> Path:
    """The source file of module ``dotted``, found without importing it or its packages."""
    top, *rest = dotted.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"No package {top!r}")
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


@functools.cache
def _module(dotted: str) -> _Module:
    source = _module_path(dotted).read_text(encoding="utf-8")
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            alone = not tok.line[: tok.start[1]].strip()
            comments[tok.start[0]] = (tok.string.lstrip("#").strip(), alone)
    return _Module(dotted, ast.parse(source), comments)


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")[: -node.level]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _lookup(module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
    """Where ``name`` is defined, following ``from x import name``: (module, definition)."""
    if depth > 5:
        return None
    mod = _module(module)
    for node in mod.tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return module, node.value  # type: ignore[union-attr]
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _lookup(_absolute(module, node), alias.name, depth + 1)
    return None


def _literal(module: str, node: ast.AST) -> Any:
    """The value of a default written as a literal, a module constant or ``tuple(CONSTANT)``;
    raises ValueError for anything else."""
    if isinstance(node, ast.Name):
        found = _lookup(module, node.id)
        if found is None or isinstance(found[1], ast.ClassDef):
            raise ValueError(node.id)
        return _literal(*found)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("tuple", "list")
        and len(node.args) == 1
    ):
        return tuple(_literal(module, node.args[0]))
    return ast.literal_eval(node)


def _show(value: Any) -> str | None:
    if value is None:
        return None
    text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= _MAX_DEFAULT_CHARS else text[: _MAX_DEFAULT_CHARS - 1] + "…"


def _comment(mod: _Module, node: ast.AST) -> str:
    """The field's trailing comment and the comment-only lines right below it."""
    line = node.end_lineno or node.lineno
    text, alone = mod.comments.get(line, ("", True))
    parts = [text] if text and not alone else []
    while parts and (nxt := mod.comments.get(line + 1)) and nxt[1]:
        parts.append(nxt[0])
        line += 1
    text = " ".join(parts)
    return text[:1].upper() + text[1:]


def _annotation(module: str, node: ast.AST) -> tuple[type | str, bool, bool] | None:
    """``(type or nested "module:Class", is_tuple, optional)``; None if not supported."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _annotation(module, ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        sides = [node.left, node.right]
        rest = [s for s in sides if not (isinstance(s, ast.Constant) and s.value is None)]
        inner = _annotation(module, rest[0]) if len(rest) == 1 else None
        return None if inner is None else (inner[0], inner[1], True)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        is_var_tuple = len(args) == 2 and isinstance(args[1], ast.Constant)
        if node.value.id == "tuple" and is_var_tuple and args[1].value is Ellipsis:
            inner = _annotation(module, args[0])
            if inner and isinstance(inner[0], type) and not inner[1] and inner[0] is not bool:
                return inner[0], True, False
        if node.value.id == "Optional":
            inner = _annotation(module, args[0])
            return None if inner is None else (inner[0], inner[1], True)
        return None
    if isinstance(node, ast.Name):
        if node.id in _SCALARS:
            return _SCALARS[node.id], False, False
        found = _lookup(module, node.id)
        if found and isinstance(found[1], ast.ClassDef) and _is_dataclass(found[1]):
            return f"{found[0]}:{node.id}", False, False
    return None


def _is_dataclass(node: ast.ClassDef) -> bool:
    names = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
    return bool(names & {"dataclass", "dataclasses.dataclass"})


def _default(module: str, value: ast.AST | None) -> str | None:
    """The default as --help shows it; None for none or one made by a default_factory."""
    if value is None:
        return None
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field"):
        kw = {k.arg: k.value for k in value.keywords}
        return _default(module, kw["default"]) if "default" in kw else None
    try:
        return _show(_literal(module, value))
    except (ValueError, TypeError, SyntaxError):
        return _show(ast.unparse(value))


@functools.cache
def config_fields(target: str) -> tuple[ConfigField, ...]:
    """The fields of the dataclass ``target`` (``"package.module:Class"``) that the command
    line can set, in declaration order, read from the module's source."""
    module, _, name = target.partition(":")
    found = _lookup(module, name)
    if found is None or not isinstance(found[1], ast.ClassDef):
        raise LookupError(f"No class {name} in {module}")
    module, cls = found
    out = list(_inherited_fields(module, cls))
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        fname = node.target.id
        ann = _annotation(module, node.annotation)
        if ann is None:
            continue
        typ, is_tuple, optional = ann
        shown = _default(module, node.value)
        help_text = _comment(_module(module), node) or HELP.get(fname, "")
        if isinstance(typ, str):  # a nested config dataclass
            children = tuple(replace(c, path=(fname, *c.path)) for c in config_fields(typ))
            out.append(ConfigField(fname, (fname,), object, nested=typ, children=children))
            continue
        out.append(ConfigField(fname, (fname,), typ, is_tuple, optional, shown, help_text))
    return tuple(out)


def _inherited_fields(module: str, cls: ast.ClassDef) -> Iterable[ConfigField]:
    """The fields of the dataclasses ``cls`` derives from (mixins such as StageConfig have
    none)."""
    for base in cls.bases:
        found = _lookup(module, base.id) if isinstance(base, ast.Name) else None
        if found and isinstance(found[1], ast.ClassDef) and _is_dataclass(found[1]):
            yield from config_fields(f"{found[0]}:{base.id}")


def flat_fields(target: str, exclude: Iterable[str] = ()) -> list[tuple[str, ConfigField]]:
    """``(option name without --, field)`` for every field that becomes an option; a nested
    field whose name an outer field takes is prefixed with the nested field's name."""
    exclude = set(exclude)
    fields = config_fields(target)
    outer = {f.name for f in fields}
    out = []
    for f in fields:
        if f.name in exclude:
            continue
        if f.nested is None:
            out.append((f.name, f))
            continue
        for child in f.children:
            if ".".join(child.path) in exclude:
                continue
            clash = child.name in outer
            out.append((f"{f.name}_{child.name}" if clash else child.name, child))
    return [(name.replace("_", "-"), f) for name, f in out]


# --------------------------------------------------------------------------------------------
# Parsing values and building the config


_NONE = object()  # "none" given for a field that may be None


def _parser(f: ConfigField) -> Callable[[str], Any]:
    kind = {int: "an integer", float: "a number"}.get(f.type, "a value")

    def one(text: str) -> Any:
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


def _option(option: str, f: ConfigField, prefix: str, panel: str, help_text: str) -> Any:
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
    metavar = _METAVARS.get(f.type, "VALUE")
    if f.is_tuple:
        metavar = f"{metavar},..."
    return Annotated[
        Any,
        typer.Option(
            decl,
            help=help_text + (" 'none' for None." if f.optional and f.default else ""),
            parser=_parser(f),
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
) -> Any:
    """The config ``target`` with ``values`` (field path -> value; None: not given) set and
    its nested configs built from theirs. ``options`` (field path -> option) names the
    option in the usage error of a value the config rejects."""
    options = options or {}
    given: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        if value is not None:
            value = None if value is _NONE else value
            (nested.setdefault(path[0], {}) if len(path) > 1 else given)[path[-1]] = value
    nested_types = {f.name: f.nested for f in config_fields(target) if f.nested}
    for name, sub in nested.items():
        named = {p[-1]: o for p, o in options.items() if p[:-1] == (name,)}
        given[name] = _construct(import_class(nested_types[name]), sub, named)  # type: ignore[arg-type]
    cls = import_class(target)
    named = {p[0]: o for p, o in options.items() if len(p) == 1}
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
) -> Callable[[Callable], Callable]:
    """Add an option per field of the config ``target`` (``"package.module:Class"``) to a
    Typer command, and call it with the built config as keyword ``dest``.

    ``exclude``: field names (``outer.inner`` for a nested one) that get no option;
    ``prefix``: put before every option name (``"judge-"`` gives ``--judge-layers``);
    ``factory``: a classmethod that builds the config (``"organism"``);
    ``helps``: help texts by field name, over the source comments; ``panel``: the --help
    section (default: the class name)."""
    exclude = tuple(exclude)
    panel = panel or target.partition(":")[2]

    def decorate(func: Callable) -> Callable:
        added, paths, options = [], {}, {}
        for option, f in flat_fields(target, exclude):
            help_text = (helps or {}).get(f.name, f.help)
            param = f"{dest}__{'__'.join(f.path)}"
            added.append(keyword(param, _option(option, f, prefix, panel, help_text)))
            paths[param] = f.path
            options[f.path] = f"--{prefix}{option}"

        def bind(values: dict[str, Any]) -> dict[str, Any]:
            by_path = {paths[p]: v for p, v in values.items()}
            return {dest: build_config(target, by_path, factory, options)}

        wrapper = add_parameters(func, added, bind, drop=dest)
        wrapper.config_targets = (  # type: ignore[attr-defined]
            *getattr(func, "config_targets", ()),
            (target, exclude),
        )
        return wrapper

    return decorate
