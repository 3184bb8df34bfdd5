"""Difference-of-means directions: refusal candidates and the false-refusal vector.

``r[l, i] = mean(resid harmful) − mean(resid harmless)`` at the residual stream before block
``l`` and post-instruction position ``i`` (Arditi et al.), for every layer × position. Means
are accumulated batch by batch in float64 by :func:`refusal_lens.activations.mean_residuals`,
so memory does not grow with the number of prompts.

The false-refusal vector (Wang et al.) is ``w = mean(borderline) − mean(harmless)`` at the
refusal direction's layer and position, orthogonalized against it: ``w' = w − λ r̂ r̂ᵀ w``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from jaxtyping import Float
from torch import Tensor

from refusal_lens.activations import CollectConfig, mean_residuals
from refusal_lens.configs import check_range
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction


@dataclass(frozen=True)
class Candidates:
    """Candidate directions ``vectors[layer, pos, d_model]`` (layers and positions as listed)."""

    vectors: Float[Tensor, "layer pos d_model"]
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    model: str
    config: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None  # the model's hub id, when known (ModelHandle.hub_id)

    def direction(self, layer: int, position: int, **kwargs: Any) -> Direction:
        """The candidate read before block ``layer`` at ``position``, as a Direction."""
        if layer not in self.layers or position not in self.positions:
            raise RefusalLensError(
                f"No candidate at layer {layer}, position {position}; layers are "
                f"{self.layers[0]}..{self.layers[-1]}, positions {list(self.positions)}."
            )
        vector = self.vectors[self.layers.index(layer), self.positions.index(position)]
        kwargs.setdefault("base_model", self.base_model)
        return Direction(vector, layer, position, self.model, config={**self.config}, **kwargs)


def _texts(prompts: PromptSet | list[str], role: str) -> list[str]:
    texts = prompts.texts if isinstance(prompts, PromptSet) else list(prompts)
    if not texts:
        raise RefusalLensError(f"The {role} prompt set is empty; a mean needs at least one prompt.")
    return texts


def _name(prompts: PromptSet | list[str]) -> str:
    return prompts.name if isinstance(prompts, PromptSet) else f"{len(prompts)} prompts"


def template_positions(model: ModelHandle, positions: list[int] | None) -> tuple[int, ...]:
    """Post-instruction positions ``-n_post..-1`` (default: all of them), checked."""
    n_post = model.chat.n_post
    positions = list(range(-n_post, 0)) if positions is None else list(positions)
    bad = [p for p in positions if not -n_post <= p < 0]
    if bad or not positions:
        raise RefusalLensError(
            f"Positions {bad or positions} are outside the chat template's post-instruction "
            f"tokens; {model.model_id} has {n_post} of them, at positions -{n_post}..-1 "
            f"({model.describe()['post_instruction_tokens']})."
        )
    return tuple(positions)


def diff_in_means(
    model: ModelHandle,
    positive: PromptSet | list[str],
    negative: PromptSet | list[str],
    layers: list[int] | None = None,
    positions: list[int] | None = None,
    *,
    batch_size: int = 16,
    show_progress: bool = True,
) -> Candidates:
    """``mean(positive) − mean(negative)`` at every requested layer × post-instruction position.

    With harmful prompts as ``positive`` and harmless ones as ``negative`` these are the
    refusal-direction candidates. ``layers`` defaults to all layers.
    """
    pos_texts, neg_texts = _texts(positive, "positive"), _texts(negative, "negative")
    positions_t = template_positions(model, positions)
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    collect = CollectConfig(layers=tuple(layers), positions=positions_t, batch_size=batch_size)
    mean_pos = mean_residuals(model, pos_texts, collect, show_progress=show_progress)
    mean_neg = mean_residuals(model, neg_texts, collect, show_progress=show_progress)
    config = {
        "method": "diff_in_means",
        "hook": "resid_pre",
        "positive": _name(positive),
        "negative": _name(negative),
        "n_positive": len(pos_texts),
        "n_negative": len(neg_texts),
    }
    return Candidates(
        mean_pos - mean_neg, tuple(layers), positions_t, model.model_id, config, model.hub_id
    )


def false_refusal_vector(
    model: ModelHandle,
    borderline: PromptSet | list[str],
    harmless: PromptSet | list[str],
    refusal: Direction,
    coef: float = 1.0,
    *,
    batch_size: int = 16,
    show_progress: bool = True,
) -> Direction:
    """Wang et al.'s ``w' = w − λ r̂ r̂ᵀ w`` with ``λ = coef``, read at ``refusal``'s layer and
    position. ``coef=1`` makes ``w'`` orthogonal to the refusal direction."""
    check_range("coef (the λ of w′ = w − λ r̂ r̂ᵀ w)", coef, 0.0, 1.0)
    refusal.check(model)
    if refusal.position not in template_positions(model, None):
        raise RefusalLensError(
            f"The refusal direction's position {refusal.position} is outside {model.model_id}'s "
            "chat template; it was extracted from another template."
        )
    w = diff_in_means(
        model,
        borderline,
        harmless,
        [refusal.layer],
        [refusal.position],
        batch_size=batch_size,
        show_progress=show_progress,
    ).direction(refusal.layer, refusal.position, kind="false_refusal")
    w_prime = w.orthogonalize(refusal, coef)
    config = {**w.config, "orthogonalized_against": refusal.kind, "lambda": coef}
    scores = {"cosine_w_r": w.cosine(refusal), "cosine_w'_r": w_prime.cosine(refusal)}
    return replace(w_prime, kind="false_refusal", scores=scores, config=config)
