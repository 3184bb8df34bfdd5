"""Extract and select the refusal direction of a model in one call (the CLI's `direction`).

>>> selection = find_direction(model, DirectionConfig(harmful="harmful", harmless="harmless"))
>>> selection.direction.save("runs/direction")

The harmful and harmless prompt sets are each split, with a seed, into disjoint train prompts
(difference of means, default 128 per class) and validation prompts (selection scores,
default 32 per class). With ``out``, the folder receives the direction
(``direction.safetensors`` + ``direction.json``), every candidate's scores
(``selection.json``, ``selection.md``) and the score figure (``selection.png``); the whole
:class:`Selection` loads back with ``Selection.load(folder)``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from refusal_lens.configs import StageConfig, check_positive
from refusal_lens.directions.extract import diff_in_means
from refusal_lens.directions.screening import select_direction
from refusal_lens.directions.selection import SelectConfig, Selection
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet, load_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectionConfig(StageConfig):
    """Everything that determines a refusal direction; saved with it."""

    harmful: str = "harmful"
    harmless: str = "harmless"
    n_train: int = 128
    n_val: int = 32
    seed: int = 0
    layers: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None
    batch_size: int = 16
    exclude_trained: bool = True  # drop an aligned model's training prompts from harmless
    select: SelectConfig = field(default_factory=SelectConfig)

    def validate(self) -> None:
        for name in ("n_train", "n_val", "batch_size"):
            check_positive(name, getattr(self, name))


def train_val_split(prompts: PromptSet, n_train: int, n_val: int, seed: int) -> tuple:
    """Disjoint seeded train and validation samples of ``prompts``."""
    if n_train < 1 or n_val < 1:
        raise RefusalLensError("n_train and n_val must both be at least 1.")
    if len(prompts) < 2:
        raise RefusalLensError(
            f"{prompts.name} has {len(prompts)} prompt(s); a direction needs train and "
            "validation prompts of each class (default 128 + 32)."
        )
    if len(prompts) < n_train + n_val:
        n_val = max(1, min(n_val, len(prompts) // 5))
        n_train = len(prompts) - n_val
        log.warning(
            "%s has %d prompts, fewer than asked; using %d train + %d validation.",
            prompts.name,
            len(prompts),
            n_train,
            n_val,
        )
    return prompts.sample(n_train + n_val, seed).split(n_train, seed)


def _without_training_prompts(model: ModelHandle, prompts: PromptSet) -> PromptSet:
    """``prompts`` minus those the model was safety-aligned on (its ``align.json``): the
    aligned model was taught to answer them, which would bias the harmless mean."""
    from refusal_lens.evaluation import training_prompts_of
    from refusal_lens.prompts import normalize_text

    trained = {normalize_text(t) for t in training_prompts_of(model)}
    kept = tuple(p for p in prompts if normalize_text(p.text) not in trained)
    if len(kept) < len(prompts):
        log.info("Dropped %d training prompts from %s", len(prompts) - len(kept), prompts.name)
    return replace(prompts, prompts=kept)


def find_direction(
    model: ModelHandle,
    config: DirectionConfig | None = None,
    out: str | Path | None = None,
    *,
    show_progress: bool = True,
) -> Selection:
    """Difference-of-means candidates on train prompts, selection on validation prompts."""
    config = config or DirectionConfig()
    harmful = load_prompts(config.harmful)
    harmless = load_prompts(config.harmless)
    if config.exclude_trained:
        harmless = _without_training_prompts(model, harmless)
    h_train, h_val = train_val_split(harmful, config.n_train, config.n_val, config.seed)
    b_train, b_val = train_val_split(harmless, config.n_train, config.n_val, config.seed)
    overlap = set(h_train.texts + h_val.texts) & set(b_train.texts + b_val.texts)
    if overlap:
        raise RefusalLensError(
            f"{len(overlap)} prompt(s) are in both the harmful and the harmless set, e.g. "
            f"{next(iter(overlap))!r}; the two classes must be disjoint."
        )
    candidates = diff_in_means(
        model,
        h_train,
        b_train,
        None if config.layers is None else list(config.layers),
        None if config.positions is None else list(config.positions),
        batch_size=config.batch_size,
        show_progress=show_progress,
    )
    selection = select_direction(
        model, candidates, h_val, b_val, config.select, show_progress=show_progress
    )
    selection.direction = _with_config(selection, config)
    selection.prompts = {
        "harmful_train": h_train.texts,
        "harmful_val": h_val.texts,
        "harmless_train": b_train.texts,
        "harmless_val": b_val.texts,
    }
    if out is not None:
        selection.save(out)
    return selection


def _with_config(selection: Selection, config: DirectionConfig) -> Any:
    d = selection.direction
    return replace(d, config={**d.config, "direction": asdict(config)})
