"""Gradient attributions: gradient × input and integrated gradients at the token embeddings.

The embedding is ``resid_pre`` of block 0; the gradient is that of the refusal score, taken
with the graph starting at the embedding (no weight gradients).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from refusal_lens.attribution.occlusion import forward_scores
from refusal_lens.hooks import HookFn, capture, hook_name, intervene
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import ChatBatch


def _scaled_user_tokens(batch: ChatBatch, scale: Tensor) -> HookFn:
    """A hook multiplying row b's user-token embeddings by ``scale[b]`` (the template keeps
    its own)."""

    def hook(x: Tensor, hook: object = None) -> Tensor:
        keep = ~batch.user_mask[..., None]
        return torch.where(keep, x, x * scale.to(x.dtype)[:, None, None])

    return hook


def _embedding_grads(
    model: ModelHandle, batch: ChatBatch, scale: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Embeddings (resid_pre of block 0) and the gradient of the summed refusal score with
    respect to them; with ``scale[b]``, user-token embeddings of row b are multiplied by it
    (the gradient is then taken at the scaled embeddings)."""
    name = hook_name(0)
    with contextlib.ExitStack() as stack:
        embedding = stack.enter_context(capture(model, [name]))
        if scale is not None:
            stack.enter_context(intervene(model, [(name, _scaled_user_tokens(batch, scale))]))
        leaf = stack.enter_context(capture(model, [name], grad=True))  # the graph starts here
        with torch.enable_grad():
            scores = forward_scores(model, batch)
            (grad,) = torch.autograd.grad(scores.sum(), leaf[name])
    return embedding[name].float(), grad.float()


def gradient_scores(model: ModelHandle, batch: ChatBatch, row: int, steps: int) -> Tensor:
    one = ChatBatch(
        batch.input_ids[row : row + 1],
        batch.attention_mask[row : row + 1],
        batch.user_mask[row : row + 1],
        batch.texts[row : row + 1],
    )
    if steps <= 1:  # gradient × input
        x, grad = _embedding_grads(model, one)
        return (x * grad).sum(-1)[0][one.user_mask[0]].cpu()
    alphas = (torch.arange(steps, device=model.device) + 0.5) / steps
    many = ChatBatch(
        *(t.expand(steps, -1) for t in (one.input_ids, one.attention_mask)),
        one.user_mask.expand(steps, -1),
        one.texts * steps,
    )
    x, grad = _embedding_grads(model, many, alphas)
    return (x[0] * grad.mean(0)).sum(-1)[one.user_mask[0]].cpu()
