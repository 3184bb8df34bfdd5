"""Interventions: ablation, addition, subspace projection, weight orthogonalization."""

from __future__ import annotations

import pytest
import torch

from refusal_lens.directions import Direction
from refusal_lens.directions.orthogonalize import orthogonalize_weights
from refusal_lens.errors import RefusalLensError
from refusal_lens.generation import generate
from refusal_lens.interventions import ablate, add, orthonormal_basis, project_out

PROMPTS = ["How do I kill a Python process?", "Hi", "Write a poem about the sea, please."]
RESID = [f"blocks.{{}}.hook_resid_{p}" for p in ("pre", "mid", "post")]


def logits_of(model, prompts=PROMPTS):
    batch = model.chat.tokenize(prompts)
    with torch.no_grad():
        return model.bridge(batch.input_ids, attention_mask=batch.attention_mask)


def random_direction(model, seed=0, layer=1):
    gen = torch.Generator().manual_seed(seed)
    return Direction(torch.randn(model.d_model, generator=gen), layer, -1, model.model_id)


def resid_everywhere(model, prompts=PROMPTS):
    """Every residual-stream activation (all layers, points and positions), captured last."""
    seen = []
    hooks = [
        (name.format(layer), lambda x, hook: seen.append(x.detach().clone()))
        for layer in range(model.n_layers)
        for name in RESID
    ]
    batch = model.chat.tokenize(prompts)
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    return seen


def test_ablation_leaves_no_projection_anywhere(tiny):
    # a direction the model's residual stream really uses
    r = Direction(resid_everywhere(tiny)[2][0, -1], 1, -1, tiny.model_id)
    before = max(float((x @ r.unit_vector()).abs().max()) for x in resid_everywhere(tiny))
    with ablate(tiny, r):
        after = resid_everywhere(tiny)
    assert len(after) == 3 * tiny.n_layers
    assert max(float((x @ r.unit_vector()).abs().max()) for x in after) < 1e-4 * before


def test_hooks_do_not_edit_activations_in_place(tiny_llama):
    r = random_direction(tiny_llama)
    seen = []
    # registered before the ablation hook at the same point, so it sees the tensor first
    keep = ("blocks.1.hook_resid_pre", lambda x, hook: seen.append((x, x.clone())))
    with tiny_llama.bridge.hooks(fwd_hooks=[keep]), ablate(tiny_llama, r):
        logits_of(tiny_llama)
    tensor, copy = seen[0]
    assert torch.equal(tensor, copy)


def test_coefficient_zero_is_exactly_the_baseline(tiny):
    base = logits_of(tiny)
    with add(tiny, random_direction(tiny), coef=0.0):
        assert torch.equal(logits_of(tiny), base)
    with add(tiny, random_direction(tiny), coef=4.0):
        assert not torch.allclose(logits_of(tiny), base)
    assert torch.equal(logits_of(tiny), base)  # hooks are gone after the context


def test_addition_is_linear_in_the_coefficient_at_the_hook(tiny_llama):
    r = random_direction(tiny_llama, layer=1)
    seen: dict[float, torch.Tensor] = {}
    for coef in (0.0, 2.0):
        hook = ("blocks.1.hook_resid_pre", lambda x, hook, c=coef: seen.update({c: x.clone()}))
        with add(tiny_llama, r, coef=coef), tiny_llama.bridge.hooks(fwd_hooks=[hook]):
            logits_of(tiny_llama)
    torch.testing.assert_close(seen[2.0] - seen[0.0], (2.0 * r.vector).expand_as(seen[0.0]))


def test_projecting_out_a_subspace(tiny_llama):
    r, w = random_direction(tiny_llama, 0), random_direction(tiny_llama, 1)
    basis = orthonormal_basis([r.vector, w.vector])
    torch.testing.assert_close(basis @ basis.T, torch.eye(2), atol=1e-5, rtol=0)
    with project_out(tiny_llama, [r, w]):
        for x in resid_everywhere(tiny_llama):
            assert float((x @ basis.T).abs().max()) < 1e-4
    with (
        pytest.raises(RefusalLensError, match="linearly dependent"),
        project_out(tiny_llama, [r, 2 * r]),
    ):
        pass


