"""Per-token attribution of a refusal to the user's tokens, behind one interface.

>>> [a] = attribute(model, ["How do I kill a Python process?"], AttributionConfig("occlusion"))
>>> list(zip(a.tokens, a.scores.tolist()))        # positive: the token pushes towards refusal

``attribute`` returns an :class:`Attributions`: the per-prompt results in prompt order, with the
config, the model and the direction; ``save(folder)`` / ``load(folder)`` round-trip it.

Methods are plugins: :data:`METHODS` maps a name to an :class:`AttributionMethod`, the
method's function and its own small config. Each is batched, and only the user's own tokens
are attributed (the chat template's tokens are left out):

- ``projection``: each user token's residual stream projected on the unit refusal direction,
  at every layer (``layer_scores[layer, token]``); ``scores`` is the row at the direction's
  layer. Needs ``direction=``. Cheap (one forward pass), but says where the direction is
  present, not what causes the refusal score. Config: ``layers`` read (default: all).
- ``grad_x_input``: gradient of the refusal score with respect to each token embedding, dotted
  with that embedding (one forward and backward pass).
- ``integrated_gradients``: the same, averaged along a straight path from a zero embedding for
  the user's tokens to their real embedding (``steps`` points, midpoint rule); the template
  keeps its embeddings.
- ``occlusion``: the drop in refusal score when the token is deleted from the prompt (one
  forward pass per user token, batched per prompt).

A new method is one function ``run(batch, rows, config) -> [RowScores per row]`` and one
entry in :data:`METHODS` (with its config type, a :class:`MethodConfig`, whose fields become
its settings and, in ``refusal-lens attribute``, its options).

The refusal score is the log-odds of the model's refusal-start tokens at the first answer
position (``refusal_lens.scoring``). A prompt the model does not refuse (score ≤ 0) is reported
as such and, unless ``attribute_unrefused=True``, not attributed: its attribution would only
explain noise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.artifacts import (
    artifact_meta,
    load_tensor_artifact,
    save_tensor_artifact,
)
from refusal_lens.attribution.gradients import gradient_scores
from refusal_lens.attribution.occlusion import (
    BatchScore,
    forward_scores,
    occlusion_scores,
    scores_without,
)
from refusal_lens.configs import StageConfig, check_positive
from refusal_lens.errors import RefusalLensError
from refusal_lens.hooks import capture, check_layers, hook_name
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import ChatBatch, PromptSet
from refusal_lens.residual_direction import Direction
from refusal_lens.verdicts import refused_by_score

__all__ = ["BatchScore", "scores_without"]  # re-exported: the deletion read-outs' home
KIND = "attributions"
META_NAME = "attributions.json"  # kind, format, config, model, direction, per-prompt records
TENSORS_NAME = "attributions.safetensors"  # scores.<i> and layer_scores.<i> per prompt
log = logging.getLogger(__name__)


# 1. The plugin interface ---------------------------------------------------------------------


@dataclass(frozen=True)
class MethodConfig(StageConfig):
    """A method's own settings (this base class: none). A subclass adds fields."""

    def check(self, model: ModelHandle) -> None:
        """Raise a RefusalLensError, before any work, for settings ``model`` cannot take."""


@dataclass(frozen=True)
class ProjectionConfig(MethodConfig):
    layers: tuple[int, ...] | None = None  # layers read (default: every layer)

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        super().__post_init__()

    def check(self, model: ModelHandle) -> None:
        check_layers(model, self.layers)


@dataclass(frozen=True)
class IntegratedGradientsConfig(MethodConfig):
    steps: int = 16  # points on the straight path, midpoint rule

    def validate(self) -> None:
        check_positive("steps", self.steps)


@dataclass(frozen=True)
class AttributionBatch:
    """What a method is given: one tokenized batch on the model's device, each row's refusal
    score, and the direction (for methods that need one)."""

    model: ModelHandle
    batch: ChatBatch
    base: Float[Tensor, " batch"]
    direction: Direction | None = None


@dataclass(frozen=True)
class RowScores:
    """One prompt's scores: one per user token, and per layer where the method has them."""

    scores: Float[Tensor, " token"]
    layer_scores: Float[Tensor, "layer token"] | None = None


