"""Per-token attribution of a refusal to the user's tokens, behind one interface.

>>> [a] = attribute(model, ["How do I kill a Python process?"], AttributionConfig("occlusion"))
>>> list(zip(a.tokens, a.scores.tolist()))        # positive: the token pushes towards refusal

``attribute`` returns an :class:`Attributions`: the per-prompt results in prompt order, with the
config, the model and the direction; ``save(folder)`` / ``load(folder)`` round-trip it.

Methods (each batched; only the user's own tokens are attributed, the chat template's tokens
are left out):

- ``projection``: each user token's residual stream projected on the unit refusal direction,
  at every layer (``layer_scores[layer, token]``); ``scores`` is the row at the direction's
  layer. Needs ``direction=``. Cheap (one forward pass), but says where the direction is
  present, not what causes the refusal score.
- ``grad_x_input``: gradient of the refusal score with respect to each token embedding, dotted
  with that embedding (one forward and backward pass).
- ``integrated_gradients``: the same, averaged along a straight path from a zero embedding for
  the user's tokens to their real embedding (``steps`` points, midpoint rule); the template
  keeps its embeddings.
- ``occlusion``: the drop in refusal score when the token is deleted from the prompt (one
  forward pass per user token, batched per prompt).

The refusal score is the log-odds of the model's refusal-start tokens at the first answer
position (``refusal_lens.scoring``). A prompt the model does not refuse (score ≤ 0) is reported
as such and, unless ``attribute_unrefused=True``, not attributed: its attribution would only
explain noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.activations import hook_name
from refusal_lens.artifacts import (
    artifact_meta,
    load_tensor_artifact,
    save_tensor_artifact,
)
from refusal_lens.configs import StageConfig, check_positive
from refusal_lens.direction import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import ChatBatch, PromptSet
from refusal_lens.scoring import answer_logits, refusal_score
from refusal_lens.verdicts import refused_by_score

METHODS = ("projection", "grad_x_input", "integrated_gradients", "occlusion")
KIND = "attributions"
META_NAME = "attributions.json"  # kind, format, config, model, direction, per-prompt records
TENSORS_NAME = "attributions.safetensors"  # scores.<i> and layer_scores.<i> per prompt
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttributionConfig(StageConfig):
    """How to attribute; saved with the attributions."""

    method: str = "occlusion"  # projection, grad_x_input, integrated_gradients or occlusion
    layers: tuple[int, ...] | None = None  # projection: layers read (default: every layer)
    steps: int = 16  # integrated_gradients: points on the path
    batch_size: int = 8
    attribute_unrefused: bool = False  # also attribute prompts the model does not refuse

    def validate(self) -> None:
        if self.method not in METHODS:
            raise RefusalLensError(
                f"Unknown attribution method {self.method!r}; use one of {METHODS}."
            )
        check_positive("steps", self.steps)
        check_positive("batch_size", self.batch_size)


@dataclass
class TokenAttribution:
    """One prompt's attribution: a score per user token (and per layer, where the method has
    it), with the refusal score it explains. ``scores`` is ``None`` for a prompt that was not
    attributed (see ``note``)."""

    prompt: str
    method: str
    tokens: list[str]
    token_ids: list[int]
    refusal_score: float
    scores: Float[Tensor, " token"] | None = None
    layer_scores: Float[Tensor, "layer token"] | None = None
    template_tokens: list[str] = field(default_factory=list)
    note: str = ""
    threshold: float = 0.0  # the model's refusal threshold when attributed

    @property
    def refused(self) -> bool:
        return refused_by_score(self.refusal_score, self.threshold)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` tokens that push hardest towards refusal."""
        if self.scores is None:
            return []
        order = self.scores.argsort(descending=True)[:k].tolist()
        return [(self.tokens[i], float(self.scores[i])) for i in order]


