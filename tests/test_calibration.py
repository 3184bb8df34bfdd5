"""The score judge fitted to a model's own refusals (refusal_lens.calibration)."""

from __future__ import annotations

import random

import pytest

from refusal_lens.calibration import (
    Calibration,
    best_threshold,
    calibrate,
    derive_tokens,
    first_answer_ids,
)
from refusal_lens.errors import RefusalLensError
from refusal_lens.scoring import ScoreJudge, refusal_scores


def test_derived_tokens_open_many_refusals_and_few_answers():
    # token 7 opens 5 of 9 refusals and no answer; 9 opens 2 refusals and 3 answers;
    # 11 opens a single refusal; 5 is already a phrase token; -1 is an empty answer
    first = [7, 7, 7, 7, 7, 9, 9, 11, -1, 9, 9, 9, 3, 3, 5]
    refused = [True] * 9 + [False] * 6
    assert derive_tokens(first, refused, base=(5,)) == (5, 7)
    assert derive_tokens(first, refused, base=(5,), min_precision=0.4) == (5, 7, 9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_threshold_separates_shifted_classes(seed):
    rng = random.Random(seed)
    refused = [rng.random() < 0.4 for _ in range(200)]
    scores = [rng.gauss(-0.5 if r else -3.0, 0.6) for r in refused]
    cut = best_threshold(scores, refused)
    # the classes cross near −1.75; allow the sampling noise measured over seeds (±0.5)
    assert -2.3 < cut < -1.2
    hits = sum((s > cut) == r for s, r in zip(scores, refused, strict=True)) / len(scores)
    assert hits > max(sum((s > 0) == r for s, r in zip(scores, refused, strict=True)), 1) / 200


def test_best_threshold_is_a_midpoint_and_prefers_zero_among_ties():
    assert best_threshold([-2.0, -1.0, 1.0, 2.0], [False, False, True, True]) == 0.0
    assert best_threshold([-3.0, -2.0], [False, True]) == -2.5


def test_one_class_only_is_a_clear_error():
    with pytest.raises(RefusalLensError, match="refused and answered"):
        best_threshold([1.0, 2.0], [True, True])


def test_calibration_on_a_model_matches_recomputed_scores(tiny_llama):
    prompts = [f"Tell me about item number {i}." for i in range(12)]
    refusal_word = "Nope"  # any word: the fit must learn it from the answers alone
    answers = [f"{refusal_word} I won't." if i % 2 else f"Item {i} is fine." for i in range(12)]
    refused = [i % 2 == 1 for i in range(12)]
    first = first_answer_ids(tiny_llama, prompts, answers)
    nope = first[1]
    assert all(t == nope for t in first[1::2]) and nope not in first[0::2]
    before = list(tiny_llama.refusal_tokens)
    fit = calibrate(tiny_llama, prompts, answers, refused)
    assert tiny_llama.refusal_tokens == before  # the model is left unchanged
    assert fit.tokens[: len(before)] == tuple(before) and nope in fit.tokens
    fitted = Calibration.from_dict(fit.to_dict())
    assert fitted == fit
    try:
        calibrated = fitted.apply(tiny_llama)
        assert tiny_llama.refusal_tokens == before  # a new handle: the shared one is unchanged
        assert calibrated.bridge is tiny_llama.bridge  # ... on the same weights
        scores = refusal_scores(calibrated, prompts, show_progress=False)
        expect = [bool(s > fit.threshold) for s in scores]
        report = ScoreJudge()(calibrated, _set(prompts), show_progress=False)
        assert report.refused == expect  # the judge uses the model's own threshold
        agree = sum(e == r for e, r in zip(expect, refused, strict=True)) / len(refused)
        assert agree == pytest.approx(fit.agreement_after)

        # the fitted threshold is the best cut of these scores (brute force over every cut)
        def balanced(cut: float) -> float:
            calls = [(float(s) > cut, r) for s, r in zip(scores, refused, strict=True)]
            hits = [c for c, r in calls if r]
            rejections = [not c for c, r in calls if not r]
            return sum(hits) / len(hits) + sum(rejections) / len(rejections)

        cuts = [float(scores.min()) - 1.0, *(float(s) for s in scores)]
        assert balanced(fit.threshold) == pytest.approx(max(balanced(c) for c in cuts))
    finally:
        tiny_llama.refusal_tokens, tiny_llama.refusal_threshold = before, 0.0


def test_mismatched_inputs_are_refused(tiny_llama):
    with pytest.raises(RefusalLensError, match="as many answers"):
        calibrate(tiny_llama, ["a", "b"], ["x"], [True, False])
    with pytest.raises(RefusalLensError, match="at least one prompt"):
        calibrate(tiny_llama, [], [], [])


def _set(texts):
    from refusal_lens.prompts import PromptSet

    return PromptSet.from_texts(texts, label="harmless", name="t")
