"""Batched greedy generation from chat-formatted prompts.

Generation runs the HF model inside the bridge, whose modules are the bridge's own, so any
hooks active on ``model.bridge`` (e.g. an intervention context) also apply while generating.

The KV cache and library versions: transformers 5.24 renamed the attention modules' cache
keyword from ``past_key_values`` to ``cache``; transformer-lens 4.3's ``AttentionBridge`` reads
only the old name, so through the bridge the cache is never filled and every token after the
first is generated from itself alone (``'1-----------'``). :func:`kv_cache_works` tells whether
the installed pair is safe; when it is not, generation runs without the cache (correct, slower)
and says so once. The lock pins a safe pair; ``tests/test_generation.py`` compares every path
with plain HF ``generate`` token for token.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from refusal_lens.models import ModelHandle
from refusal_lens.models.attention import native_attention
from refusal_lens.progress import progress
from refusal_lens.prompts import PromptSet, length_sorted_batches

log = logging.getLogger(__name__)

# First transformers release whose attention modules pass the cache as ``cache=``.
CACHE_KWARG_RENAMED = (5, 24)


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@functools.cache
def kv_cache_works() -> bool:
    """Whether generation through the bridge may use the KV cache with the installed libraries.

    False when transformers passes the cache as ``cache=`` and the bridge's attention reads only
    ``past_key_values`` (transformers >= 5.24 with transformer-lens 4.3).
    """
    import inspect

    import transformers
    from transformer_lens.model_bridge.generalized_components import attention

    if _release(transformers.__version__) < CACHE_KWARG_RENAMED:
        return True
    source = inspect.getsource(attention.AttentionBridge._update_kv_cache)
    if '"cache"' in source or "'cache'" in source:
        return True
    log.warning(
        "transformers %s passes the KV cache as `cache=`, which this transformer-lens does not "
        "read: generating without the cache (correct, slower). Reinstall from the lock "
        "(`bash scripts/setup.sh`) for the tested versions.",
        transformers.__version__,
    )
    return False


def resolve_use_cache(use_cache: bool | None) -> bool:
    """``None`` means: use the cache when the installed libraries fill it correctly."""
    return kv_cache_works() if use_cache is None else bool(use_cache)


def hf_generate(model: ModelHandle, use_cache: bool | None = None, **kwargs: Any) -> torch.Tensor:
    """``generate`` on the HF model inside the bridge (bridge hooks apply), cache resolved."""
    with torch.inference_mode(), native_attention(model):
        return model.hf_model.generate(use_cache=resolve_use_cache(use_cache), **kwargs)


def generate_ids(
    model: ModelHandle,
    prompts: PromptSet | list[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    show_progress: bool = True,
    use_cache: bool | None = None,
) -> list[list[int]]:
    """Greedy new token ids per prompt, in the prompts' order, cut after the first stop token."""
    from transformers import GenerationConfig

    texts = prompts.texts if isinstance(prompts, PromptSet) else list(prompts)
    lengths = model.chat.token_lengths(texts)
    eos = model.hf_model.generation_config.eos_token_id or model.tokenizer.eos_token_id
    stops = {eos} if isinstance(eos, int) else set(eos)
    pad = model.tokenizer.pad_token_id
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad if pad is not None else next(iter(stops)),
    )
    out: list[list[int]] = [[] for _ in texts]
    for idx in progress(length_sorted_batches(lengths, batch_size), "generate", show_progress):
        batch = model.chat.tokenize([texts[i] for i in idx]).to(model.device)
        ids = hf_generate(
            model,
            use_cache,
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            generation_config=config,
        )
        for i, row in zip(idx, ids[:, batch.input_ids.shape[1] :].tolist(), strict=True):
            out[i] = cut_at_stop(row, stops)
    return out


def cut_at_stop(ids: list[int], stops: set[int]) -> list[int]:
    """``ids`` up to and including the first stop token (what follows it is padding)."""
    for k, token in enumerate(ids):
        if token in stops:
            return ids[: k + 1]
    return ids


def generate(
    model: ModelHandle,
    prompts: PromptSet | list[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    show_progress: bool = True,
    use_cache: bool | None = None,
) -> list[str]:
    """Greedy completions, one per prompt, in the prompts' order (special tokens removed)."""
    ids = generate_ids(model, prompts, max_new_tokens, batch_size, show_progress, use_cache)
    return [t.strip() for t in model.tokenizer.batch_decode(ids, skip_special_tokens=True)]
