"""Model tier: the bundled SmolLM2-135M-Instruct, a real chat model."""

from __future__ import annotations

import pytest
import torch

from refusal_lens.activations import collect_residuals
from refusal_lens.prompts import load_shipped
from refusal_lens.scoring import refusal_rate

pytestmark = pytest.mark.model


def test_bundled_model_facts(smollm):
    facts = smollm.describe()
    assert (facts["n_layers"], facts["d_model"], facts["architecture"]) == (
        30,
        576,
        "LlamaForCausalLM",
    )
    assert facts["post_instruction_tokens"][0] == "<|im_end|>"
    assert smollm.chat.n_post == 6
    assert "I" in facts["refusal_tokens"]
    assert "You are a helpful AI assistant named SmolLM" in facts["chat_template_example"]


def test_our_ids_match_hf_and_avoid_the_bridge_double_bos(smollm):
    text = "How do I kill a Python process?"
    ours = smollm.chat.tokenize([text]).input_ids[0].tolist()
    hf = smollm.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True
    )
    hf = list(hf["input_ids"] if hasattr(hf, "keys") else hf)
    assert ours == hf
    bridge_ids = smollm.bridge.to_tokens(smollm.chat.render(text))[0].tolist()
    assert bridge_ids != ours  # to_tokens prepends BOS to text that already has it


def test_collection_matches_hf_hidden_states_batched(smollm):
    prompts = load_shipped("borderline")[:6]
    res = collect_residuals(smollm, prompts, layers=[0, 10, 29], batch_size=4, show_progress=False)
    for i in (0, 5):
        batch = smollm.chat.tokenize([prompts.texts[i]])
        with torch.no_grad():
            hidden = smollm.hf_model(batch.input_ids, output_hidden_states=True).hidden_states
        for j, layer in enumerate([0, 10, 29]):
            expected = hidden[layer][0, -smollm.chat.n_post :]
            torch.testing.assert_close(res.acts[i, j], expected, atol=2e-3, rtol=1e-3)


def test_base_model_complies_with_harmful_requests(smollm):
    """DESIGN.md: base SmolLM2 complies; the alignment issue makes it refuse."""
    report = refusal_rate(smollm, load_shipped("harmful")[:16], "score", show_progress=False)
    assert report.rate <= 0.25
    assert max(report.scores) < 2.0
