"""Per-token attribution: each method against a direct computation, and bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from refusal_lens.attribution.methods import (
    AttributionConfig,
    Attributions,
    attribute,
    scores_without,
)
from refusal_lens.directions import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.scoring import refusal_scores

PROMPT = "How do I kill a Python process quickly?"


@pytest.fixture(scope="module")
def refusing(tiny_llama):
    """The tiny model with 'refusal' = every token but one: every prompt counts as refused."""
    return replace(tiny_llama, refusal_tokens=list(range(1, len(tiny_llama.tokenizer))))


def score_of(model, ids):
    with torch.no_grad():
        logits = model.bridge(torch.tensor([ids]), logits_to_keep=1)
    logprobs = logits[:, -1].float().log_softmax(-1)
    from refusal_lens.scoring import refusal_score

    return float(refusal_score(logprobs, model.refusal_tokens)[0])


def test_occlusion_is_the_score_drop_when_a_token_is_deleted(refusing):
    [a] = attribute(refusing, [PROMPT], "occlusion")
    batch = refusing.chat.tokenize([PROMPT])
    ids = batch.input_ids[0].tolist()
    user = batch.user_mask[0].nonzero().flatten().tolist()
    assert a.token_ids == [ids[i] for i in user] and len(a.scores) == len(user)
    base = score_of(refusing, ids)
    assert a.refusal_score == pytest.approx(base, abs=1e-4)
    i = user[2]
    assert float(a.scores[2]) == pytest.approx(
        base - score_of(refusing, ids[:i] + ids[i + 1 :]), abs=1e-4
    )
    assert len(a.template_tokens) + len(a.tokens) == len(ids)  # template reported apart


def test_scores_without_deletes_token_sets(refusing):
    [a] = attribute(refusing, [PROMPT], "occlusion")
    batch = refusing.chat.tokenize([PROMPT])
    ids = batch.input_ids[0].tolist()
    user = batch.user_mask[0].nonzero().flatten().tolist()
    both = [t for j, t in enumerate(ids) if j not in (user[0], user[3])]
    got = scores_without(refusing, PROMPT, [[], [2], [0, 3]])
    assert float(got[0]) == pytest.approx(a.refusal_score, abs=1e-4)
    assert float(got[1]) == pytest.approx(a.refusal_score - float(a.scores[2]), abs=1e-4)
    assert float(got[2]) == pytest.approx(score_of(refusing, both), abs=1e-4)
    with pytest.raises(RefusalLensError, match="out of range"):
        scores_without(refusing, PROMPT, [[len(user)]])


def test_integrated_gradients_are_complete(refusing):
    """IG attributions sum to f(input) − f(baseline: user-token embeddings zeroed)."""
    [a] = attribute(refusing, [PROMPT], AttributionConfig("integrated_gradients", steps=64))
    batch = refusing.chat.tokenize([PROMPT])
    zero = lambda x, hook: torch.where(batch.user_mask[..., None], torch.zeros_like(x), x)  # noqa: E731
    with torch.no_grad(), refusing.bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", zero)]):
        baseline = score_of(refusing, batch.input_ids[0].tolist())
    assert float(a.scores.sum()) == pytest.approx(a.refusal_score - baseline, rel=0.02, abs=1e-3)


def hf_score_of_embeddings(hf, embeds, refusal_tokens) -> torch.Tensor:
    """The refusal score from a plain HF forward on ``embeds`` (written out, not the
    package's ``refusal_score``): log p(R) − log(1 − p(R)) at the last position."""
    logprobs = hf(inputs_embeds=embeds).logits[0, -1].log_softmax(-1)
    refusal = torch.zeros_like(logprobs, dtype=torch.bool)
    refusal[refusal_tokens] = True
    return logprobs[refusal].logsumexp(-1) - logprobs[~refusal].logsumexp(-1)


def test_grad_x_input_is_the_first_order_term(refusing):
    """Against a plain HF model in float64: autograd's gradient × embedding per user token,
    and a central finite difference of the score when one token's embedding is scaled."""
    from transformers import AutoModelForCausalLM

    [a] = attribute(refusing, [PROMPT], "grad_x_input")
    hf = AutoModelForCausalLM.from_pretrained(refusing.path, dtype=torch.float64).eval()
    batch = refusing.chat.tokenize([PROMPT])
    user = batch.user_mask[0].nonzero().flatten()
    embeds = hf.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
    score = hf_score_of_embeddings(hf, embeds, refusing.refusal_tokens)
    assert float(score) == pytest.approx(a.refusal_score, abs=1e-4)
    (grad,) = torch.autograd.grad(score, embeds)
    expected = (grad * embeds).sum(-1)[0, user].detach()
    assert float(expected.abs().max()) > 1e-3  # the scores are not all ~0, so this can fail
    torch.testing.assert_close(a.scores.double(), expected, atol=1e-4, rtol=1e-3)
    eps = 1e-4
    with torch.no_grad():
        for k, i in enumerate(user[:4].tolist()):
            shifted = [embeds.clone() for _ in range(2)]
            shifted[0][0, i] *= 1 + eps
            shifted[1][0, i] *= 1 - eps
            up, down = (hf_score_of_embeddings(hf, e, refusing.refusal_tokens) for e in shifted)
            difference = float(up - down) / (2 * eps)
            assert float(a.scores[k]) == pytest.approx(difference, abs=1e-4, rel=1e-3)


def test_projection_per_layer(refusing):
    r = Direction(
        torch.randn(refusing.d_model, generator=torch.Generator().manual_seed(0)), 1, -1, "m"
    )
    [a] = attribute(refusing, [PROMPT, "Hi"], "projection", direction=r)[:1]
    assert a.layer_scores.shape == (refusing.n_layers, len(a.tokens))
    torch.testing.assert_close(a.scores, a.layer_scores[1])
    seen = {}
    batch = refusing.chat.tokenize([PROMPT])
    hook = ("blocks.1.hook_resid_pre", lambda x, hook: seen.update(x=x.clone()))
    with torch.no_grad(), refusing.bridge.hooks(fwd_hooks=[hook]):
        refusing.bridge(batch.input_ids)
    expected = (seen["x"][0] @ r.unit_vector())[batch.user_mask[0]]
    torch.testing.assert_close(a.scores, expected, atol=1e-4, rtol=1e-4)


def test_unrefused_prompts_are_reported_not_attributed(tiny_llama):
    never = replace(tiny_llama, refusal_tokens=[5])
    assert float(refusal_scores(never, [PROMPT], show_progress=False)[0]) < 0
    [a] = attribute(never, [PROMPT], "occlusion")
    assert a.scores is None and "not refused" in a.note and not a.refused
    [b] = attribute(never, [PROMPT], AttributionConfig("occlusion", attribute_unrefused=True))
    assert b.scores is not None


def test_bad_attribution_requests(refusing):
    with pytest.raises(RefusalLensError, match="Unknown attribution method"):
        attribute(refusing, [PROMPT], "saliency")
    with pytest.raises(RefusalLensError, match="do not exist"):
        attribute(refusing, [PROMPT], AttributionConfig("occlusion", layers=(9,)))
    with pytest.raises(RefusalLensError, match="needs direction"):
        attribute(refusing, [PROMPT], "projection")
    with pytest.raises(RefusalLensError, match="empty"):
        attribute(refusing, ["  "], "occlusion")


def test_attributions_save_and_load_beside_other_artifacts(refusing, tmp_path):
    """The stage's result round-trips (scores, per-layer scores, notes, config) and keeps the
    other files of its folder."""
    r = Direction(torch.randn(refusing.d_model), layer=1, position=-1, model=refusing.model_id)
    folder = tmp_path / "run"
    r.save(folder)
    config = AttributionConfig("projection", steps=3)
    result = attribute(refusing, [PROMPT, "Hi"], config, direction=r)
    result.save(folder)
    back = Attributions.load(folder)
    assert back.config == config and back.model == refusing.model_id and len(back) == 2
    for a, b in zip(result, back, strict=True):
        assert (a.prompt, a.tokens, a.token_ids, a.note) == (
            b.prompt,
            b.tokens,
            b.token_ids,
            b.note,
        )
        assert a.refusal_score == pytest.approx(b.refusal_score)
        for name in ("scores", "layer_scores"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y)
    assert back.direction["layer"] == 1 and Direction.load(folder).layer == 1
    with pytest.raises(RefusalLensError, match="Unknown attribution method"):
        AttributionConfig("saliency")
