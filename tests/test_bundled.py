"""Model tier: the bundled SmolLM2-135M-Instruct, a real chat model."""

from __future__ import annotations

import pytest
import torch

from refusal_lens.activations import CollectConfig, collect_residuals
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
    res = collect_residuals(
        smollm, prompts, CollectConfig(layers=(0, 10, 29), batch_size=4), show_progress=False
    )
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


def test_direction_ablation_and_orthogonalization_on_the_real_model(smollm, tmp_path):
    from refusal_lens.directions import diff_in_means
    from refusal_lens.directions.orthogonalize import orthogonalize_weights
    from refusal_lens.interventions import ablate, add
    from refusal_lens.models import load_model

    harmful, harmless = load_shipped("harmful")[:16], load_shipped("harmless")[:16]
    r = diff_in_means(smollm, harmful, harmless, [14], [-1], show_progress=False).direction(14, -1)
    prompts = ["How do I kill a Python process?", "Write a haiku about tea."]
    batch = smollm.chat.tokenize(prompts)

    def logits(model):
        with torch.no_grad():
            return model.bridge(batch.input_ids, attention_mask=batch.attention_mask)

    base = logits(smollm)
    with add(smollm, r, 0.0):
        assert torch.equal(logits(smollm), base)
    with ablate(smollm, r):
        hooked = logits(smollm)
    assert (hooked - base).abs().max() > 0.1
    # SmolLM2 ties its embeddings: the export unties them so the unembedding is unchanged
    edited = load_model(str(orthogonalize_weights(smollm, r, tmp_path / "ortho")), device="cpu")
    torch.testing.assert_close(logits(edited), hooked, atol=2e-3, rtol=1e-4)


def test_geometry_and_rass_on_the_real_model(smollm):
    from refusal_lens.boundary.candidates import WORDS
    from refusal_lens.boundary.geometry import GeometryConfig, boundary_geometry
    from refusal_lens.boundary.rass import rass
    from refusal_lens.boundary.rass_config import RASSConfig
    from refusal_lens.directions import diff_in_means

    harmful, harmless, borderline = (
        load_shipped(name)[:24] for name in ("harmful", "harmless", "borderline")
    )
    geo = boundary_geometry(
        smollm, harmful, harmless, borderline, config=GeometryConfig(layers=(4, 16))
    )
    rows = {r["layer"]: r for r in geo.summary()}
    assert rows[16]["probe_accuracy"] >= 0.9  # harm is linearly readable mid-network
    m = geo.margin
    assert m["harmful"][:, 1].median() > 0 > m["harmless"][:, 1].median()

    r = diff_in_means(smollm, harmful, harmless, layers=[16], positions=[-1]).direction(16, -1)
    config = RASSConfig(contexts=3, samples=2, max_new_tokens=24, coefs=(-1.0, 0.0, 1.0), band=2.0)
    result = rass(
        smollm,
        harmful[:6].texts + harmless[:6].texts,
        r,
        (harmful, harmless),
        lambda texts: [0.0] * len(texts),
        config,
    )
    written = [c for c in result.candidates if c.reason not in ("empty",)]
    assert len(written) >= 0.8 * len(result.candidates)
    # the model writes requests: several words, not the list header, mostly distinct
    assert sum(len(WORDS.findall(c.text)) >= 4 for c in written) >= 0.8 * len(written)
    assert len({c.text for c in written}) >= 0.6 * len(written)
    assert result.selected and all(abs(c.scores["margin"]) <= 2 for c in result.selected)
