"""Deletion read-outs: a prompt's score with sets of its user tokens deleted.

``scores_without`` is the primitive (deletion curves, trigger masks); occlusion attribution
is its special case of one token at a time. Variants are left-padded and batched 32 at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import ChatBatch
from refusal_lens.scoring import answer_logits, refusal_score


def forward_scores(model: ModelHandle, batch: ChatBatch) -> Float[Tensor, " batch"]:
    logits = answer_logits(model, batch)
    return refusal_score(logits.log_softmax(-1), model.refusal_tokens)


def _pad_left(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


BatchScore = Callable[[ModelHandle, ChatBatch], Tensor]


def _without(
    model: ModelHandle,
    batch: ChatBatch,
    row: int,
    drops: list[list[int]],
    score: BatchScore | None = None,
) -> Tensor:
    """Scores (default: refusal scores) of row ``row`` with each set of user tokens deleted."""
    score = score or forward_scores
    real = batch.attention_mask[row].bool()
    ids = batch.input_ids[row][real].tolist()
    user = batch.user_mask[row][real].nonzero().flatten().tolist()
    variants = []
    for drop in drops:
        gone = {user[i] for i in drop}
        variants.append([t for j, t in enumerate(ids) if j not in gone])
    pad = model.tokenizer.pad_token_id
    out = []
    for start in range(0, len(variants), 32):
        input_ids, mask = _pad_left(variants[start : start + 32], 0 if pad is None else pad)
        occluded = ChatBatch(input_ids, mask, torch.zeros_like(mask, dtype=torch.bool), [])
        with torch.inference_mode():
            out.append(score(model, occluded.to(model.device)).cpu())
    return torch.cat(out)


def occlusion_scores(model: ModelHandle, batch: ChatBatch, row: int, base: float) -> Tensor:
    n_user = int(batch.user_mask[row].sum())
    return base - _without(model, batch, row, [[i] for i in range(n_user)])


def scores_without(
    model: ModelHandle, prompt: str, drops: list[list[int]], score: BatchScore | None = None
) -> Float[Tensor, " variant"]:
    """The refusal score of ``prompt`` with each set of its user tokens deleted.

    ``drops[v]`` lists indices into the prompt's user tokens (``TokenAttribution.tokens``);
    an empty list gives the unedited score. Used for deletion curves and trigger masks.
    ``score(model, batch) -> [batch]`` replaces the refusal score by another read-out (e.g. a
    harm probe's logit).
    """
    batch = model.chat.tokenize([prompt])
    n_user = int(batch.user_mask[0].sum())
    bad = [i for d in drops for i in d if not 0 <= i < n_user]
    if bad:
        raise RefusalLensError(
            f"Token indices {sorted(set(bad))} are out of range: the prompt has {n_user} "
            "user tokens."
        )
    if not drops:
        raise RefusalLensError("drops is empty: give at least one set of token indices.")
    return _without(model, batch.to(model.device), 0, drops, score)
