"""The attention fast path (HF's SDPA kernel when no attention hook is needed) against the
bridge's own step-by-step attention: equal within float tolerance for residuals, scores,
gradients and generation; chosen only when nothing needs the slow path."""

from __future__ import annotations

import contextlib

import pytest
import torch

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.generation import generate_ids
from refusal_lens.models.attention import attention_bridges, native_attention, why_slow
from refusal_lens.scoring import answer_logits, refusal_scores

PROMPTS = ["Tell me how a bicycle gear works, in detail please.", "Hi", "Why is the sky blue?"]


@contextlib.contextmanager
def slow_path(model):
    model.native_attention = False
    try:
        yield
    finally:
        model.native_attention = True


def sdpa_calls(monkeypatch) -> list[int]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    calls, sdpa = [], ALL_ATTENTION_FUNCTIONS["sdpa"]
    monkeypatch.setitem(
        ALL_ATTENTION_FUNCTIONS, "sdpa", lambda *a, **k: calls.append(1) or sdpa(*a, **k)
    )
    return calls


def both_paths(model, fn):
    fast = fn()
    with slow_path(model):
        slow = fn()
    return fast, slow


def check_paths_agree(model, monkeypatch) -> None:
    calls = sdpa_calls(monkeypatch)
    config = CollectConfig(batch_size=3, positions=(-3, -2, -1))
    fast, slow = both_paths(
        model, lambda: collect_residuals(model, PROMPTS, config, show_progress=False).acts
    )
    fast_path = why_slow(model, attention_bridges(model.bridge)) is None
    assert bool(calls) == fast_path  # the kernel ran exactly when the fast path was chosen
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4 * float(slow.abs().max()))
    scores = both_paths(model, lambda: refusal_scores(model, PROMPTS, 3, show_progress=False))
    torch.testing.assert_close(*scores, rtol=1e-4, atol=1e-4)
    fast_ids, slow_ids = both_paths(
        model, lambda: generate_ids(model, PROMPTS, 8, batch_size=3, show_progress=False)
    )
    assert fast_ids == slow_ids


def test_fast_and_slow_attention_agree_on_every_family(tiny, monkeypatch):
    check_paths_agree(tiny, monkeypatch)
    reason = why_slow(tiny, attention_bridges(tiny.bridge))
    if "gemma" in tiny.path:  # Gemma-2 soft-caps its attention logits: SDPA cannot
        assert reason in (
            "Gemma2ForCausalLM has no SDPA attention",
            "SDPA cannot soft-cap attention logits",
        )
    else:
        assert reason is None


@pytest.mark.model
def test_fast_and_slow_attention_agree_on_the_bundled_models(bundled, monkeypatch):
    assert why_slow(bundled, attention_bridges(bundled.bridge)) is None
    check_paths_agree(bundled, monkeypatch)


def test_gradients_through_the_fast_path_equal_the_slow_path(tiny_llama):
    batch = tiny_llama.chat.tokenize(PROMPTS)

    def grad():
        embed = {}

        def keep(x, hook):
            embed["x"] = x
            return x

        with (
            torch.enable_grad(),
            tiny_llama.bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", keep)]),
        ):
            total = answer_logits(tiny_llama, batch).logsumexp(-1).sum()
            return torch.autograd.grad(total, embed["x"])[0]

    fast, slow = both_paths(tiny_llama, grad)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_an_attention_hook_keeps_the_slow_path_and_fires(tiny_llama, monkeypatch):
    calls, seen = sdpa_calls(monkeypatch), []
    batch = tiny_llama.chat.tokenize(PROMPTS)
    hooks = [("blocks.1.attn.hook_pattern", lambda x, hook: seen.append(x.shape))]
    bridges = attention_bridges(tiny_llama.bridge)
    with torch.inference_mode(), tiny_llama.bridge.hooks(fwd_hooks=hooks):
        assert "attention hooks are registered" in why_slow(tiny_llama, bridges)
        with native_attention(tiny_llama) as fast:
            assert not fast
        answer_logits(tiny_llama, batch)
    assert seen and not calls  # the pattern hook fired; the kernel never ran
    assert why_slow(tiny_llama, bridges) is None  # the hook is gone with its context


def test_the_fast_path_restores_the_bridge_after_use_and_after_errors(tiny_llama):
    bridges = attention_bridges(tiny_llama.bridge)
    config = tiny_llama.hf_model.config
    with pytest.raises(RuntimeError, match="boom"), native_attention(tiny_llama) as fast:
        assert fast and config._attn_implementation == "sdpa"
        with native_attention(tiny_llama) as nested:  # nested: stays on, restores nothing
            assert nested
        assert all("forward" in b.__dict__ for b in bridges)
        raise RuntimeError("boom")
    assert config._attn_implementation == "eager"
    assert not any("forward" in b.__dict__ for b in bridges)
