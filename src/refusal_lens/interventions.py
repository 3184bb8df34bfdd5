"""Interventions on the residual stream, as context managers over the bridge.

>>> with ablate(model, r):                      # x ← x − r̂ r̂ᵀ x at every layer and position
...     completions = generate(model, prompts)
>>> with add(model, r, coef=1.0):               # x ← x + coef · r at r.layer, every position
...     scores = refusal_scores(model, prompts)
>>> with project_out(model, [r, w]):            # remove a whole subspace
...     ...

Every hook returns a new tensor and never edits an activation in place, so hooks compose and
cached activations stay intact. Hooks are active on ``model.bridge`` and therefore also during
``generate`` (the HF model runs the bridge's modules). Ablation hooks sit on ``resid_pre``,
``resid_mid`` and ``resid_post`` of every block: the residual stream, and so every input of
every attention layer, MLP and the final norm, is then free of the direction at every layer
and position, in any architecture (including post-norm ones such as Gemma-2). For pre-norm
models this is the same edit as removing the direction from every write to the residual
stream, which is what
:func:`refusal_lens.directions.orthogonalize.orthogonalize_weights` bakes into the weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.activations import hook_name
from refusal_lens.direction import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle

HookFn = Callable[[Tensor, object], Tensor]
Hooks = list[tuple[str, HookFn]]


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


def projection_hook(basis: Float[Tensor, "k d_model"]) -> HookFn:
    """``x − Q Qᵀ x`` over the last axis, computed in float32, returned as a new tensor."""
    cache: dict[tuple, Tensor] = {}

    def hook(x: Tensor, hook: object = None) -> Tensor:
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = basis.to(x.device)
        q = cache[key]
        coords = x.float() @ q.T
        return x - (coords @ q).to(x.dtype)

    return hook


def addition_hook(vector: Float[Tensor, " d_model"], coef: float) -> HookFn:
    """``x + coef · v``, returned as a new tensor."""
    cache: dict[tuple, Tensor] = {}

    def hook(x: Tensor, hook: object = None) -> Tensor:
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = (coef * vector.float()).to(x.device, x.dtype)
        return x + cache[key]

    return hook


def ablation_points(n_layers: int) -> list[str]:
    """The hook points that make every read of the residual stream direction-free."""
    points = ("pre", "mid", "post")
    return [hook_name(layer, f"resid_{p}") for layer in range(n_layers) for p in points]


def projection_hooks(model: ModelHandle, directions: Sequence[Direction | Tensor]) -> Hooks:
    vectors = [as_direction(model, d).vector for d in directions]
    hook = projection_hook(orthonormal_basis(vectors))
    return [(name, hook) for name in ablation_points(model.n_layers)]


def addition_hooks(
    model: ModelHandle, direction: Direction | Tensor, coef: float, layer: int | None = None
) -> Hooks:
    direction = as_direction(model, direction)
    if not math.isfinite(coef):
        raise RefusalLensError(
            f"The addition coefficient must be a finite number, not {coef}; use e.g. 1.0 (or a "
            "negative one to subtract the direction)."
        )
    layer = direction.layer if layer is None else layer
    if not 0 <= layer < model.n_layers:
        raise RefusalLensError(
            f"Layer {layer} is out of range: {model.model_id} has layers 0..{model.n_layers - 1}."
        )
    return [(hook_name(layer), addition_hook(direction.vector, coef))]


@contextlib.contextmanager
def intervene(model: ModelHandle, hooks: Hooks) -> Iterator[ModelHandle]:
    """Run the model with ``hooks`` (pairs of hook name and function) active."""
    with model.bridge.hooks(fwd_hooks=hooks):
        yield model


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
