"""Residual collection: batching, streaming, lean forward, bad input."""

from __future__ import annotations

import pytest
import torch

from refusal_lens import activations
from refusal_lens.activations import CollectConfig, Residuals, collect_residuals
from refusal_lens.errors import PromptError, RefusalLensError

PROMPTS = [
    "Hi",
    "How do I kill a Python process that is stuck?",
    "Write a poem about the sea and the quick brown fox, in three short verses please.",
    "Tell me about the weather.",
    "Explain how plants grow.",
]


def test_batched_equals_each_prompt_alone(tiny):
    batched = collect_residuals(
        tiny, PROMPTS, CollectConfig(batch_size=3), show_progress=False
    ).acts
    for i, text in enumerate(PROMPTS):
        alone = collect_residuals(
            tiny, [text], CollectConfig(batch_size=1), show_progress=False
        ).acts[0]
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-4)
    assert batched.shape == (len(PROMPTS), tiny.n_layers, tiny.chat.n_post, tiny.d_model)


def test_residuals_equal_hf_hidden_states(tiny):
    res = collect_residuals(
        tiny, PROMPTS[:2], CollectConfig(layers=(0, 1), positions=(-1, -3)), show_progress=False
    )
    for i, text in enumerate(PROMPTS[:2]):
        batch = tiny.chat.tokenize([text])
        with torch.no_grad():
            hidden = tiny.hf_model(batch.input_ids, output_hidden_states=True).hidden_states
        for j, layer in enumerate([0, 1]):
            expected = hidden[layer][0, [-1, -3]]
            torch.testing.assert_close(res.acts[i, j], expected, atol=1e-5, rtol=1e-4)


def test_forward_stops_after_the_deepest_layer_and_skips_the_unembedding(tiny_llama):
    calls = []
    handles = [
        tiny_llama.hf_model.lm_head.register_forward_hook(lambda *a: calls.append("unembed")),
        tiny_llama.hf_model.model.layers[1].register_forward_pre_hook(
            lambda *a: calls.append("b1")
        ),
    ]
    try:
        collect_residuals(tiny_llama, PROMPTS, CollectConfig(layers=(0,)), show_progress=False)
        assert calls == []
        collect_residuals(
            tiny_llama, PROMPTS, CollectConfig(layers=(1,), hook="resid_post"), show_progress=False
        )
        assert "unembed" not in calls and "b1" in calls
    finally:
        for h in handles:
            h.remove()
    logits = tiny_llama.bridge(tiny_llama.chat.tokenize(["hi"]).input_ids)
    assert logits.shape[-1] == len(tiny_llama.tokenizer)  # the model still runs afterwards


def test_streaming_to_disk_equals_in_memory(tiny_llama, tmp_path):
    in_memory = collect_residuals(
        tiny_llama, PROMPTS, CollectConfig(batch_size=2), show_progress=False
    )
    streamed = collect_residuals(
        tiny_llama, PROMPTS, CollectConfig(batch_size=2), out=tmp_path / "r", show_progress=False
    )
    torch.testing.assert_close(streamed.acts, in_memory.acts)
    for folder in (tmp_path / "r", in_memory.save(tmp_path / "saved")):
        loaded = Residuals.load(folder)
        torch.testing.assert_close(loaded.acts, in_memory.acts)
        assert loaded.config == in_memory.config
        assert loaded.model["n_layers"] == tiny_llama.n_layers


def test_results_over_the_memory_budget_stream_to_the_cache(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("REFUSAL_LENS_CACHE", str(tmp_path))
    res = collect_residuals(
        tiny_llama, PROMPTS, CollectConfig(memory_budget_gb=1e-9), show_progress=False
    )
    files = list((tmp_path / "residuals").glob("*/residuals.safetensors"))
    assert len(files) == 1
    expected = collect_residuals(tiny_llama, PROMPTS, show_progress=False).acts
    torch.testing.assert_close(res.acts, expected)


def test_interrupted_collection_leaves_no_artifact(tiny_llama, tmp_path, monkeypatch):
    real = activations._batch_residuals
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(activations, "_batch_residuals", flaky)
    with pytest.raises(KeyboardInterrupt):
        collect_residuals(
            tiny_llama,
            PROMPTS,
            CollectConfig(batch_size=2),
            out=tmp_path / "r",
            show_progress=False,
        )
    assert not list((tmp_path / "r").glob("residuals.*"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": [5]}, RefusalLensError, r"layers 0\.\.1"),
        ({"layers": []}, RefusalLensError, "No layers"),
        ({"positions": [0]}, RefusalLensError, "count back from the last token"),
        ({"positions": [-500]}, RefusalLensError, "out of range"),
        ({"prompts": []}, PromptError, "empty"),
        ({"prompts": [""]}, PromptError, "Prompt 0 is empty"),
        ({"prompts": ["x " * 300]}, PromptError, "context window"),
        ({"batch_size": 0}, RefusalLensError, "batch_size must be positive"),
        ({"hook": "resid_side"}, RefusalLensError, "Unknown hook point"),
    ],
)
def test_bad_input_is_rejected_and_writes_nothing(tiny_llama, tmp_path, kwargs, error, match):
    prompts = kwargs.pop("prompts", PROMPTS)
    with pytest.raises(error, match=match):
        config = CollectConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        )
        collect_residuals(tiny_llama, prompts, config, out=tmp_path / "r", show_progress=False)
    assert not (tmp_path / "r").exists()


def test_bfloat16_models_collect_float32_close_to_float32_models(tiny_dirs):
    from refusal_lens.models import load_model

    bf16 = load_model(str(tiny_dirs["qwen2"]), device="cpu", dtype="bfloat16")
    fp32 = load_model(str(tiny_dirs["qwen2"]), device="cpu")
    assert bf16.dtype == torch.bfloat16
    low = collect_residuals(bf16, PROMPTS, show_progress=False).acts
    high = collect_residuals(fp32, PROMPTS, show_progress=False).acts
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, high, atol=0.1, rtol=0.05)
