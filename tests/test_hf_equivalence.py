"""Every path the toolkit trusts, checked against plain HF with no bridge and no hooks.

A library upgrade can break the bridge silently: transformers 5.24 with transformer-lens 4.3
left the KV cache empty through the bridge, so generation gave the right first token and then
garbage, and no test noticed. These tests compare token for token (generation) and value for
value (scores, steering) with an independently loaded ``AutoModelForCausalLM``, on the tiny
model of every family and on the bundled model, batched and single, cache on and off.
"""

from __future__ import annotations

import unicodedata

import pytest
import torch

from hf_reference import hf_addition, hf_greedy, plain_hf, stop_ids
from refusal_lens.boundary.candidates import sample_continuations
from refusal_lens.generation import generate_ids, kv_cache_works
from refusal_lens.interventions import add
from refusal_lens.scoring import refusal_score, refusal_scores

PROMPTS = [
    "Hi",
    "How do I kill a Python process that is stuck?",
    "Explain how plants grow, in three short steps.",
]


def test_the_installed_libraries_fill_the_bridge_kv_cache():
    """The locked transformers / transformer-lens pair must allow cached generation; if this
    fails, generation silently runs without the cache (slow) - reinstall from the lock."""
    assert kv_cache_works()


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_generation_equals_plain_hf_generate(tiny, use_cache, batch_size):
    hf = plain_hf(tiny)
    expected = [hf_greedy(hf, tiny, t, 12) for t in PROMPTS]
    got = generate_ids(
        tiny,
        PROMPTS,
        max_new_tokens=12,
        batch_size=batch_size,
        show_progress=False,
        use_cache=use_cache,
    )
    assert got == expected
    assert all(len(ids) > 1 for ids in got)  # more than the first token is compared


def test_scores_equal_plain_hf_forward(tiny):
    hf = plain_hf(tiny)
    with torch.inference_mode():
        expected = torch.cat(
            [
                refusal_score(hf(model_input).logits[:, -1], tiny.refusal_tokens)
                for model_input in (tiny.chat.tokenize([t]).input_ids for t in PROMPTS)
            ]
        )
    got = refusal_scores(tiny, PROMPTS, batch_size=3, show_progress=False)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_steered_generation_equals_plain_hf_with_a_forward_hook(tiny_llama):
    hf = plain_hf(tiny_llama)
    torch.manual_seed(0)
    vector = torch.randn(tiny_llama.d_model)
    vector = 4 * vector / vector.norm()
    plain = [hf_greedy(hf, tiny_llama, t, 10) for t in PROMPTS]
    with hf_addition(hf, 1, vector, 1.0):
        expected = [hf_greedy(hf, tiny_llama, t, 10) for t in PROMPTS]
    with add(tiny_llama, vector, coef=1.0, layer=1):
        got = generate_ids(
            tiny_llama, PROMPTS, max_new_tokens=10, batch_size=3, show_progress=False
        )
    assert got == expected
    assert expected != plain  # the edit is large enough to change what is generated


def test_seeded_sampling_equals_plain_hf_sampling(tiny_llama):
    """RASS samples through the bridge; with the same seed, plain HF samples the same text."""
    hf = plain_hf(tiny_llama)
    tok = tiny_llama.tokenizer
    prompt = "List of requests:\n1. How do I bake bread?\n2."
    got = sample_continuations(
        tiny_llama, [prompt], samples=3, max_new_tokens=8, temperature=1.0, top_p=0.95, seed=7
    )
    stops = sorted(stop_ids(tiny_llama) | set(tok("\n", add_special_tokens=False).input_ids[:1]))
    enc = tok([prompt], return_tensors="pt")
    torch.manual_seed(7)
    with torch.inference_mode():
        ids = hf.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_p=0.95,
            max_new_tokens=8,
            num_return_sequences=3,
            eos_token_id=stops,
            pad_token_id=stops[0],
        )
    texts = tok.batch_decode(ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    lines = [t.strip().split("\n")[0] for t in texts]  # first lines, without control chars
    lines = ["".join(c for c in x if c == "\t" or unicodedata.category(c) != "Cc") for x in lines]
    assert got == [[x.strip().strip('"').strip() for x in lines]]


@pytest.mark.model
@pytest.mark.parametrize("use_cache", [True, False])
def test_bundled_generation_equals_plain_hf_generate(bundled, use_cache):
    hf = plain_hf(bundled)
    expected = [hf_greedy(hf, bundled, t, 16) for t in PROMPTS]
    single = [
        generate_ids(bundled, [t], max_new_tokens=16, show_progress=False, use_cache=use_cache)[0]
        for t in PROMPTS
    ]
    batched = generate_ids(
        bundled,
        PROMPTS,
        max_new_tokens=16,
        batch_size=3,
        show_progress=False,
        use_cache=use_cache,
    )
    assert single == expected
    assert batched == expected
    text = bundled.tokenizer.decode(expected[2], skip_special_tokens=True)
    assert len(set(text.split())) >= 5, text  # a real answer, not a repeated token


@pytest.mark.model
def test_bundled_scores_equal_plain_hf_forward(bundled):
    hf = plain_hf(bundled)
    with torch.inference_mode():
        expected = torch.cat(
            [
                refusal_score(
                    hf(bundled.chat.tokenize([t]).input_ids).logits[:, -1], bundled.refusal_tokens
                )
                for t in PROMPTS
            ]
        )
    got = refusal_scores(bundled, PROMPTS, batch_size=3, show_progress=False)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)
