"""Batching changes nothing: scores, residuals, attribution (every method) and greedy generation
of a left-padded batch equal those of each prompt alone, on every tiny family and on both
bundled models. Prompts of very different lengths, so the batch is heavily padded."""

from __future__ import annotations

import pytest
import torch

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.attribution.methods import AttributionConfig, attribute
from refusal_lens.generation import generate_ids
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import refusal_scores

PROMPTS = [
    "Hi",
    "How do I kill a Python process that is stuck and ignores Ctrl-C on my laptop?",
    "Write a short poem about the sea, the wind and the quick brown fox, in three verses.",
    "Why?",
]
METHODS = ("occlusion", "grad_x_input", "integrated_gradients", "projection")


def close(a, b, scale: float = 1.0) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(scale, 1.0))


def each_alone(fn):
    return [fn([text]) for text in PROMPTS]


def check_residuals_and_scores(model) -> None:
    config = CollectConfig(batch_size=len(PROMPTS))
    batched = collect_residuals(model, PROMPTS, config, show_progress=False).acts
    alone = each_alone(lambda t: collect_residuals(model, t, config, show_progress=False).acts)
    scale = float(batched.abs().max())
    for i, row in enumerate(alone):
        close(batched[i], row[0], scale)
    scores = refusal_scores(model, PROMPTS, len(PROMPTS), show_progress=False)
    close(scores, torch.cat(each_alone(lambda t: refusal_scores(model, t, show_progress=False))))


def check_attribution(model) -> None:
    vector = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    r = Direction(vector, layer=model.n_layers // 2, position=-1, model=model.model_id)
    for method in METHODS:
        config = AttributionConfig(
            method, steps=4, batch_size=len(PROMPTS), attribute_unrefused=True
        )
        one = AttributionConfig(method, steps=4, batch_size=1, attribute_unrefused=True)
        batched = attribute(model, PROMPTS, config, direction=r).items
        alone = attribute(model, PROMPTS, one, direction=r).items
        for b, a in zip(batched, alone, strict=True):
            assert b.token_ids == a.token_ids and b.template_tokens == a.template_tokens
            close(torch.tensor(b.refusal_score), torch.tensor(a.refusal_score))
            close(b.scores, a.scores, float(a.scores.abs().max()))


def check_generation(model) -> None:
    batched = generate_ids(model, PROMPTS, 8, batch_size=len(PROMPTS), show_progress=False)
    alone = each_alone(lambda t: generate_ids(model, t, 8, show_progress=False)[0])
    assert batched == alone


def test_batched_equals_alone_on_every_family(tiny):
    check_residuals_and_scores(tiny)
    check_attribution(tiny)
    check_generation(tiny)


@pytest.mark.model
def test_batched_equals_alone_on_the_bundled_models(bundled):
    check_residuals_and_scores(bundled)
    check_attribution(bundled)
    check_generation(bundled)
