"""Batched greedy generation from chat-formatted prompts.

Generation runs the HF model inside the bridge, whose modules are the bridge's own, so any
hooks active on ``model.bridge`` (e.g. an intervention context) also apply while generating.
"""

from __future__ import annotations

import torch

from refusal_lens.models import ModelHandle
from refusal_lens.progress import progress
from refusal_lens.prompts import PromptSet, length_sorted_batches


def generate(
    model: ModelHandle,
    prompts: PromptSet | list[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    show_progress: bool = True,
) -> list[str]:
    """Greedy completions, one per prompt, in the prompts' order (special tokens removed)."""
    from transformers import GenerationConfig

    texts = prompts.texts if isinstance(prompts, PromptSet) else list(prompts)
    lengths = model.chat.token_lengths(texts)
    hf = model.hf_model
    eos = hf.generation_config.eos_token_id or model.tokenizer.eos_token_id
    pad = model.tokenizer.pad_token_id
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad if pad is not None else eos,
    )
    out: list[str] = [""] * len(texts)
    for idx in progress(length_sorted_batches(lengths, batch_size), "generate", show_progress):
        batch = model.chat.tokenize([texts[i] for i in idx]).to(model.device)
        with torch.inference_mode():
            ids = hf.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                generation_config=config,
            )
        new = ids[:, batch.input_ids.shape[1] :]
        for i, text in zip(
            idx, model.tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
        ):
            out[i] = text.strip()
    return out
