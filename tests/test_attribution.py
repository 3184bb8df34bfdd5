"""Per-token attribution: each method against a direct computation, and bad input."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, replace

import pytest
import torch

from refusal_lens.attribution.methods import (
    METHODS,
    AttributionConfig,
    AttributionMethod,
    Attributions,
    IntegratedGradientsConfig,
    MethodConfig,
    ProjectionConfig,
    RowScores,
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
    with pytest.raises(RefusalLensError, match=r"Layers \[9\] are out of range"):
        attribute(refusing, [PROMPT], AttributionConfig("projection", layers=(9,)))
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


# Methods as plugins ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyConfig(MethodConfig):
    value: float = 1.0  # every user token's score


def toy(inputs, rows, config):
    """A toy method: each user token scores ``value`` × the row's refusal score."""
    n_user = inputs.batch.user_mask.sum(-1).tolist()
    return [RowScores(config.value * inputs.base[row].repeat(n_user[row])) for row in rows]


def test_a_registered_method_runs_through_attribute(refusing, tmp_path, monkeypatch):
    """One function and one registry entry: a new method, with its own setting."""
    monkeypatch.setitem(METHODS, "toy", AttributionMethod(toy, ToyConfig))
    config = AttributionConfig("toy", value=2.5, batch_size=2)
    assert config.options == ToyConfig(2.5)
    result = attribute(refusing, [PROMPT, "Hi", "Write a poem"], config)
    assert [a.method for a in result] == ["toy"] * 3
    for a in result:
        assert a.scores.tolist() == pytest.approx([2.5 * a.refusal_score] * len(a.tokens))
        assert a.layer_scores is None
    [a] = attribute(refusing, [PROMPT], AttributionConfig("toy", options=ToyConfig(-1.0)))
    assert a.scores.tolist() == pytest.approx([-a.refusal_score] * len(a.tokens))
    result.save(tmp_path)
    assert Attributions.load(tmp_path).config == config


def test_an_unknown_method_or_setting_fails_when_the_config_is_built():
    for name in ("saliency", "Occlusion", ""):
        with pytest.raises(RefusalLensError, match=f"Unknown attribution method {name!r}; use "):
            AttributionConfig(name)
    with pytest.raises(RefusalLensError, match="'projection', 'grad_x_input', 'integrated_gr"):
        AttributionConfig("saliency")
    with pytest.raises(
        RefusalLensError, match=r"No attribution method has the setting\(s\) \['stpes'\]"
    ):
        AttributionConfig("integrated_gradients", stpes=4)
    with pytest.raises(RefusalLensError, match="are a IntegratedGradientsConfig, not a Proj"):
        AttributionConfig("integrated_gradients", options=ProjectionConfig())
    with pytest.raises(RefusalLensError, match="steps must be positive"):
        AttributionConfig("integrated_gradients", steps=0)


def test_settings_go_to_their_method_and_old_artifacts_still_load():
    ig = AttributionConfig("integrated_gradients", steps=4)
    assert ig.options == IntegratedGradientsConfig(4)
    # a sweep passes steps= to every method: the others ignore it
    assert AttributionConfig("occlusion", steps=4).options == MethodConfig()
    assert AttributionConfig("projection", layers=[0, 1]).options == ProjectionConfig((0, 1))
    assert AttributionConfig.from_dict(ig.to_dict()) == ig
    assert ig.replace(batch_size=2).options == ig.options
    old = {"method": "projection", "layers": [1], "steps": 16, "batch_size": 8}
    assert AttributionConfig.from_dict(old) == AttributionConfig("projection", layers=(1,))
    # the defaults --help shows (the fields') are those a call gets (the constructor's)
    params = inspect.signature(AttributionConfig).parameters
    for f in dataclasses.fields(AttributionConfig):
        if f.name != "options":
            assert params[f.name].default == f.default, f.name
