"""Safety-alignment fine-tuning (paper 2): SFT on ``α·D_h + (1−α)·D_b``.

The loss is paper 2's mixture,

    L = α · mean_{x∈D_h} l(x, y_refuse) + (1 − α) · mean_{x∈D_b} l(x, y_answer),

where ``l`` is the mean next-token loss over the answer tokens only. In a mixed batch each
example carries the weight that makes the batch mean an unbiased estimate of ``L``. Logits are
computed only at the answer positions: the model body runs on the whole sequence, and the
unembedding runs on the few hidden states whose next token is an answer token.

The result is a plain HF model directory (LoRA weights merged in), written atomically into the
cache under a key that hashes the config and the data, so an identical request returns the
existing model and an interrupted run never leaves a directory that loads.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from refusal_lens.alignment.data import (
    Example,
    TokenizedBatch,
    collate,
    harmful_examples,
    self_distilled_answers,
    tokenize_examples,
)
from refusal_lens.artifacts import (
    artifact_meta,
    atomic_dir,
    json_writer,
    local_path,
    read_meta,
    save_artifact,
    write_json,
)
from refusal_lens.cache import cache_key, model_fingerprint, usable_entry, write_manifest
from refusal_lens.configs import StageConfig, check_positive, check_range
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle, cache_dir
from refusal_lens.models.memory import allocator_returns_memory
from refusal_lens.progress import progress
from refusal_lens.prompts import PromptSet, load_prompts, normalize_text

log = logging.getLogger(__name__)
ALIGN_RESULT_FILE = "alignment.json"


@dataclass(frozen=True)
class AlignConfig(StageConfig):
    """Settings of one alignment run; saved as ``align.json`` in the model directory."""

    harmful: str = "harmful"  # D_h queries: a prompt spec (the shipped harmful set)
    benign: str = "alpaca"  # D_b queries: a prompt spec ("alpaca": its first rows)
    n_harmful: int = 160
    n_benign: int = 200
    alpha: float = 0.5
    variant: str = "sft"  # "sft" or "psft"
    mode: str = "lora"  # "lora" or "full"
    lora_rank: int = 16
    lora_alpha: int = 32
    lr: float = 5e-4
    epochs: int = 1
    batch_size: int = 8
    answer_tokens: int = 24
    seed: int = 0

    @classmethod
    def organism(cls, alpha: float = 0.5, **changes: Any) -> AlignConfig:
        """The project's model organism: paper 2's SFT at ``alpha`` (α = 0.5 by default) with
        LoRA, 160 harmful and 200 Alpaca prompts, one epoch. The README's tables, the
        experiments and ``refusal-lens run`` all align with this recipe."""
        return cls(alpha=alpha, **changes)

    def validate(self) -> None:
        check_range("alpha", self.alpha, 0.0, 1.0)
        if self.variant not in ("sft", "psft"):
            raise RefusalLensError(f"variant must be 'sft' or 'psft', not {self.variant!r}.")
        if self.mode not in ("lora", "full"):
            raise RefusalLensError(f"mode must be 'lora' or 'full', not {self.mode!r}.")
        for name in ("n_harmful", "n_benign", "epochs", "batch_size", "answer_tokens", "lr"):
            check_positive(name, getattr(self, name))


@dataclass
class AlignResult:
    """An aligned model: its directory (load it with ``load_model(str(result.path))``), the
    base model it came from, the recipe and the training statistics."""

    path: Path
    base: str
    config: AlignConfig
    stats: dict[str, Any]

    def save(self, folder: str | Path) -> Path:
        """``alignment.json``: where the aligned model lies, its base, recipe and statistics."""
        meta = artifact_meta(
            "alignment", self.config, path=self.path, base=self.base, stats=self.stats
        )
        return save_artifact(folder, {ALIGN_RESULT_FILE: json_writer(meta)})

    @classmethod
    def load(cls, folder: str | Path) -> AlignResult:
        meta = read_meta(folder, ALIGN_RESULT_FILE, "alignment")
        path = local_path(meta["path"])
        return cls(path, meta["base"], AlignConfig.from_dict(meta["config"]), meta["stats"])


def benign_prompts(config: AlignConfig) -> PromptSet:
    return load_prompts(config.benign)[: config.n_benign]


def training_prompts(config: AlignConfig) -> tuple[PromptSet, PromptSet]:
    """``(D_h queries, D_b queries)``; either may not be empty."""
    harmful = load_prompts(config.harmful)[: config.n_harmful]
    benign = benign_prompts(config)
    for name, prompts in (("D_h (harmful)", harmful), ("D_b (benign)", benign)):
        if len(prompts) == 0:
            raise RefusalLensError(f"{name} is empty; give it at least one prompt.")
    return harmful, benign


def example_weights(harmful: Tensor, alpha: float, n_h: int, n_b: int) -> Tensor:
    """Per-example weights whose batch mean estimates α·mean_h + (1−α)·mean_b."""
    n = n_h + n_b
    w_h = alpha * n / max(n_h, 1)
    w_b = (1 - alpha) * n / max(n_b, 1)
    return torch.where(harmful, w_h, w_b).to(torch.float32)


def answer_loss(model: Any, batch: TokenizedBatch) -> Tensor:
    """Mean next-token loss over the answer tokens of each example: shape ``[batch]``, on the
    batch's device (a model split by a device map ends on another device than it starts)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, base.base_model_prefix)
    hidden = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    target_mask = batch.loss_mask[:, 1:].to(hidden.device)
    h = hidden[:, :-1][target_mask]  # hidden states whose next token is an answer token
    logits = base.get_output_embeddings()(h).float()
    if cap := getattr(base.config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cap) * cap
    targets = batch.input_ids[:, 1:].to(logits.device)[target_mask.to(logits.device)]
    token_loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    rows = torch.arange(batch.input_ids.shape[0], device=target_mask.device)
    row = rows.unsqueeze(1).expand_as(target_mask)[target_mask].to(token_loss.device)
    per_example = torch.zeros(batch.input_ids.shape[0], device=token_loss.device)
    per_example.index_add_(0, row, token_loss)
    counts = target_mask.sum(1).clamp(min=1).to(token_loss.device)
    return (per_example / counts).to(batch.input_ids.device)