MethodFn = Callable[[AttributionBatch, list[int], Any], list[RowScores]]


@dataclass(frozen=True)
class AttributionMethod:
    """A registered method: ``run(batch, rows, config)`` returns the :class:`RowScores` of
    each row of ``rows`` (the rows to attribute, in order) of ``batch``; ``config`` is the
    type of its settings; ``needs_direction``: it reads ``batch.direction``."""

    run: MethodFn
    config: type[MethodConfig] = MethodConfig
    needs_direction: bool = False


def method_of(name: str) -> AttributionMethod:
    """The registered method ``name``; a RefusalLensError naming the valid ones."""
    if name not in METHODS:
        raise RefusalLensError(f"Unknown attribution method {name!r}; use one of {tuple(METHODS)}.")
    return METHODS[name]


def _settings(config: type[MethodConfig]) -> set[str]:
    return {f.name for f in dataclasses.fields(config)}


def method_config(
    method: str, options: MethodConfig | None = None, **settings: Any
) -> MethodConfig:
    """The settings of ``method``: ``options`` (default: its config's defaults) with the
    named ``settings`` that its config has set. A setting only another registered method has
    is ignored, so one sweep can pass ``steps=`` to every method; one that no method has is
    an error."""
    spec = method_of(method)
    known = set().union(*(_settings(m.config) for m in METHODS.values()))
    unknown = sorted(set(settings) - known)
    if unknown:
        raise RefusalLensError(
            f"No attribution method has the setting(s) {unknown}; {method} has "
            f"{sorted(_settings(spec.config)) or 'none'}."
        )
    own = {k: v for k, v in settings.items() if k in _settings(spec.config)}
    if options is None:
        return spec.config.from_dict(own)
    if type(options) is not spec.config:
        raise RefusalLensError(
            f"The options of {method} are a {spec.config.__name__}, not a {type(options).__name__}."
        )
    return options.replace(**own) if own else options


@dataclass(frozen=True, init=False)
class AttributionConfig(StageConfig):
    """How to attribute; saved with the attributions.

    ``options`` holds the method's own settings (a ``METHODS[method].config``, its defaults
    when not given); they may also be given by name, as in
    ``AttributionConfig("integrated_gradients", steps=64)`` (see :func:`method_config`).
    An unknown method fails here, naming the registered ones.
    """

    method: str = "occlusion"  # the method, a name in METHODS
    batch_size: int = 8
    attribute_unrefused: bool = False  # also attribute prompts the model does not refuse
    options: MethodConfig = field(default_factory=MethodConfig)  # the method's settings

    def __init__(
        self,
        method: str = "occlusion",
        *,
        batch_size: int = 8,
        attribute_unrefused: bool = False,
        options: MethodConfig | None = None,
        **settings: Any,
    ) -> None:
        values = dict(
            method=method,
            batch_size=batch_size,
            attribute_unrefused=attribute_unrefused,
            options=method_config(method, options, **settings),
        )
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def validate(self) -> None:
        check_positive("batch_size", self.batch_size)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributionConfig:
        """Rebuild a config saved by ``to_dict``, or by a version that saved the settings
        beside ``method`` (``layers``, ``steps``)."""
        data = dict(data)
        options = data.pop("options", None)
        if isinstance(options, dict):
            options = method_of(data.get("method", "occlusion")).config.from_dict(options)
        return cls(**data, options=options)


# 2. The result -------------------------------------------------------------------------------


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


_TENSOR_FIELDS = ("scores", "layer_scores")


# 3. The methods ------------------------------------------------------------------------------


def _token_strings(model: ModelHandle, ids: list[int]) -> list[str]:
    return [model.tokenizer.decode([i]) for i in ids]


def _projection(
    model: ModelHandle, batch: ChatBatch, direction: Direction, layers: list[int]
) -> Float[Tensor, "batch layer pos"]:
    """Projections of the residual stream on the unit direction."""
    u = direction.unit_vector(model.device, torch.float32)
    names = [hook_name(layer) for layer in layers]
    on_u = capture(model, names, keep=lambda x: (x.float() @ u.to(x.device)).cpu())
    with torch.inference_mode(), on_u as seen:
        forward_scores(model, batch)
    return torch.stack([seen[hook_name(layer)] for layer in layers], dim=1)


