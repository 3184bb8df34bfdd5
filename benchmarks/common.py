"""Shared by the benchmarks: full-size random architectures, device timing helpers, and the
experiments' shared helpers (arguments, paths, smoke mode: ``experiments/common.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]


def experiments_common() -> ModuleType:
    """``experiments/common.py``, imported by its path as ``experiments_common`` (both folders
    have a ``common.py``, so neither folder goes on ``sys.path`` for the other)."""
    name = "experiments_common"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "common.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# Real architectures at full size, randomly initialised (no weights can be downloaded).
RANDOM_ARCHS = {
    "llama3-8b": dict(
        family="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
    ),
    "qwen2.5-1.5b": dict(
        family="qwen2",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-0.5b": dict(
        family="qwen2",
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    # small enough for 10k prompts on 2 CPU cores, wide enough that holding every prompt's
    # residuals would show (benchmarks/memory_scale.py); Llama 2's vocabulary size
    "llama-512x4": dict(
        family="llama",
        hidden_size=512,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=32000,
    ),
    # the same path at toy size, for --smoke runs on a CPU
    "tiny": dict(
        family="llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
    ),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_handle(
    arch: str,
    device: str,
    dtype: torch.dtype,
    with_baseline: bool = True,
    baseline_attn: str | None = None,
):
    """A ModelHandle around a randomly initialised full-size architecture, and (optionally)
    a plain HF copy for comparison, with ``baseline_attn`` attention (default: HF's)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from refusal_lens.models import wrap_hf_model

    build_tokenizer = experiments_common().tiny_models().build_tokenizer
    spec = dict(RANDOM_ARCHS[arch])
    family = spec.pop("family")
    config = (LlamaConfig if family == "llama" else Qwen2Config)(
        max_position_embeddings=4096, **spec
    )
    torch.manual_seed(0)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="eager")
    hf.eval()
    baseline = None
    if with_baseline:  # a plain HF copy with default attention, made before the bridge wraps hf
        with torch.device(device):  # initialising 8B parameters on a CPU takes minutes
            kwargs = {"attn_implementation": baseline_attn} if baseline_attn else {}
            baseline = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs).eval()
        baseline.load_state_dict(hf.state_dict())
    return wrap_hf_model(hf, build_tokenizer(family), name=f"random-{arch}"), baseline
