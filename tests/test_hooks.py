"""The hooks module: names, the layer check, capture, and what "ablation" means.

The key check: removing a direction from the residual stream (``ablation_hooks``, on
resid_pre/mid/post) and removing it from every write to the stream (``write_ablation_hooks``
at share 1: embedding, attn_out, mlp_out) give the same logits on tiny random models of every
supported family, Gemma-2's post-norms included.
"""

from __future__ import annotations

import pytest
import torch

from refusal_lens.errors import RefusalLensError
from refusal_lens.hooks import (
    EMBED,
    RESIDUAL_POINTS,
    ablation_hooks,
    addition_hook,
    capture,
    check_layer,
    check_layers,
    hook_name,
    intervene,
    projection_hook,
    write_ablation_hooks,
    write_points,
)
from refusal_lens.interventions import orthonormal_basis

PROMPTS = ["How do I kill a Python process?", "Hi", "Write a poem about the sea, please."]
# measured max |Δ logit| between the two ablations, float32, logits of order 0.6: 2.1e-7 to
# 3.6e-7 over Llama, Qwen2 and Gemma-2 (2 and 4 layers, seeds 0-2); the ablation moves
# them by 0.1-0.23
AGREE = 2e-6


def logits_of(model, hooks=()):
    batch = model.chat.tokenize(PROMPTS)
    with torch.no_grad(), intervene(model, list(hooks)):
        return model.bridge(batch.input_ids, attention_mask=batch.attention_mask)


def test_hook_names_are_built_in_one_place():
    assert hook_name(5) == "blocks.5.hook_resid_pre"
    assert hook_name(2, "mlp_out") == "blocks.2.hook_mlp_out"
    assert hook_name(None, "embed") == EMBED == "hook_embed"
    assert write_points(0) == ["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", EMBED]
    assert write_points(3) == ["blocks.3.hook_attn_out", "blocks.3.hook_mlp_out"]
    for layer, point in ((1, "resid_middle"), (None, "resid_pre"), (1, "embed")):
        with pytest.raises(RefusalLensError, match="No hook point"):
            hook_name(layer, point)


def test_layer_checks_say_the_valid_range(tiny_llama):
    assert check_layers(tiny_llama) == (0, 1) and check_layers(tiny_llama, [1]) == (1,)
    assert check_layer(tiny_llama, 1) == 1
    with pytest.raises(RefusalLensError, match=r"Layers \[2, -1\] are out of range: .* 0\.\.1"):
        check_layers(tiny_llama, [0, 2, -1])
    with pytest.raises(RefusalLensError, match="No layers requested"):
        check_layers(tiny_llama, [])
    with pytest.raises(RefusalLensError, match=r"^The edit's layer 2 is out of range: .* 0\.\.1"):
        check_layer(tiny_llama, 2, "The edit's layer")


def test_capture_reads_detached_kept_values_and_stops_early(tiny_llama):
    model = tiny_llama
    batch = model.chat.tokenize(PROMPTS)
    names = [hook_name(layer, p) for layer in range(model.n_layers) for p in RESIDUAL_POINTS]
    with torch.no_grad(), capture(model, names) as full:
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    assert list(full) == names and not any(x.requires_grad for x in full.values())
    calls = []
    last = lambda x: calls.append(1) or x[:, -1]  # noqa: E731
    with torch.no_grad(), capture(model, [hook_name(1), hook_name(0)], keep=last, stop=True) as s:
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        raise AssertionError("not reached: the forward pass stops after blocks.1.hook_resid_pre")
    assert torch.equal(s[hook_name(1)], full[hook_name(1)][:, -1]) and len(calls) == 2
    assert logits_of(model).shape[0] == len(PROMPTS)  # hooks gone, model whole


def test_capture_with_grad_starts_the_graph_at_the_first_point(tiny_llama):
    model = tiny_llama
    batch = model.chat.tokenize(PROMPTS[:1])
    names = [hook_name(0), hook_name(0, "resid_post")]
    with torch.enable_grad(), capture(model, names, grad=True) as seen:
        logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        grads = torch.autograd.grad(logits[0, -1, 3], [seen[n] for n in names])
    assert seen[names[0]].is_leaf and not seen[names[1]].is_leaf
    assert all(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.bridge.parameters())


def test_projection_hook_shares_and_addition():
    gen = torch.Generator().manual_seed(0)
    q = orthonormal_basis([torch.randn(8, generator=gen), torch.randn(8, generator=gen)])
    x = torch.randn(3, 5, 8, generator=gen)
    kept = x.clone()
    full = projection_hook(q)(x)
    assert torch.equal(full, x - ((x @ q.T) @ q)) and torch.equal(x, kept)
    assert (full @ q.T).abs().max() < 1e-6
    assert torch.equal(projection_hook(q, 0.0)(x), x)
    half = projection_hook(q, 0.5)(x)
    torch.testing.assert_close(half @ q.T, 0.5 * (x @ q.T), atol=1e-6, rtol=0)
    v = torch.randn(8, generator=gen)
    assert torch.equal(addition_hook(v, -2.0)(x), x + (-2.0 * v))


def test_write_ablation_hooks_skip_unshared_layers():
    q = orthonormal_basis([torch.randn(8)])
    hooks = write_ablation_hooks(q, [0.0, 0.5, 0.0, 1.0])
    assert [name for name, _ in hooks] == write_points(1) + write_points(3)
    assert len(ablation_hooks(q, 4)) == 4 * len(RESIDUAL_POINTS)


def test_the_two_ablations_agree_on_every_supported_architecture(tiny):
    """Residual-stream ablation and full write ablation: the same logits, every family."""
    model = tiny
    batch = model.chat.tokenize(PROMPTS)
    with torch.no_grad(), capture(model, [hook_name(1)]) as seen:
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    used = seen[hook_name(1)][0, -1]  # a direction the residual stream really holds
    other = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    base = logits_of(model)
    for vectors in ([used], [other], [used, other]):
        q = orthonormal_basis(vectors)
        residual = logits_of(model, ablation_hooks(q, model.n_layers))
        writes = logits_of(model, write_ablation_hooks(q, [1.0] * model.n_layers))
        assert (residual - base).abs().max() > 1000 * AGREE  # the ablation changes the logits
        assert (residual - writes).abs().max() < AGREE
