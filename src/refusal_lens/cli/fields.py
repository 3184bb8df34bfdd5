"""A stage config's fields, read from its module's source without importing it.

The stage modules import torch, and ``refusal-lens --help`` must stay instant, so the CLI
(:mod:`refusal_lens.cli.options`) learns each config's fields (name, type, default as written,
trailing comment) from the source with :mod:`ast`, following ``from x import`` for constants,
nested config dataclasses and dataclass bases. ``tests/test_cli.py`` checks the result against
``dataclasses.fields`` for every config the CLI uses.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

_SCALARS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "Path": Path}
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
    "device": "cpu, cuda, cuda:1 ... (default: cuda if any).",
    "dtype": "Weights' dtype.",
    "epochs": "Passes over the training data.",
    "exclude_trained": "Drop an aligned model's training prompts from the harmless class.",
    "harmful": "Prompt spec of the harmful class.",
    "harmless": "Prompt spec of the harmless class.",
    "fallback_rule": "With no candidate passing every filter: kl (lowest KL when they fail KL, "
    "else lowest bypass) or bypass (lowest bypass, the rule before 2026-11-26).",
    "header": "Instruction line above the few-shot lists.",
    "induce_min": "Keep candidates whose addition raises the mean harmless refusal score above "
    "this (default: the model's own refusal threshold, 0 unless calibrated).",
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

# The values an enumerated field takes, by field name: a tuple, or "module:CONSTANT" read from
# the source (a dict's keys). A command gives its own with ``config_options(choices=...)``
# where a field name means different lists in different configs (``languages``).
CHOICES: dict[str, tuple[str, ...] | str] = {
    "dtype": ("float32", "bfloat16", "float16"),
    "fallback_rule": ("kl", "bypass"),
    "hook": "refusal_lens.activations:HOOK_POINTS",
    "judge": ("score", "substring"),
    "kinds": "refusal_lens.mitigation.edits:KINDS",
    "mode": ("lora", "full"),
    "rewrite": ("replace", "delete"),
    "rule": ("refusal", "margin"),
    "variant": ("sft", "psft"),
}


def constant(target: str) -> Any:
    """The value of the module constant ``"package.module:NAME"``, read from the source."""
    module, _, name = target.partition(":")
    found = _lookup(module, name)
    if found is None or isinstance(found[1], ast.ClassDef):
        raise LookupError(f"No constant {name} in {module}")
    return _literal(*found)


def choices_of(spec: tuple[str, ...] | str) -> tuple[str, ...]:
    """A ``CHOICES`` entry as a tuple of values."""
    return tuple(constant(spec)) if isinstance(spec, str) else spec


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
    return " ".join(parts)  # as written: "λ must keep", "grad_x_input" stay lower-case


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


def flat_fields(
    target: str, exclude: Iterable[str] = (), dotted: bool = False
) -> list[tuple[str, ConfigField]]:
    """``(option name without --, field)`` for every field that becomes an option; a nested
    field whose name an outer field takes is prefixed with the nested field's name, and with
    ``dotted`` every nested field is (``rass.contexts``)."""
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
            if dotted:
                out.append((f"{f.name}.{child.name}", child))
                continue
            clash = child.name in outer
            out.append((f"{f.name}_{child.name}" if clash else child.name, child))
    return [(name.replace("_", "-"), f) for name, f in out]