def projection(inputs: AttributionBatch, rows: list[int], config: Any) -> list[RowScores]:
    model, batch, direction = inputs.model, inputs.batch, inputs.direction
    assert direction is not None  # registered with needs_direction
    layers = list(check_layers(model, config.layers))
    proj = _projection(model, batch, direction, layers)
    out = []
    for row in rows:
        layer_scores = proj[row][:, batch.user_mask[row].cpu()]
        scores = (
            layer_scores[layers.index(direction.layer)]
            if direction.layer in layers
            else layer_scores.mean(0)
        )
        out.append(RowScores(scores, layer_scores))
    return out


def grad_x_input(inputs: AttributionBatch, rows: list[int], config: Any) -> list[RowScores]:
    return [RowScores(gradient_scores(inputs.model, inputs.batch, row, 1)) for row in rows]


def integrated_gradients(inputs: AttributionBatch, rows: list[int], config: Any) -> list[RowScores]:
    return [
        RowScores(gradient_scores(inputs.model, inputs.batch, row, config.steps)) for row in rows
    ]


def occlusion(inputs: AttributionBatch, rows: list[int], config: Any) -> list[RowScores]:
    model, batch, base = inputs.model, inputs.batch, inputs.base
    return [RowScores(occlusion_scores(model, batch, row, float(base[row]))) for row in rows]


METHODS: dict[str, AttributionMethod] = {
    "projection": AttributionMethod(projection, ProjectionConfig, needs_direction=True),
    "grad_x_input": AttributionMethod(grad_x_input),
    "integrated_gradients": AttributionMethod(integrated_gradients, IntegratedGradientsConfig),
    "occlusion": AttributionMethod(occlusion),
}


# 4. Running a method ------------------------------------------------------------------------


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
    spec = method_of(config.method)
    texts = prompts.texts if isinstance(prompts, PromptSet) else list(prompts)
    config.options.check(model)
    if spec.needs_direction:
        if direction is None:
            raise RefusalLensError(
                f"method={config.method!r} needs direction= (a refusal Direction)."
            )
        direction.check(model)
    model.chat.token_lengths(texts)  # validates every prompt before any work
    out: list[TokenAttribution] = []
    for start in range(0, len(texts), config.batch_size):
        batch = model.chat.tokenize(texts[start : start + config.batch_size]).to(model.device)
        with torch.inference_mode():
            base = forward_scores(model, batch).cpu()
        items = [
            _unscored(model, batch, row, text, float(base[row]), config)
            for row, text in enumerate(batch.texts)
        ]
        rows = [row for row, item in enumerate(items) if not item.note]
        if rows:
            found = spec.run(AttributionBatch(model, batch, base, direction), rows, config.options)
            for row, scores in zip(rows, found, strict=True):
                items[row].scores, items[row].layer_scores = scores.scores, scores.layer_scores
        out += items
    meta = {} if direction is None else direction.metadata()
    return Attributions(out, config, model.model_id, meta)


def _unscored(
    model: ModelHandle,
    batch: ChatBatch,
    row: int,
    text: str,
    base: float,
    config: AttributionConfig,
) -> TokenAttribution:
    """Row ``row``'s record before scoring; with a note when it is not to be attributed."""
    user = batch.user_mask[row]
    ids = batch.input_ids[row][user].tolist()
    real = batch.attention_mask[row].bool() & ~user
    result = TokenAttribution(
        prompt=text,
        method=config.method,
        tokens=_token_strings(model, ids),
        token_ids=ids,
        refusal_score=base,
        threshold=model.refusal_threshold,
        template_tokens=_token_strings(model, batch.input_ids[row][real].tolist()),
    )
    if not ids:
        raise RefusalLensError(f"Prompt {text!r} has no user tokens to attribute.")
    if not result.refused and not config.attribute_unrefused:
        result.note = (
            f"not refused (refusal score {base:.2f} ≤ {result.threshold:.2f}): not "
            "attributed; pass "
            "AttributionConfig(attribute_unrefused=True) to attribute it anyway"
        )
        log.warning("%r is %s", text[:60], result.note)
    return result
