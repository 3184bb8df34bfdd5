"""Hook points, capture and the residual-stream edits, in one place.

Every hook the toolkit puts on a TransformerBridge is named and built here:

- names: :func:`hook_name` (``hook_name(5, "resid_mid") == "blocks.5.hook_resid_mid"``) and
  the point sets :data:`RESIDUAL_POINTS` (the residual stream around each block) and
  :data:`WRITE_POINTS` (what each block adds to it), with :data:`EMBED` writing at layer 0;
- reading: :func:`capture`, a context that fills a dict with the activations at the given
  points during the forward passes run inside it (detached, or kept in the autograd graph
  with ``grad=True``), optionally ending the forward pass once all are read;
- editing: :func:`projection_hook` (``x − a QᵀQ x``: the share ``a = 1`` is an ablation),
  :func:`addition_hook` (``x + c v``), placed by :func:`ablation_hooks` or
  :func:`write_ablation_hooks`, and run by :func:`intervene`;
- :func:`check_layer` / :func:`check_layers`: one error, naming the valid range, for a layer
  the model does not have.

**What "ablation" means.** Ablating a subspace ``Q`` removes it from the residual stream at
every layer and position: :func:`ablation_hooks` projects it out of ``resid_pre``,
``resid_mid`` and ``resid_post`` of every block, so every read of the stream (each attention
layer, MLP and the final norm) is free of it. :func:`write_ablation_hooks` instead removes a
share ``a_l`` of it from every write to the stream (the embedding, each ``attn_out`` and
``mlp_out``): that is the form weights can express (:mod:`refusal_lens.mitigation.export`)
and the one that takes a share per layer (a mitigation kernel). With ``a_l = 1`` at every
layer the two are the same edit on every supported architecture (Llama, Qwen2, Gemma-2):
if no write carries ``Q``, neither does the stream, which is the sum of the writes.
Gemma-2's post-norms do not break this because TransformerBridge's ``hook_attn_out`` and
``hook_mlp_out`` fire after them, on what is really added. ``tests/test_hooks.py`` checks it
on tiny random models of the three families: max |Δ logit| between the two ≤ 3.6e-7
(float32, logits of order 0.6, ablation effect ≥ 0.1). An architecture with another write
(a learned position embedding, ``hook_pos_embed``, as in GPT-2) would need that write hooked
too before the write form is an ablation there.

Hooks return new tensors and never edit an activation in place, so they compose (several on
one point run in the order they were added) and captured activations stay intact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle

ResidualPoint = Literal["resid_pre", "resid_mid", "resid_post"]
RESIDUAL_POINTS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post")
WRITE_POINTS: tuple[str, ...] = ("attn_out", "mlp_out")  # each block's writes to the stream
BLOCK_POINTS: tuple[str, ...] = RESIDUAL_POINTS + WRITE_POINTS
MODEL_POINTS: tuple[str, ...] = ("embed",)  # outside the blocks
EMBED = "hook_embed"  # the token embedding: the write at layer 0 before any block

HookFn = Callable[[Tensor, object], Tensor | None]
Hooks = list[tuple[str, HookFn]]


def hook_name(layer: int | None, point: str = "resid_pre") -> str:
    """The TransformerLens name of ``point`` in block ``layer`` (``layer=None`` for a point
    outside the blocks, :data:`MODEL_POINTS`)."""
    if point in MODEL_POINTS and layer is None:
        return f"hook_{point}"
    if point not in BLOCK_POINTS or layer is None:
        raise RefusalLensError(
            f"No hook point {point!r} in layer {layer}: a block's points are {BLOCK_POINTS}, "
            f"and {MODEL_POINTS} take layer None."
        )
    return f"blocks.{layer}.hook_{point}"


def write_points(layer: int) -> list[str]:
    """The points where block ``layer`` writes to the residual stream (the embedding counts
    as a write of layer 0)."""
    names = [hook_name(layer, p) for p in WRITE_POINTS]
    return [*names, EMBED] if layer == 0 else names


# --------------------------------------------------------------------------------------------
# Layer checks


def _range(model: ModelHandle) -> str:
    return f"{model.model_id} has layers 0..{model.n_layers - 1}."


def check_layer(model: ModelHandle, layer: int, what: str = "Layer") -> int:
    """``layer`` if ``model`` has it; else a RefusalLensError saying the valid range."""
    if not 0 <= layer < model.n_layers:
        raise RefusalLensError(f"{what} {layer} is out of range: {_range(model)}")
    return layer


def check_layers(model: ModelHandle, layers: Sequence[int] | None = None) -> tuple[int, ...]:
    """``layers`` (default: every layer) if there is at least one and ``model`` has them all;
    else a RefusalLensError saying the valid range."""
    layers = tuple(range(model.n_layers)) if layers is None else tuple(layers)
    if not layers:
        raise RefusalLensError("No layers requested; pass at least one layer index.")
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if bad:
        raise RefusalLensError(f"Layers {bad} are out of range: {_range(model)}")
    return layers


# --------------------------------------------------------------------------------------------
# Reading


class StopForward(Exception):
    """Raised by :func:`capture`'s last hook when ``stop=True``: everything is read."""