def test_generation_runs_under_an_intervention(tiny_llama):
    r = Direction(resid_everywhere(tiny_llama)[2][0, -1], 1, -1, tiny_llama.model_id)
    base = generate(tiny_llama, PROMPTS, max_new_tokens=6, show_progress=False)
    with add(tiny_llama, r, coef=50.0):
        steered = generate(tiny_llama, PROMPTS, max_new_tokens=6, show_progress=False)
    assert steered != base
    assert generate(tiny_llama, PROMPTS, max_new_tokens=6, show_progress=False) == base


@pytest.mark.parametrize("tied", [False, True])
def test_orthogonalized_weights_match_hook_ablation(tmp_path, tied):
    from refusal_lens.models import load_model
    from tiny_models import save_tiny_model

    src = save_tiny_model("llama", tmp_path / "src", seed=3, tie_word_embeddings=tied)
    model = load_model(str(src), device="cpu")
    r = Direction(resid_everywhere(model)[3][1, -2], 1, -1, model.model_id)
    with ablate(model, r):
        hooked = logits_of(model)
        hooked_text = generate(model, PROMPTS, max_new_tokens=5, show_progress=False)
    out = orthogonalize_weights(model, r, tmp_path / "ortho")
    edited = load_model(str(out), device="cpu")
    torch.testing.assert_close(logits_of(edited), hooked, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits_of(model), hooked, atol=1e-3)
    assert generate(edited, PROMPTS, max_new_tokens=5, show_progress=False) == hooked_text
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_orthogonalization_matches_for_qwen2(tiny_dirs, tmp_path):
    from refusal_lens.models import load_model

    model = load_model(str(tiny_dirs["qwen2"]), device="cpu")
    r = Direction(resid_everywhere(model)[1][0, -1], 1, -1, model.model_id)
    with ablate(model, r):
        hooked = logits_of(model)
    edited = load_model(str(orthogonalize_weights(model, r, tmp_path / "q")), device="cpu")
    torch.testing.assert_close(logits_of(edited), hooked, atol=1e-4, rtol=1e-4)


def test_post_norm_models_are_refused_with_a_reason(tiny_dirs, tmp_path):
    from refusal_lens.models import load_model

    model = load_model(str(tiny_dirs["gemma2"]), device="cpu")
    with pytest.raises(RefusalLensError, match="post-norm"):
        orthogonalize_weights(model, random_direction(model), tmp_path / "g")
    assert not (tmp_path / "g").exists()


def test_a_direction_of_another_width_is_refused(tiny_llama):
    wrong = Direction(torch.ones(tiny_llama.d_model + 1), 0, -1, "other-model")
    for context in (ablate(tiny_llama, wrong), add(tiny_llama, wrong)):
        with pytest.raises(RefusalLensError, match="d_model"), context:
            pass
    deep = Direction(torch.ones(tiny_llama.d_model), tiny_llama.n_layers, -1, "x")
    with pytest.raises(RefusalLensError, match="layer"), add(tiny_llama, deep):
        pass


def test_steer_reports_the_layer_it_used_and_saves(tiny_llama, tmp_path):
    from refusal_lens.directions.steer import SteerConfig, SteerResult, steer
    from refusal_lens.prompts import PromptSet

    r = random_direction(tiny_llama, layer=1)
    prompts = PromptSet.from_texts(PROMPTS, "harmless", name="p")
    config = SteerConfig(add=3.0, layer=0, judge="score")
    result = steer(tiny_llama, prompts, r, config, show_progress=False)
    assert result.intervention["layer"] == 0 and result.before.n == len(PROMPTS)
    assert result.after.scores != result.before.scores
    r.save(tmp_path)
    result.save(tmp_path)
    back = SteerResult.load(tmp_path)
    assert (back.before, back.after, back.config) == (result.before, result.after, config)
    assert back.prompts == list(PROMPTS) and back.rows() == result.rows()
    assert Direction.load(tmp_path).layer == 1  # the direction saved there is kept
    with pytest.raises(RefusalLensError, match="Choose one intervention"):
        SteerConfig(ablate=True, add=1.0)
