"""Tiny randomly initialised chat models of real HF architectures, built offline.

Each family gets a byte-level BPE tokenizer trained in memory on a small corpus, its family's
special tokens and a chat template in that family's style, and a 2-layer model from the HF
config class. Everything is saved as an ordinary HF model directory, so tests load it through
the same ``load_model(path)`` path as a real model.
"""

from __future__ import annotations

from pathlib import Path

import torch

LLAMA_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim "
    "+ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are Qwen, created by "
    "Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' "
    "else m['role']) + '\n' + m['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

FAMILIES = {
    "llama": {
        "special": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "template": LLAMA_TEMPLATE,
        "post": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    },
    "qwen2": {
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None,
        "eos": "<|im_end|>",
        "template": QWEN_TEMPLATE,
        "post": "<|im_end|>\n<|im_start|>assistant\n",
    },
    "gemma2": {
        "special": ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"],
        "bos": "<bos>",
        "eos": "<end_of_turn>",
        "template": GEMMA_TEMPLATE,
        "post": "<end_of_turn>\n<start_of_turn>model\n",
    },
}

_CORPUS = [
    "Tell me about the weather. How do I kill a Python process? Write a poem about the sea.",
    "I cannot help with that. I can't do it. I'm sorry, but I am unable to assist. Sorry!",
    "I apologize. I will not. I won't. Unfortunately, I am not able to. As an AI model...",
    "system user assistant model You are a helpful assistant. Explain how plants grow.",
    "The quick brown fox jumps over the lazy dog 0123456789 ,.;:!?'\"()[]{}<>-_/\\+=*&^%$#@~",
]


def build_tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=spec["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["special"][0],
        chat_template=spec["template"],
    )


def build_config(family: str, vocab_size: int, n_layers: int = 2):
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
    )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common)
    return Gemma2Config(**common, sliding_window=64)


def save_tiny_model(family: str, path: Path, seed: int = 0, n_layers: int = 2, **overrides) -> Path:
    """Build and save a tiny chat model of ``family`` into ``path`` (config ``overrides``,
    e.g. ``tie_word_embeddings=True``)."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(family)
    config = build_config(family, len(tokenizer), n_layers)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