CHECKPOINTING = True  # see trainable_model

# Config fields that name where data comes from; the key hashes the data itself instead.
_LOCATION_FIELDS = ("harmful", "benign")


def data_key(config: AlignConfig, base_model: str, device: str, dtype: str, examples: list) -> str:
    """Key of an aligned model: the settings that change the weights (the base model's dtype
    among them), the base model's weights (``base_model`` is its fingerprint), the device
    kind, the examples' contents, the recipe's version and the library versions. Paths and
    spec strings do not enter it."""
    settings = {k: v for k, v in asdict(config).items() if k not in _LOCATION_FIELDS}
    settings["dtype"] = dtype
    examples_sha = hashlib.sha256(json.dumps(examples, ensure_ascii=False).encode()).hexdigest()
    inputs = {
        "settings": settings,
        "base_model_sha256": base_model,
        "device": device,
        "examples_sha256": examples_sha,
    }
    return cache_key("aligned-model", inputs)[0]


def align(
    model: ModelHandle,
    config: AlignConfig | None = None,
    out: Path | None = None,
    release: Callable[[], None] | None = None,
) -> AlignResult:
    """Align ``model`` (the base) with ``config``; the aligned copy goes to ``out``, or to a
    cache entry keyed by the recipe and the data, which an identical request reuses.

    Training loads a trainable copy of the base's weights from its folder; the base's own
    weights are only needed for its answers before that. ``release``, when given, is called
    in between, with this function holding no reference to them: a caller that drops its
    handle there (``Run.release``) keeps one copy in memory instead of two."""
    config = config or AlignConfig.organism()
    check_trainable_placement(model)
    torch.manual_seed(config.seed)
    harmful, benign = training_prompts(config)

    # 1. data: refusals for D_h, the base model's own answers for D_b
    examples = harmful_examples(harmful, config.variant == "psft", config.seed)
    answers = self_distilled_answers(model, benign, config.answer_tokens)
    examples += [Example(p.text, a, False) for p, a in zip(benign, answers, strict=True) if a]
    dtype = str(model.dtype).removeprefix("torch.")
    triples = [(e.prompt, e.prefix, e.answer) for e in examples]
    key = data_key(config, model_fingerprint(model.path), model.device.type, dtype, triples)
    name = f"{model.model_id}-{config.variant}-{config.mode}-a{config.alpha:g}-{key}"
    default_out = cache_dir() / "aligned" / name
    out = Path(out) if out is not None else default_out
    if (out / "align.json").is_file() and (out != default_out or usable_entry(out)):
        log.info("Aligned model already in %s", out)
        meta = json.loads((out / "align.json").read_text())
        return AlignResult(out, model.spec, config, meta.get("stats", {}))

    # 2. a plain HF copy (no hooks needed to train), LoRA adapters or all weights; train it;
    #    the template's end-of-turn token (its first post-instruction token) ends refusals
    device, placement = model.device, (model.dtype, model.device, model.device_map)
    model = replace(model, bridge=None)  # its folder, tokenizer and chat format only
    if release is not None:
        release()
    hf_model = trainable_model(model.path, config, *placement)
    eos = model.tokenizer.convert_ids_to_tokens(model.chat.post_instruction_ids[0])
    rows = tokenize_examples(model.chat, examples, eos)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    with allocator_returns_memory():  # freed activations leave the process (CPU, glibc)
        stats = train(hf_model, rows, [e.harmful for e in examples], pad, config, device)

    # 3. save: merged weights, tokenizer and the config, atomically
    hf_model.eval()
    if config.mode == "lora":
        hf_model = hf_model.merge_and_unload()
    train_prompts = sorted({normalize_text(e.prompt) for e in examples})
    meta = {
        "config": config.to_dict(),
        "base": model.spec,
        "stats": stats,
        "train_prompts": train_prompts,
    }
    save_model(hf_model, model.tokenizer, out, meta)
    log.info("Aligned %s in %.0f s -> %s", model.spec, stats["seconds"], out)
    return AlignResult(out, model.spec, config, stats)