@dataclass
class Attributions(Sequence[TokenAttribution]):
    """The attribution stage's result: one :class:`TokenAttribution` per prompt, in order,
    with the config, the model and the direction (for ``projection``) that produced them."""

    items: list[TokenAttribution]
    config: AttributionConfig = field(default_factory=AttributionConfig)
    model: str = ""
    direction: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, i):  # type: ignore[override]
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def save(self, folder: str | Path) -> Path:
        """``attributions.safetensors`` (the score tensors) and ``attributions.json`` (tokens,
        refusal scores, notes, config); other files in ``folder`` are kept."""
        tensors, records = {}, []
        for i, a in enumerate(self.items):
            for name in ("scores", "layer_scores"):
                if getattr(a, name) is not None:
                    tensors[f"{name}.{i}"] = getattr(a, name).float().clone()  # scores: a view
            records.append({k: v for k, v in asdict(a).items() if k not in _TENSOR_FIELDS})
        meta = artifact_meta(
            KIND, self.config, model=self.model, direction=self.direction, items=records
        )
        tensors["n"] = torch.tensor([len(records)])  # a file never empty
        return save_tensor_artifact(folder, (TENSORS_NAME, META_NAME), tensors, meta)

    @classmethod
    def load(cls, folder: str | Path) -> Attributions:
        names = (TENSORS_NAME, META_NAME)
        meta, tensors = load_tensor_artifact(folder, names, KIND, "attribute again.")
        items = [
            TokenAttribution(
                **record,
                scores=tensors.get(f"scores.{i}"),
                layer_scores=tensors.get(f"layer_scores.{i}"),
            )
            for i, record in enumerate(meta["items"])
        ]
        config = AttributionConfig.from_dict(meta["config"])
        return cls(items, config, meta["model"], meta["direction"])


_TENSOR_FIELDS = ("scores", "layer_scores")


def _token_strings(model: ModelHandle, ids: list[int]) -> list[str]:
    return [model.tokenizer.decode([i]) for i in ids]


def _forward_scores(
    model: ModelHandle, batch: ChatBatch, hooks: list | None = None
) -> Float[Tensor, " batch"]:
    with model.bridge.hooks(fwd_hooks=hooks or []):
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
    score = score or _forward_scores
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


def _occlusion(model: ModelHandle, batch: ChatBatch, row: int, base: float) -> Tensor:
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


