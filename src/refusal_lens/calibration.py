"""Fit the first-token refusal score to a model's own refusals.

The score judge (:class:`~refusal_lens.scoring.ScoreJudge`) reads one number per prompt,
``log p(R) − log(1 − p(R))`` at the first answer position, where ``R`` are refusal-start
tokens derived from fixed phrases ("I cannot", "Sorry", ...), and calls a prompt refused when
the score is above 0, i.e. ``p(R) > 0.5``. Both choices assume how the model opens a refusal
and where greedy decoding turns. They held for the organism refusal-lens aligns itself, but a
model aligned by its makers can differ: Qwen2.5-Coder-0.5B-Instruct opens many refusals with
"As an AI language model", whose first token is in no phrase, and greedy decoding already
starts a refusal when "I" is the most likely token, at ``p(R)`` well below 0.5.

:func:`calibrate` fits both to what the model actually says, on prompts with greedy answers
and a verdict per answer (the substring judge's, or hand labels):

- **tokens**: the first answer tokens of its refusals that open at least ``min_share`` of
  them and rarely open an answer (``min_precision``), added to the phrase-derived ones;
- **threshold**: the score that best separates refused from answered prompts (balanced
  accuracy), the midpoint between two neighbouring scores.

The result is applied to a model handle (:meth:`Calibration.apply`). The score judge, the
direction selection's *induce* filter and everything else that thresholds the score then use
the model's own threshold: "adding r induces refusal" means the mean harmless prompt crosses
the score at which this model starts to refuse, not an absolute 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from typing import Any

from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle


@dataclass(frozen=True)
class Calibration:
    """A model's refusal-start tokens and score threshold, fitted to its own answers."""

    tokens: tuple[int, ...]
    threshold: float
    added: tuple[str, ...]  # tokens added from the model's refusals, decoded
    n_refused: int
    n_answered: int
    agreement_before: float  # phrase tokens, threshold 0, vs the verdicts
    agreement_after: float  # fitted tokens and threshold, vs the verdicts

    def apply(self, model: ModelHandle) -> ModelHandle:
        """A new handle on ``model``'s weights that scores and thresholds refusal with these
        tokens and this threshold; ``model`` itself is left as it was (other stages share it)."""
        return replace(model, refusal_tokens=list(self.tokens), refusal_threshold=self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**{**data, "tokens": tuple(data["tokens"]), "added": tuple(data["added"])})


def first_answer_ids(model: ModelHandle, prompts: list[str], answers: list[str]) -> list[int]:
    """The first token of each answer as the model would emit it after the prompt (``-1`` for an
    empty answer)."""
    ids = []
    for prompt, answer in zip(prompts, answers, strict=True):
        head = model.chat.encode(prompt)
        full = model.chat.encode(prompt, suffix=answer.lstrip())
        ok = answer.strip() and len(full) > len(head) and full[: len(head)] == head
        ids.append(full[len(head)] if ok else -1)
    return ids


def derive_tokens(
    first_ids: list[int],
    refused: list[bool],
    base: tuple[int, ...] | list[int],
    min_share: float = 0.1,
    min_precision: float = 0.8,
) -> tuple[int, ...]:
    """``base`` plus every first token that opens ≥ ``min_share`` of the refusals (at least 2)
    and whose openings are refusals at least ``min_precision`` of the time."""
    in_refusals = Counter(t for t, r in zip(first_ids, refused, strict=True) if r and t >= 0)
    everywhere = Counter(t for t in first_ids if t >= 0)
    n_refused = max(sum(refused), 1)
    added = [
        t
        for t, n in in_refusals.most_common()
        if n >= max(2, min_share * n_refused) and n / everywhere[t] >= min_precision
    ]
    return tuple(base) + tuple(t for t in added if t not in base)


def best_threshold(scores: list[float], refused: list[bool]) -> float:
    """The threshold with the best balanced accuracy for ``score > threshold ⇔ refused``:
    a midpoint between neighbouring scores; among ties, the one closest to 0."""
    pos, neg = sum(refused), len(refused) - sum(refused)
    if not pos or not neg:
        raise RefusalLensError(
            f"Calibration needs refused and answered prompts; got {pos} refused and {neg} "
            "answered. Pass harmful and harmless prompts together."
        )
    values = sorted(set(scores))
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in pairwise(values)]
    cuts.append(values[-1] + 1.0)

    def balanced(cut: float) -> float:
        hits = sum((s > cut) == r for s, r in zip(scores, refused, strict=True) if r)
        rejections = sum((s > cut) == r for s, r in zip(scores, refused, strict=True) if not r)
        return hits / pos + rejections / neg

    return max(cuts, key=lambda cut: (round(balanced(cut), 9), -abs(cut)))


def agreement(scores: list[float], refused: list[bool], threshold: float) -> float:
    return sum((s > threshold) == r for s, r in zip(scores, refused, strict=True)) / len(scores)


def calibrate(
    model: ModelHandle,
    prompts: list[str],
    answers: list[str],
    refused: list[bool],
    min_share: float = 0.1,
    min_precision: float = 0.8,
) -> Calibration:
    """Fit ``model``'s refusal tokens and threshold to its greedy ``answers`` to ``prompts``
    and their verdicts ``refused`` (see the module docstring). ``model`` is left unchanged."""
    from refusal_lens.scoring import refusal_scores

    if not prompts or not (len(prompts) == len(answers) == len(refused)):
        raise RefusalLensError(
            f"Calibration needs as many answers ({len(answers)}) and verdicts ({len(refused)}) "
            f"as prompts ({len(prompts)}), and at least one prompt."
        )
    base = tuple(model.refusal_tokens)
    first = first_answer_ids(model, prompts, answers)
    tokens = derive_tokens(first, refused, base, min_share, min_precision)
    before = refusal_scores(model, prompts, show_progress=False).tolist()
    old_threshold = getattr(model, "refusal_threshold", 0.0)
    try:
        model.refusal_tokens = list(tokens)
        after = refusal_scores(model, prompts, show_progress=False).tolist()
    finally:
        model.refusal_tokens = list(base)
    threshold = best_threshold(after, refused)
    decode = model.tokenizer.convert_ids_to_tokens
    return Calibration(
        tokens=tokens,
        threshold=round(threshold, 6),
        added=tuple(decode(list(tokens[len(base) :]))),
        n_refused=sum(refused),
        n_answered=len(refused) - sum(refused),
        agreement_before=agreement(before, refused, old_threshold),
        agreement_after=agreement(after, refused, threshold),
    )


__all__ = ["Calibration", "best_threshold", "calibrate", "derive_tokens", "first_answer_ids"]
