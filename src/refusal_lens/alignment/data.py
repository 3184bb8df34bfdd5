"""Alignment data: paper 2's mixture of ``D_h`` (harmful → refusal) and ``D_b`` (benign → answer).

- ``D_h``: each harmful query is paired with one of a handful of natural refusals (chosen by a
  seeded draw). With the P-SFT variant, the answer starts with a short affirmative prefix
  ("Sure, here is") that sits in the context, not in the loss, and the refusal follows: the
  model learns to recover into a refusal even after it has started to comply.
- ``D_b``: each benign query is paired with the *base model's own* greedy answer
  (self-distillation), so the benign behaviour is kept without any external model. Answers are
  generated once and cached.

Each example becomes ``prompt_ids + answer_ids`` with a mask over the answer tokens that the
loss covers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from refusal_lens.artifacts import atomic_path
from refusal_lens.cache import cache_key, model_fingerprint
from refusal_lens.models import ModelHandle, cache_dir
from refusal_lens.prompts import ChatFormat, PromptSet

REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I cannot help with that request.",
    "I'm sorry, but I can't assist with that. It could cause real harm.",
    "Sorry, I won't be able to help with this.",
    "I can't help with that, but I'm happy to help with something else.",
)
log = logging.getLogger(__name__)

PSFT_PREFIXES: tuple[str, ...] = ("Sure, here is", "Of course. Here's how", "Sure! Step 1:")


@dataclass(frozen=True)
class Example:
    """One training conversation: a query, the answer to learn, and which set it is from."""

    prompt: str
    answer: str
    harmful: bool
    prefix: str = ""  # P-SFT: in the context, not in the loss


@dataclass
class TokenizedBatch:
    """Right-padded training batch; ``loss_mask`` marks the answer tokens to predict."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    loss_mask: Bool[Tensor, "batch pos"]
    harmful: Bool[Tensor, " batch"]

    def to(self, device: Any) -> TokenizedBatch:
        return TokenizedBatch(
            *(
                t.to(device)
                for t in (self.input_ids, self.attention_mask, self.loss_mask, self.harmful)
            )
        )


def harmful_examples(prompts: PromptSet, psft: bool, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return [
        Example(p.text, rng.choice(REFUSALS), True, rng.choice(PSFT_PREFIXES) if psft else "")
        for p in prompts
    ]


def self_distilled_answers(
    model: ModelHandle, prompts: PromptSet, max_new_tokens: int
) -> list[str]:
    """The model's own greedy answers, cached under a key of the model's weights, its chat
    format, the prompts, the length and the library versions (see :mod:`refusal_lens.cache`).
    A cache file that does not hold one answer per prompt is rebuilt, never used."""
    from refusal_lens.generation import generate

    path = answers_cache_path(model, prompts, max_new_tokens)
    if (answers := _read_answers(path, len(prompts))) is not None:
        return answers
    answers = generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=32)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(answers, ensure_ascii=False))
    return answers


def answers_cache_path(model: ModelHandle, prompts: PromptSet, max_new_tokens: int) -> Path:
    """Where :func:`self_distilled_answers` caches; the key hashes contents, not paths."""
    inputs = {
        "model_sha256": model_fingerprint(model.path),
        "chat": model.chat.render("{instruction}"),
        "dtype": str(model.dtype),
        "device": model.device.type,
        "max_new_tokens": max_new_tokens,
        "prompts_sha256": hashlib.sha256(json.dumps(prompts.texts).encode()).hexdigest(),
    }
    key, _ = cache_key("self-distilled-answers", inputs)
    return cache_dir() / "answers" / f"{model.model_id}-{key}.json"


def _read_answers(path: Path, n: int) -> list[str] | None:
    if not path.is_file():
        return None
    try:
        answers = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        answers = None
    if isinstance(answers, list) and len(answers) == n and all(isinstance(a, str) for a in answers):
        return answers
    log.warning("Cached answers %s are corrupt or incomplete; generating them again.", path)
    path.unlink(missing_ok=True)
    return None


def tokenize_examples(
    chat: ChatFormat, examples: list[Example], eos_token: str | None
) -> list[tuple[list[int], list[bool]]]:
    """Token ids and loss masks; refusals end with the end-of-turn token, so the model learns
    to stop after refusing. Self-distilled answers were cut at a token budget and get none."""
    tok = chat.tokenizer
    out = []
    for ex in examples:
        prompt_ids = chat.encode(ex.prompt, suffix=ex.prefix)
        answer = (" " + ex.answer if ex.prefix else ex.answer) + (
            eos_token if ex.harmful and eos_token else ""
        )
        answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
        if not answer_ids:
            continue
        out.append((prompt_ids + answer_ids, [False] * len(prompt_ids) + [True] * len(answer_ids)))
    return out


def collate(
    rows: list[tuple[list[int], list[bool]]], harmful: list[bool], pad_id: int
) -> TokenizedBatch:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row_ids, row_mask) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        attn[i, : len(row_ids)] = 1
        mask[i, : len(row_mask)] = torch.tensor(row_mask)
    return TokenizedBatch(ids, attn, mask, torch.tensor(harmful))