def _embedding_grads(
    model: ModelHandle, batch: ChatBatch, scale: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Embeddings (resid_pre of block 0) and the gradient of the summed refusal score with
    respect to them; with ``scale[b]``, user-token embeddings of row b are multiplied by it."""
    stored: dict[str, Tensor] = {}

    def hook(x: Tensor, hook: Any) -> Tensor:
        x = x.detach()
        stored["x"] = x
        if scale is not None:
            keep = ~batch.user_mask[..., None]
            x = torch.where(keep, x, x * scale.to(x.dtype)[:, None, None])
        leaf = x.requires_grad_(True)
        stored["leaf"] = leaf
        return leaf

    with torch.enable_grad():
        scores = _forward_scores(model, batch, [(hook_name(0), hook)])
        (grad,) = torch.autograd.grad(scores.sum(), stored["leaf"])
    return stored["x"].detach().float(), grad.float()


def _gradients(model: ModelHandle, batch: ChatBatch, row: int, steps: int) -> Tensor:
    one = ChatBatch(
        batch.input_ids[row : row + 1],
        batch.attention_mask[row : row + 1],
        batch.user_mask[row : row + 1],
        batch.texts[row : row + 1],
    )
    if steps <= 1:  # gradient × input
        x, grad = _embedding_grads(model, one)
        return (x * grad).sum(-1)[0][one.user_mask[0]].cpu()
    alphas = (torch.arange(steps, device=model.device) + 0.5) / steps
    many = ChatBatch(
        *(t.expand(steps, -1) for t in (one.input_ids, one.attention_mask)),
        one.user_mask.expand(steps, -1),
        one.texts * steps,
    )
    x, grad = _embedding_grads(model, many, alphas)
    return (x[0] * grad.mean(0)).sum(-1)[one.user_mask[0]].cpu()


def _projection(
    model: ModelHandle, batch: ChatBatch, direction: Direction, layers: list[int]
) -> Tensor:
    """``[batch, layer, pos]`` projections of the residual stream on the unit direction."""
    u = direction.unit_vector(model.device, torch.float32)
    seen: dict[int, Tensor] = {}
    hooks = [
        (
            hook_name(layer),
            lambda x, hook, at=layer: seen.update({at: (x.float() @ u.to(x.device)).cpu()}),
        )
        for layer in layers
    ]
    with torch.inference_mode():
        _forward_scores(model, batch, hooks)
    return torch.stack([seen[layer] for layer in layers], dim=1)


def attribute(
    model: ModelHandle,
    prompts: PromptSet | list[str],
    config: AttributionConfig | str | None = None,
    *,
    direction: Direction | None = None,
) -> Attributions:
    """Attribute each prompt's refusal to its user tokens (see the module docstring).

    ``config`` may be just the method's name; ``direction`` is needed by ``projection``.
    """
    config = AttributionConfig(config) if isinstance(config, str) else config
    config = config or AttributionConfig()
    texts = prompts.texts if isinstance(prompts, PromptSet) else list(prompts)
    layers = list(range(model.n_layers)) if config.layers is None else list(config.layers)
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if bad:
        raise RefusalLensError(
            f"Layers {bad} do not exist: {model.model_id} has layers 0..{model.n_layers - 1}."
        )
    if config.method == "projection":
        if direction is None:
            raise RefusalLensError("method='projection' needs direction= (a refusal Direction).")
        direction.check(model)
    model.chat.token_lengths(texts)  # validates every prompt before any work
    out: list[TokenAttribution] = []
    for start in range(0, len(texts), config.batch_size):
        batch = model.chat.tokenize(texts[start : start + config.batch_size]).to(model.device)
        with torch.inference_mode():
            base = _forward_scores(model, batch).cpu()
        proj = (
            _projection(model, batch, direction, layers) if config.method == "projection" else None
        )
        for row, text in enumerate(batch.texts):
            out.append(
                _one(model, batch, row, text, config, float(base[row]), proj, layers, direction)
            )
    meta = {} if direction is None else direction.metadata()
    return Attributions(out, config, model.model_id, meta)


def _one(model, batch, row, text, config, base, proj, layers, direction):
    method, steps, force = config.method, config.steps, config.attribute_unrefused
    user = batch.user_mask[row]
    ids = batch.input_ids[row][user].tolist()
    real = batch.attention_mask[row].bool() & ~user
    result = TokenAttribution(
        prompt=text,
        method=method,
        tokens=_token_strings(model, ids),
        token_ids=ids,
        refusal_score=base,
        threshold=model.refusal_threshold,
        template_tokens=_token_strings(model, batch.input_ids[row][real].tolist()),
    )
    if not ids:
        raise RefusalLensError(f"Prompt {text!r} has no user tokens to attribute.")
    if not result.refused and not force:
        result.note = (
            f"not refused (refusal score {base:.2f} ≤ {result.threshold:.2f}): not "
            "attributed; pass "
            "AttributionConfig(attribute_unrefused=True) to attribute it anyway"
        )
        log.warning("%r is %s", text[:60], result.note)
        return result
    if method == "projection":
        result.layer_scores = proj[row][:, user.cpu()]
        result.scores = (
            result.layer_scores[layers.index(direction.layer)]
            if (direction.layer in layers)
            else result.layer_scores.mean(0)
        )
    elif method == "occlusion":
        result.scores = _occlusion(model, batch, row, base)
    else:
        result.scores = _gradients(model, batch, row, steps if method != "grad_x_input" else 1)
    return result
