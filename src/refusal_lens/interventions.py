"""Interventions on the residual stream, as context managers over the bridge.

>>> with ablate(model, r):                      # x ← x − r̂ r̂ᵀ x at every layer and position
...     completions = generate(model, prompts)
>>> with add(model, r, coef=1.0):               # x ← x + coef · r at r.layer, every position
...     scores = refusal_scores(model, prompts)
>>> with project_out(model, [r, w]):            # remove a whole subspace
...     ...

Every hook returns a new tensor and never edits an activation in place, so hooks compose and
cached activations stay intact. Hooks are active on ``model.bridge`` and therefore also during
``generate`` (the HF model runs the bridge's modules). The hooks themselves, and what
"ablation" means on each architecture, are in :mod:`refusal_lens.hooks`: here the ablation
sits on ``resid_pre``, ``resid_mid`` and ``resid_post`` of every block, which
:func:`refusal_lens.directions.orthogonalize.orthogonalize_weights` bakes into the weights of
a pre-norm model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.errors import RefusalLensError
from refusal_lens.hooks import (
    Hooks,
    ablation_hooks,
    addition_hook,
    check_layer,
    hook_name,
    intervene,
)
from refusal_lens.models import ModelHandle
from refusal_lens.residual_direction import Direction

__all__ = [
    "Hooks",
    "ablate",
    "add",
    "addition_hooks",
    "as_direction",
    "intervene",
    "orthonormal_basis",
    "project_out",
    "projection_hooks",
]


def as_direction(model: ModelHandle, direction: Direction | Tensor) -> Direction:
    """Accept a Direction or a raw vector; check that it fits ``model``."""
    if isinstance(direction, Tensor):
        direction = Direction(direction, layer=0, position=-1, model=model.model_id, kind="vector")
    if not isinstance(direction, Direction):
        raise RefusalLensError(f"Expected a Direction or a tensor, got {type(direction).__name__}.")
    direction.check(model)
    return direction


def orthonormal_basis(vectors: Sequence[Tensor]) -> Float[Tensor, "k d_model"]:
    """Rows spanning the same subspace as ``vectors``, orthonormal (QR in float64)."""
    if not vectors:
        raise RefusalLensError("No directions given; pass at least one direction to project out.")
    stacked = torch.stack([v.double() for v in vectors], dim=1)  # [d_model, k]
    q, r = torch.linalg.qr(stacked)
    scale = r.diagonal().abs()
    if (scale <= 1e-6 * scale.max()).any():
        raise RefusalLensError(
            "The directions to project out are linearly dependent; drop the redundant ones."
        )
    return q.T.float()


def projection_hooks(model: ModelHandle, directions: Sequence[Direction | Tensor]) -> Hooks:
    vectors = [as_direction(model, d).vector for d in directions]
    return ablation_hooks(orthonormal_basis(vectors), model.n_layers)


def addition_hooks(
    model: ModelHandle, direction: Direction | Tensor, coef: float, layer: int | None = None
) -> Hooks:
    direction = as_direction(model, direction)
    if not math.isfinite(coef):
        raise RefusalLensError(
            f"The addition coefficient must be a finite number, not {coef}; use e.g. 1.0 (or a "
            "negative one to subtract the direction)."
        )
    layer = check_layer(model, direction.layer if layer is None else layer)
    return [(hook_name(layer), addition_hook(direction.vector, coef))]


@contextlib.contextmanager
def project_out(
    model: ModelHandle, directions: Sequence[Direction | Tensor]
) -> Iterator[ModelHandle]:
    """Remove the subspace spanned by ``directions`` at every layer and position."""
    with intervene(model, projection_hooks(model, directions)):
        yield model


@contextlib.contextmanager
def ablate(model: ModelHandle, direction: Direction | Tensor) -> Iterator[ModelHandle]:
    """Directional ablation ``x ← x − r̂ r̂ᵀ x`` at every layer and position."""
    with project_out(model, [direction]):
        yield model


@contextlib.contextmanager
def add(
    model: ModelHandle, direction: Direction | Tensor, coef: float = 1.0, layer: int | None = None
) -> Iterator[ModelHandle]:
    """Activation addition ``x ← x + coef · r`` at one layer (``direction.layer`` by default),
    every position, generated tokens included. ``coef`` scales the direction as stored (a
    difference of means at coefficient 1), not its unit vector."""
    with intervene(model, addition_hooks(model, direction, coef, layer)):
        yield model