def check_trainable_placement(model: ModelHandle) -> None:
    """A base model split by a device map trains only where every weight lives on a real
    device: weights offloaded to disk (or, beside GPUs, to the CPU) are ``meta`` placeholders,
    and LoRA adapters made beside them would be ``meta`` too."""
    offloaded = sorted({str(v) for v in (model.device_map or {}).values()} & {"disk"})
    if offloaded:
        raise RefusalLensError(
            f"Cannot align {model.model_id}: its device map offloads layers to "
            f"{', '.join(offloaded)}, and offloaded weights cannot be trained. Load the base "
            "model with a device map of GPUs only (device_map='auto' on enough GPUs, or "
            "n_devices=N), or with enough memory on one device."
        )


def trainable_model(
    path: str,
    config: AlignConfig,
    dtype: torch.dtype,
    device: Any,
    device_map: dict[str, Any] | None = None,
) -> Any:
    """The HF model at ``path`` with LoRA adapters on every linear layer, or fully trainable;
    with ``device_map`` (the base handle's), placed by accelerate the same way."""
    from transformers import AutoModelForCausalLM

    if device_map:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device_map)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    # activation checkpointing: a backward pass keeps each layer's input only and recomputes
    # the rest, so training holds about one layer's activations instead of all of them (on
    # SmolLM2 at batch 8: 6.9× the weights without it); the same numbers, ~30 % more compute
    model.config.use_cache = False
    if CHECKPOINTING:
        _checkpoint_activations(model)
    if config.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
        )
        with warnings.catch_warnings():  # peft asks under transformers' deprecated name
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            model = get_peft_model(model, lora)
    return model.train()


def _checkpoint_activations(model: Any) -> None:
    """Activation checkpointing under either of transformers' names for it (5.23 renamed
    ``gradient_checkpointing_enable``, which now warns)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def train(
    model: Any,
    rows: list[tuple[list[int], list[bool]]],
    harmful: list[bool],
    pad_id: int,
    config: AlignConfig,
    device: Any,
) -> dict[str, Any]:
    """AdamW with 10 warm-up steps and linear decay; returns the training statistics."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    n_h = sum(harmful)
    rng = random.Random(config.seed)
    total_steps = config.epochs * -(-len(rows) // config.batch_size)
    steps, n_tokens, start, epoch_losses = 0, 0, time.time(), []
    for _epoch in range(config.epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        losses = []
        for first in progress(list(range(0, len(order), config.batch_size)), "align", True):
            idx = order[first : first + config.batch_size]
            batch = collate([rows[i] for i in idx], [harmful[i] for i in idx], pad_id).to(device)
            weights = example_weights(batch.harmful, config.alpha, n_h, len(rows) - n_h)
            loss = (answer_loss(model, batch) * weights).mean()
            scale = min(1.0, (steps + 1) / 10) * max(0.0, 1 - steps / total_steps)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * scale
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            n_tokens += int(batch.attention_mask.sum())
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))
    return {
        "steps": steps,
        "train_tokens": n_tokens,
        "seconds": round(time.time() - start, 1),
        "epoch_losses": epoch_losses,
        "n_harmful": n_h,
        "n_benign": len(rows) - n_h,
    }


def save_model(model: Any, tokenizer: Any, out: Path, meta: dict) -> None:
    """Write an HF model directory atomically; a full disk gives a clear error, no folder."""
    try:
        with atomic_dir(out, marker="align.json") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "align.json", meta)
            write_manifest(tmp, {"align": meta["config"]})
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise RefusalLensError(
                f"Out of disk space while saving the aligned model to {out}; nothing was "
                "left behind. Free some space (or set REFUSAL_LENS_CACHE to another disk) and "
                "run again."
            ) from exc
        raise