@contextlib.contextmanager
def capture(
    model: ModelHandle,
    names: Sequence[str],
    grad: bool = False,
    *,
    keep: Callable[[Tensor], Tensor] | None = None,
    stop: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """Within the context, forward passes of ``model`` store the activation at each hook
    point of ``names`` in the yielded dict (by name; a later pass overwrites).

    - ``keep``: applied to each activation before it is stored (select positions, project),
      so only what is needed stays in memory;
    - ``grad=False``: stored tensors are detached;
    - ``grad=True``: the graph starts at ``names[0]`` (list the earliest point first): its
      activation is replaced by a detached leaf that requires grad, and every stored tensor
      stays in the graph, so ``torch.autograd.grad(out, list(seen.values()))`` gives the
      gradient at each point and none flows into the weights;
    - ``stop=True``: the forward pass ends (by an exception the context absorbs) as soon as
      every point is read, so nothing after the deepest one is computed; code after that
      forward call in the ``with`` block does not run.

    >>> with capture(model, [hook_name(3)], keep=lambda x: x[:, -1]) as seen:
    ...     model.bridge(ids)
    >>> seen["blocks.3.hook_resid_pre"]      # [batch, d_model]
    """
    wanted = list(dict.fromkeys(names))
    seen: dict[str, Tensor] = {}

    def reader(name: str) -> HookFn:
        def hook(x: Tensor, hook: object = None) -> Tensor:
            if grad and name == wanted[0]:
                x = x.detach().requires_grad_(True)
            kept = x if keep is None else keep(x)
            seen[name] = kept if grad else kept.detach()
            if stop and len(seen) == len(wanted):
                raise StopForward
            return x

        return hook

    try:
        with intervene(model, [(name, reader(name)) for name in wanted]):
            yield seen
    except StopForward:
        pass


# --------------------------------------------------------------------------------------------
# Editing


def projection_hook(basis: Float[Tensor, "k d_model"], share: float = 1.0) -> HookFn:
    """``x − share · Qᵀ Q x`` over the last axis for the orthonormal rows ``Q`` of ``basis``,
    computed in float32 and returned as a new tensor. ``share = 1`` removes the span."""
    cache: dict[tuple, Tensor] = {}

    def hook(x: Tensor, hook: object = None) -> Tensor:
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = basis.to(x.device, torch.float32)
        q = cache[key]
        removed = (x.float() @ q.T) @ q
        if share != 1.0:
            removed = share * removed
        return x - removed.to(x.dtype)

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


def ablation_hooks(basis: Float[Tensor, "k d_model"], n_layers: int) -> Hooks:
    """Remove the span of ``basis`` from the residual stream (every point of
    :data:`RESIDUAL_POINTS` in each of ``n_layers`` blocks): the ablation."""
    hook = projection_hook(basis)
    return [(hook_name(layer, p), hook) for layer in range(n_layers) for p in RESIDUAL_POINTS]


def write_ablation_hooks(basis: Float[Tensor, "k d_model"], shares: Sequence[float]) -> Hooks:
    """Remove the share ``shares[l]`` of the span of ``basis`` from every write of block
    ``l`` (:func:`write_points`); layers at share 0 get no hook. All shares 1 is the
    ablation (see the module docstring)."""
    hooks: Hooks = []
    for layer, share in enumerate(shares):
        if share == 0:
            continue
        hook = projection_hook(basis, share)
        hooks += [(name, hook) for name in write_points(layer)]
    return hooks


@contextlib.contextmanager
def intervene(model: ModelHandle, hooks: Hooks) -> Iterator[ModelHandle]:
    """Run ``model`` with ``hooks`` (pairs of hook name and function) active, forward passes
    and generation alike; they are removed on exit, other hooks are left alone."""
    with model.bridge.hooks(fwd_hooks=hooks):
        yield model
