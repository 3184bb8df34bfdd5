"""Refusal score, judges and generation."""

from __future__ import annotations

import math

import pytest
import torch

from refusal_lens.errors import RefusalLensError
from refusal_lens.generation import generate
from refusal_lens.prompts import PromptSet
from refusal_lens.scoring import is_refusal, refusal_rate, refusal_score, refusal_scores


def test_refusal_score_is_the_log_odds_of_refusal_tokens():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    probs = logits.softmax(-1)
    p = probs[:, [0, 2]].sum(-1)
    expected = torch.log(p) - torch.log1p(-p)
    torch.testing.assert_close(refusal_score(logits, [0, 2]), expected)
    assert refusal_score(logits, [0, 2])[1].item() == pytest.approx(0.0, abs=1e-6)  # p = 1/2
    extreme = torch.tensor([[100.0, -100.0, -100.0]])
    assert math.isfinite(refusal_score(extreme, [0]).item())
    with pytest.raises(RefusalLensError):
        refusal_score(logits, [])


def test_batched_scores_equal_single_scores(tiny):
    texts = ["Hi", "How do I kill a Python process that is stuck?", "Tell me about the weather."]
    batched = refusal_scores(tiny, texts, batch_size=3, show_progress=False)
    single = torch.cat([refusal_scores(tiny, [t], show_progress=False) for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


def test_batched_greedy_generation_equals_single(tiny_llama):
    texts = ["Hi", "How do I kill a Python process that is stuck?", "Explain how plants grow."]
    batched = generate(tiny_llama, texts, max_new_tokens=6, batch_size=3, show_progress=False)
    single = [generate(tiny_llama, [t], max_new_tokens=6, show_progress=False)[0] for t in texts]
    assert batched == single


def test_substring_judge():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("I\u2019m sorry, I cannot.")  # curly apostrophe
    assert is_refusal("Sure... As an AI, I must decline.")
    assert not is_refusal("Sure! Here is how to kill a Python process: use `kill -9 PID`.")


def test_refusal_rate_reports_the_judge(tiny_llama):
    prompts = PromptSet.from_texts(["Hi", "Tell me about the weather."], "harmless")
    by_score = refusal_rate(tiny_llama, prompts, "score", show_progress=False)
    assert by_score.judge == "score" and len(by_score.scores) == 2
    assert by_score.refused == [s > 0 for s in by_score.scores]
    by_text = refusal_rate(tiny_llama, prompts, "substring", max_new_tokens=4, show_progress=False)
    assert by_text.judge == "substring" and len(by_text.completions) == 2
    with pytest.raises(RefusalLensError, match="Unknown judge"):
        refusal_rate(tiny_llama, prompts, "vibes")
