"""Edits of the residual stream that a mitigation search proposes, as one saved, loadable value.

An :class:`EditConfig` names an edit by its settings; :func:`resolve` turns it into an
:class:`Edit` (the vectors themselves and, for an ablation, one weight per layer), which
:func:`apply_edit` runs as hooks and :func:`refusal_lens.mitigation.export.export_edit` bakes
into the weights.

- ``kind="ablate"``: every write to the residual stream at layer ``l`` (the attention output
  and the MLP output; the token embedding counts as layer 0) loses the share ``a_l`` of its
  component in the span ``Q`` of the directions: ``out ← out − a_l Qᵀ Q out``. With the same
  share ``a`` at every layer (``where="all"``), the residual stream of a pre-norm model is
  then ``x − a Qᵀ Q x`` everywhere: at ``a = 1`` this is Arditi et al.'s directional ablation.
  With ``where="kernel"`` the share follows a raised-cosine bump over the layers: ``peak`` at
  layer ``centre``, falling smoothly to 0 at ``|l − centre| = width``. Because only the writes
  change, the weights can express it exactly (pre-norm architectures). The hooks are
  :func:`refusal_lens.hooks.write_ablation_hooks`; at share 1 everywhere they are the same
  edit as :func:`refusal_lens.interventions.ablate` on every supported architecture, Gemma-2
  included (see :mod:`refusal_lens.hooks`).
- ``kind="add"``: ``x ← x + coef · v`` in the residual stream before block ``layer``, at every
  position (generated tokens included), with ``v`` the direction as stored; a negative
  ``coef`` moves away from it. A constant added at every position needs a bias on a residual
  write, which the supported architectures do not have: such an edit exports as its config.

The directions come from a :class:`~refusal_lens.mitigation.vectors.Vectors` bank: ``r`` (the
refusal direction), ``w_prime`` (Wang et al.'s ``w′ = w − λ r̂ r̂ᵀ w`` at ``lam``) and
``probe`` (the unit normal of the boundary probe at ``probe_layer``, scaled to the two
classes' mean difference along it).

>>> edit = resolve(EditConfig(directions=("w_prime",), lam=0.6, peak=0.8), vectors)
>>> with apply_edit(model, edit):
...     scores = refusal_scores(model, prompts)
>>> edit.save("edit/"); Edit.load("edit/")
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.artifacts import artifact_meta, load_tensor_artifact, save_tensor_artifact
from refusal_lens.configs import StageConfig, check_range
from refusal_lens.errors import RefusalLensError
from refusal_lens.hooks import (
    Hooks,
    addition_hook,
    check_layer,
    hook_name,
    intervene,
    write_ablation_hooks,
)
from refusal_lens.interventions import orthonormal_basis
from refusal_lens.models import ModelHandle

if TYPE_CHECKING:
    from refusal_lens.mitigation.vectors import Vectors

KINDS = ("ablate", "add")
WHERE = ("all", "kernel")
DIRECTION_NAMES = ("r", "w_prime", "probe")
KIND = "edit"
FILES = ("edit.safetensors", "edit.json")


@dataclass(frozen=True)
class EditConfig(StageConfig):
    """One edit, by its settings (see the module docstring for what each one does)."""

    kind: str = "ablate"  # "ablate" a share of the directions' span, or "add" one direction
    directions: tuple[str, ...] = ("w_prime",)  # from DIRECTION_NAMES; add takes exactly one
    lam: float = 1.0  # λ of w′ = w − λ r̂ r̂ᵀ w (read when w_prime is used)
    probe_layer: int = -1  # the boundary probe's layer (read when probe is used)
    where: str = "all"  # ablate: "all" layers at ``peak``, or a "kernel" over the layers
    peak: float = 1.0  # ablate: the share α of the projection removed (at the kernel's centre)
    centre: float = 0.0  # kernel: the layer of the peak
    width: float = 1.0  # kernel: layers from the centre to where the share reaches 0
    layer: int = 0  # add: the block before which the vector is added
    coef: float = 0.0  # add: multiple of the direction as stored (negative: away from it)

    def __post_init__(self) -> None:
        if isinstance(self.directions, list):
            object.__setattr__(self, "directions", tuple(self.directions))
        super().__post_init__()

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise RefusalLensError(f"kind must be one of {KINDS}, not {self.kind!r}.")
        unknown = [d for d in self.directions if d not in DIRECTION_NAMES]
        if unknown or not self.directions or len(set(self.directions)) < len(self.directions):
            raise RefusalLensError(
                f"directions must be distinct names from {DIRECTION_NAMES}, not {self.directions}."
            )
        if self.kind == "add" and len(self.directions) != 1:
            raise RefusalLensError("An addition adds one direction; name exactly one.")
        if self.where not in WHERE:
            raise RefusalLensError(f"where must be one of {WHERE}, not {self.where!r}.")
        check_range("lam", self.lam, 0.0, 1.0)
        check_range("peak", self.peak, 0.0, 1.0)
        if not (self.width > 0 and math.isfinite(self.width)):
            raise RefusalLensError(f"width must be > 0 and finite, not {self.width}.")
        if not math.isfinite(self.centre):
            raise RefusalLensError(f"centre must be a finite layer number, not {self.centre}.")
        if not math.isfinite(self.coef):
            raise RefusalLensError(f"coef must be a finite number, not {self.coef}.")

    def label(self) -> str:
        """A short human-readable name, e.g. ``ablate w′(λ=0.60) ×0.80 all layers``."""
        names = "+".join(_pretty(d, self) for d in self.directions)
        if self.kind == "add":
            return f"add {names} at layer {self.layer}, coef {self.coef:+.2f}"
        where = (
            "all layers"
            if self.where == "all"
            else f"kernel at layer {self.centre:.1f} ± {self.width:.1f}"
        )
        return f"ablate {names} ×{self.peak:.2f}, {where}"


def _pretty(name: str, config: EditConfig) -> str:
    if name == "w_prime":
        return f"w′(λ={config.lam:.2f})"
    if name == "probe":
        return f"probe@{config.probe_layer}"
    return name


def kernel_weights(config: EditConfig, n_layers: int) -> Float[Tensor, " n_layers"]:
    """The share of the projection each layer's writes lose (an ablation's ``a_l``)."""
    if config.where == "all":
        return torch.full((n_layers,), float(config.peak))
    layers = torch.arange(n_layers, dtype=torch.float64)
    distance = (layers - config.centre).abs() / config.width
    bump = 0.5 * (1 + torch.cos(math.pi * distance.clamp(max=1.0)))
    return (config.peak * bump).float()


@dataclass(frozen=True)
class Edit:
    """An edit with its vectors: ``vectors`` is an orthonormal basis ``[k, d_model]`` for an
    ablation, or the one vector ``[1, d_model]`` to add; ``weights`` the per-layer shares."""

    config: EditConfig
    vectors: Float[Tensor, "k d_model"]
    weights: Float[Tensor, " n_layers"]
    model: str = ""

    def check(self, model: ModelHandle) -> None:
        if self.vectors.shape[-1] != model.d_model or len(self.weights) != model.n_layers:
            raise RefusalLensError(
                f"This edit was made for a model of width {self.vectors.shape[-1]} and "
                f"{len(self.weights)} layers ({self.model}); {model.model_id} has width "
                f"{model.d_model} and {model.n_layers} layers. Search an edit for this model "
                "with `refusal-lens mitigate`."
            )
        if self.config.kind == "add":
            check_layer(model, self.config.layer, "The edit's addition layer")

    def hooks(self, model: ModelHandle) -> Hooks:
        """The hooks that run this edit on ``model``'s bridge."""
        self.check(model)
        if self.config.kind == "add":
            hook = addition_hook(self.vectors[0], self.config.coef)
            return [(hook_name(self.config.layer, "resid_pre"), hook)]
        return write_ablation_hooks(self.vectors, self.weights.tolist())

    def save(self, folder: str | Path) -> Path:
        """``edit.safetensors`` (vectors, weights) and ``edit.json`` (its settings)."""
        tensors = {"vectors": self.vectors.contiguous(), "weights": self.weights.contiguous()}
        meta = artifact_meta(KIND, self.config, model=self.model, label=self.config.label())
        return save_tensor_artifact(folder, FILES, tensors, meta)

    @classmethod
    def load(cls, folder: str | Path) -> Edit:
        fix = "search the edit again with `refusal-lens mitigate MODEL`."
        meta, t = load_tensor_artifact(folder, FILES, KIND, fix)
        return cls(EditConfig.from_dict(meta["config"]), t["vectors"], t["weights"], meta["model"])


def resolve(config: EditConfig, vectors: Vectors) -> Edit:
    """The edit ``config`` names, with its vectors taken from the bank ``vectors``."""
    found = [vectors.get(name, config) for name in config.directions]
    n_layers = vectors.n_layers
    if config.kind == "add":
        return Edit(config, found[0][None].float(), torch.zeros(n_layers), vectors.model)
    return Edit(config, orthonormal_basis(found), kernel_weights(config, n_layers), vectors.model)


@contextlib.contextmanager
def apply_edit(model: ModelHandle, edit: Edit) -> Iterator[ModelHandle]:
    """Run ``model`` with ``edit`` active (forward passes and generation)."""
    with intervene(model, edit.hooks(model)):
        yield model
