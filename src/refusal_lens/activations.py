"""Batched residual-stream collection through TransformerBridge hooks.

``collect_residuals`` runs prompts through the model in left-padded batches and keeps only what
was asked for: the residual stream at the chosen ``layers`` (hook ``resid_pre`` by default) and
at the chosen negative ``positions`` (default: the post-instruction positions of the chat
template). It never computes the unembedding: the forward pass stops, by an exception raised in
the last hook needed, right after the deepest requested layer. Prompts are sorted by length
before batching so that padding is small, and rows are returned in the original order.

The result is ``[prompt, layer, pos, d_model]`` in float32. When it would exceed the memory
budget, or when ``out`` is given, rows are streamed to a safetensors file as they are computed
and the returned tensor is memory-mapped from it, so peak memory does not grow with the
number of prompts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.artifacts import (
    StreamingSafetensorsWriter,
    artifact_file,
    artifact_meta,
    load_tensor_mmap,
    read_meta,
    write_json,
)
from refusal_lens.configs import StageConfig, check_positive
from refusal_lens.errors import RefusalLensError
from refusal_lens.hooks import RESIDUAL_POINTS, ResidualPoint, capture, check_layers, hook_name
from refusal_lens.models import ModelHandle
from refusal_lens.models.attention import native_attention
from refusal_lens.progress import progress
from refusal_lens.prompts import ChatBatch, PromptSet, length_sorted_batches

HookPoint = ResidualPoint
HOOK_POINTS: tuple[str, ...] = RESIDUAL_POINTS  # the points that can be collected
TENSOR_NAME = "residuals"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectConfig(StageConfig):
    """What to collect; saved next to every residual artifact (with layers and positions
    resolved)."""

    layers: tuple[int, ...] | None = None  # None = every layer
    positions: tuple[int, ...] | None = None  # negative; None = the post-instruction positions
    hook: str = "resid_pre"  # one of HOOK_POINTS
    batch_size: int = 16
    memory_budget_gb: float = 2.0

    def validate(self) -> None:
        if self.hook not in HOOK_POINTS:
            raise RefusalLensError(f"Unknown hook point {self.hook!r}; use one of {HOOK_POINTS}.")
        check_positive("batch_size", self.batch_size)
        check_positive("memory_budget_gb", self.memory_budget_gb)


@dataclass
class Residuals:
    """Residual streams ``acts[prompt, layer, pos, d_model]`` with what produced them."""

    acts: Float[Tensor, "prompt layer pos d_model"]
    config: CollectConfig
    model: dict = field(default_factory=dict)
    prompts: str = ""

    def save(self, out: str | Path) -> Path:
        """Write ``residuals.safetensors`` and ``residuals.json`` into folder ``out``."""
        out = Path(out)
        with StreamingSafetensorsWriter(
            out / f"{TENSOR_NAME}.safetensors", TENSOR_NAME, tuple(self.acts.shape)
        ) as writer:
            for start in range(0, self.acts.shape[0], 256):
                writer.write(self.acts[start : start + 256])
        write_json(out / f"{TENSOR_NAME}.json", self.metadata())
        return out

    def metadata(self) -> dict:
        return artifact_meta(
            "residuals",
            self.config,
            shape=list(self.acts.shape),
            dims=["prompt", "layer", "pos", "d_model"],
            model=self.model,
            prompts=self.prompts,
        )

    @classmethod
    def load(cls, folder: str | Path) -> Residuals:
        """Memory-map the residuals saved in ``folder``."""
        meta = read_meta(folder, f"{TENSOR_NAME}.json", "residuals")
        config = CollectConfig.from_dict(meta["config"])
        path = artifact_file(
            folder, f"{TENSOR_NAME}.safetensors", f"{TENSOR_NAME}.json", "collect again."
        )
        acts = load_tensor_mmap(path, TENSOR_NAME)
        return cls(acts, config, meta.get("model", {}), meta.get("prompts", ""))


def _check_positions(model: ModelHandle, positions: list[int] | None, min_len: int) -> tuple:
    positions = list(range(-model.chat.n_post, 0)) if positions is None else list(positions)
    if not positions:
        raise RefusalLensError("No positions requested; pass at least one negative position.")
    bad = [p for p in positions if not -min_len <= p < 0]
    if bad:
        raise RefusalLensError(
            f"Positions {bad} are out of range. Positions count back from the last token "
            f"(-1 is the last); the shortest prompt here has {min_len} tokens. The template's "
            f"post-instruction positions are -{model.chat.n_post}..-1."
        )
    return tuple(positions)


def _batch_residuals(
    model: ModelHandle, batch: ChatBatch, config: CollectConfig
) -> Float[Tensor, "batch layer pos d_model"]:
    """Run one batch, capturing only the requested hooks and positions."""
    batch = batch.to(model.device)
    n_tok = batch.input_ids.shape[1]
    pos_idx = torch.tensor([n_tok + p for p in config.positions], device=model.device)
    names = [hook_name(layer, config.hook) for layer in sorted(set(config.layers))]

    def at_positions(x: Tensor) -> Tensor:
        # stays on the device (a layer's own one when a device map splits the model)
        return x.index_select(1, pos_idx.to(x.device))

    # the forward pass stops right after the deepest layer read: no unembedding
    with (
        torch.inference_mode(),
        capture(model, names, keep=at_positions, stop=True) as seen,
        native_attention(model),
    ):
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask, return_type=None)
    # one device-to-host copy per batch, not one per layer
    rows = [seen[hook_name(layer, config.hook)].to(model.device) for layer in config.layers]
    return torch.stack(rows, dim=1).to("cpu", torch.float32)


def _prepare(
    model: ModelHandle, texts: list[str], config: CollectConfig
) -> tuple[CollectConfig, list[list[int]]]:
    """Validate every prompt and the config against the model before any work; return the
    config with layers and positions resolved, and the batches."""
    lengths = model.chat.token_lengths(texts)
    layers = None if config.layers is None else list(config.layers)
    positions = None if config.positions is None else list(config.positions)
    config = config.replace(
        layers=check_layers(model, layers),
        positions=_check_positions(model, positions, min(lengths)),
    )
    return config, length_sorted_batches(lengths, config.batch_size)


def _iter_batches(
    model: ModelHandle,
    texts: list[str],
    config: CollectConfig,
    batches: list[list[int]],
    show_progress: bool,
) -> Iterator[tuple[list[int], Float[Tensor, "batch layer pos d_model"]]]:
    for idx in progress(batches, "collect", show_progress):
        yield idx, _batch_residuals(model, model.chat.tokenize([texts[i] for i in idx]), config)


def mean_residuals(
    model: ModelHandle,
    prompts: PromptSet | list[str],
    config: CollectConfig | None = None,
    *,
    show_progress: bool = True,
) -> Float[Tensor, "layer pos d_model"]:
    """The mean residual stream over ``prompts``, accumulated batch by batch in float64.

    Memory holds one batch and the running sum, whatever the number of prompts. ``config`` as
    in :func:`collect_residuals` (its memory budget is unused).
    """
    texts = prompts.texts if isinstance(prompts, PromptSet) else list(prompts)
    config, batches = _prepare(model, texts, config or CollectConfig())
    total = torch.zeros(
        len(config.layers), len(config.positions), model.d_model, dtype=torch.float64
    )
    for _, rows in _iter_batches(model, texts, config, batches, show_progress):
        total += rows.sum(0, dtype=torch.float64)
    return (total / len(texts)).float()


def collect_residuals(
    model: ModelHandle,
    prompts: PromptSet | list[str],
    config: CollectConfig | None = None,
    *,
    out: str | Path | None = None,
    show_progress: bool = True,
) -> Residuals:
    """Residual streams ``[prompt, layer, pos, d_model]`` for ``prompts``.

    ``config.layers`` defaults to all layers, ``config.positions`` (negative, -1 = last token)
    to the post-instruction positions. With ``out`` (a folder), the result is written there as
    ``residuals.safetensors`` + ``residuals.json`` and memory-mapped back; without it, a result
    larger than ``config.memory_budget_gb`` is streamed to a folder in the cache instead.

    >>> collect_residuals(model, prompts, CollectConfig(layers=(10, 20), positions=(-1,)))
    """
    texts = prompts.texts if isinstance(prompts, PromptSet) else list(prompts)
    name = prompts.name if isinstance(prompts, PromptSet) else "prompts"
    config, batches = _prepare(model, texts, config or CollectConfig())
    memory_budget_gb = config.memory_budget_gb
    shape = (len(texts), len(config.layers), len(config.positions), model.d_model)
    n_bytes = 4 * shape[0] * shape[1] * shape[2] * shape[3]
    if out is None and n_bytes > memory_budget_gb * 2**30:
        from refusal_lens.models import cache_dir

        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
        out = cache_dir() / "residuals" / f"{model.model_id}-{name}-{digest}"
        log.warning("Residuals need %.1f GiB; streaming them to %s", n_bytes / 2**30, out)
    meta = model.describe()
    rows_of = _iter_batches(model, texts, config, batches, show_progress)

    if out is None:
        acts = torch.empty(shape, dtype=torch.float32)
        for idx, rows in rows_of:
            acts[idx] = rows
        return Residuals(acts, config, meta, name)

    out = Path(out)
    path = out / f"{TENSOR_NAME}.safetensors"
    with StreamingSafetensorsWriter(path, TENSOR_NAME, shape) as writer:
        for idx, rows in rows_of:
            for i, row in zip(idx, rows, strict=True):
                writer.write_row(i, row)
    result = Residuals(load_tensor_mmap(path, TENSOR_NAME), config, meta, name)
    write_json(out / f"{TENSOR_NAME}.json", result.metadata())
    return result
