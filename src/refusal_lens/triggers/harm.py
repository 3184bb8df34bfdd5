"""A documented harmfulness judge without an external model: a linear probe on a chat model's
own residual stream.

The judge reads the residual stream before a block at the last template token (the position
where the model has read the whole request and is about to answer) and separates harmful from
benign requests with a logistic probe (``refusal_lens.probes``). It is fitted on labelled prompt
sets; the layer with the best held-out accuracy is chosen, and that accuracy is reported. Fit
it on the *base* model with benign look-alikes (the shipped ``borderline`` set) among the
benign examples, so that it learns harm rather than the surface cues an aligned model refuses.

>>> benign = load_prompts("harmless") + load_prompts("borderline")
>>> judge = fit_harm_judge(base, load_prompts("harmful"), benign)
>>> judge.p_harmful(base, ["How do I kill a Python process?"])

The probe is only as good as its fitting mix. Fitted on AdvBench rows against the shipped
harmless and borderline sets (as ``refusal-lens run`` does), it separates the *benchmark's
wording* from the shipped prompts' wording: on both bundled models it chooses layer 1, reaches a
held-out AUROC near 0.97 on AdvBench/HarmBench/JailbreakBench against Alpaca/XSTest-safe, and
yet flags none of 21 hand-written phishing, malware, intrusion and credential-theft requests
and at most 6 % of the shipped harmful set's cybercrime queries; 32 or 256 prompts per class
change none of that (``figures/harm_judge.md``, ``experiments/harm_judge_eval.py``). So the
data that sanitize keeps and RASS selects is re-checked by a second, deterministic judge,
:data:`cue_check` (documented harm cue words for phishing, malware, intrusion and credential
theft, with a defensive-question exemption), and every item it drops is recorded
(``dropped_by_harm_check``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.artifacts import (
    artifact_meta,
    load_tensor_artifact,
    save_tensor_artifact,
)
from refusal_lens.configs import StageConfig
from refusal_lens.errors import RefusalLensError
from refusal_lens.hooks import capture, hook_name
from refusal_lens.models import ModelHandle
from refusal_lens.probes import LinearProbe, check_classes, fit_probe
from refusal_lens.prompts import ChatBatch, PromptSet
from refusal_lens.scoring import answer_logits

KIND = "harm_judge"
TENSORS_NAME = "harm_judge.safetensors"  # the probe's weight, mean and std
META_NAME = "harm_judge.json"  # model, layer, bias, accuracies and config
PROBE_TENSORS = ("weight", "mean", "std")


@dataclass(frozen=True)
class HarmJudgeConfig(StageConfig):
    """How :func:`fit_harm_judge` fits the probe, and the threshold :meth:`HarmJudge.is_harmful`
    applies. ``layers`` (a list is turned into a tuple) are the candidate layers, ``None``
    for every layer from 1 on; ``val_frac`` of each class is held out to choose the layer."""

    layers: tuple[int, ...] | None = None
    val_frac: float = 0.25
    l2: float = 1e-2  # L2 penalty of the logistic probe
    threshold: float = 0.5  # p(harmful) at or above this = harmful
    seed: int = 0  # of the held-out split

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        super().__post_init__()

    def validate(self) -> None:
        if self.layers is not None and (
            not isinstance(self.layers, tuple)
            or not self.layers
            or not all(isinstance(i, int) and i >= 0 for i in self.layers)
        ):
            raise RefusalLensError(
                f"HarmJudgeConfig.layers must be None (every layer) or a non-empty tuple of "
                f"layer indices >= 0, not {self.layers!r}."
            )
        if not 0 < self.val_frac < 1:
            raise RefusalLensError(
                f"HarmJudgeConfig.val_frac must lie in (0, 1) (exclusive), not {self.val_frac}; "
                "it is the share of each class held out to choose the layer, e.g. 0.25."
            )
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise RefusalLensError(
                f"HarmJudgeConfig.l2 must be a finite number >= 0, not {self.l2}; use 0 for no "
                "penalty or e.g. 1e-2."
            )
        if not 0 <= self.threshold <= 1:
            raise RefusalLensError(
                f"HarmJudgeConfig.threshold must lie in [0, 1], not {self.threshold}; it is the "
                "p(harmful) at or above which a prompt counts as harmful, e.g. 0.5."
            )


@dataclass
class HarmJudge:
    """A fitted harm probe at ``layer`` of model ``model_id``; saved by :meth:`save` as
    ``harm_judge.safetensors`` and ``harm_judge.json``."""

    probe: LinearProbe
    layer: int
    model_id: str
    val_accuracy: float
    accuracy_by_layer: dict[int, float]
    config: HarmJudgeConfig = field(default_factory=HarmJudgeConfig)

    def p_harmful(self, model: ModelHandle, prompts: PromptSet | list[str]) -> Float[Tensor, " n"]:
        """p(harmful) of each prompt: the probe on ``model``'s residual stream before block
        ``layer`` at the last template token."""
        if model.model_id != self.model_id:
            raise RefusalLensError(
                f"This harm judge was fitted on {self.model_id}; it reads that model's residual "
                f"stream and cannot judge with {model.model_id}. Pass the same model."
            )
        x = _features(model, prompts, [self.layer])[:, 0]
        return torch.sigmoid(self.probe.logits(x))

    def batch_logits(self, model: ModelHandle, batch: ChatBatch) -> Float[Tensor, " batch"]:
        """Probe logits for an already tokenized batch (``attribution.scores_without``'s
        ``score`` signature), read at the last position."""
        name = hook_name(self.layer)
        with (
            torch.inference_mode(),
            capture(model, [name], keep=lambda x: x[:, -1].float()) as seen,
        ):
            answer_logits(model, batch)
        return self.probe.logits(seen[name].cpu())

    def is_harmful(self, model: ModelHandle, prompts: PromptSet | list[str]) -> list[bool]:
        """``p_harmful >= config.threshold`` per prompt."""
        return (self.p_harmful(model, prompts) >= self.config.threshold).tolist()

    def describe(self) -> dict[str, Any]:
        """What the judge is and how well it did, as plain JSON values (layer keys of
        ``accuracy_by_layer`` as strings, as they read back from JSON)."""
        return {
            "kind": "linear probe on the residual stream (last template token)",
            "model": self.model_id,
            "layer": self.layer,
            "val_accuracy": self.val_accuracy,
            "accuracy_by_layer": {str(k): v for k, v in self.accuracy_by_layer.items()},
            "config": self.config.to_dict(),
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``harm_judge.safetensors`` (probe weight, mean, std) and ``harm_judge.json``
        into ``folder``; other files there are kept."""

        tensors = {k: getattr(self.probe, k).float().contiguous() for k in PROBE_TENSORS}
        meta = artifact_meta(
            KIND,
            self.config,
            model=self.model_id,
            layer=self.layer,
            bias=self.probe.bias,
            val_accuracy=self.val_accuracy,
            accuracy_by_layer=self.accuracy_by_layer,
        )
        return save_tensor_artifact(folder, (TENSORS_NAME, META_NAME), tensors, meta)

    @classmethod
    def load(cls, folder: str | Path) -> HarmJudge:
        """Read a judge written by :meth:`save`."""
        fix = "save the harm judge again (`refusal-lens harm-judge`)."
        meta, tensors = load_tensor_artifact(folder, (TENSORS_NAME, META_NAME), KIND, fix)
        probe = LinearProbe(tensors["weight"], float(meta["bias"]), tensors["mean"], tensors["std"])
        return cls(
            probe,
            int(meta["layer"]),
            meta["model"],
            float(meta["val_accuracy"]),
            {int(k): float(v) for k, v in meta["accuracy_by_layer"].items()},
            HarmJudgeConfig.from_dict(meta["config"]),
        )


def _features(
    model: ModelHandle, prompts: PromptSet | list[str], layers: list[int] | None
) -> Float[Tensor, "n layer d_model"]:
    config = CollectConfig(layers=None if layers is None else tuple(layers), positions=(-1,))
    res = collect_residuals(model, prompts, config, show_progress=False)
    return torch.as_tensor(res.acts[:, :, 0]).float()


def fit_harm_judge(
    model: ModelHandle,
    harmful: PromptSet | list[str],
    benign: PromptSet | list[str],
    config: HarmJudgeConfig | None = None,
) -> HarmJudge:
    """Fit the probe at every candidate layer on a seeded split; keep the best layer."""
    config = config or HarmJudgeConfig()
    h, b = list(getattr(harmful, "texts", harmful)), list(getattr(benign, "texts", benign))
    y = torch.tensor([True] * len(h) + [False] * len(b))
    check_classes(y, "harm judge")
    layers = list(config.layers or range(1, model.n_layers))
    if not layers or max(layers) >= model.n_layers:
        raise RefusalLensError(
            f"HarmJudgeConfig.layers {config.layers} go past {model.model_id}'s layers "
            f"0..{model.n_layers - 1}; pick layers in that range."
        )
    x = _features(model, h + b, layers)
    gen = torch.Generator().manual_seed(config.seed)
    val = torch.zeros(len(y), dtype=torch.bool)
    for cls in (True, False):
        idx = (y == cls).nonzero().flatten()
        pick = idx[
            torch.randperm(len(idx), generator=gen)[: max(1, int(config.val_frac * len(idx)))]
        ]
        val[pick] = True
    scores = {}
    for i, layer in enumerate(layers):
        probe = fit_probe(x[~val, i], y[~val], l2=config.l2)
        scores[layer] = probe.accuracy(x[val, i], y[val])
    best = max(layers, key=lambda layer: (scores[layer], -layer))
    probe = fit_probe(x[:, layers.index(best)], y, l2=config.l2)
    return HarmJudge(probe, best, model.model_id, scores[best], scores, config)


# --- the harm judge as a scorer of texts (RASS's benign filter) ------------------------------

HarmFn = Callable[[list[str]], Sequence[float]]  # English texts -> p(harmful) each


@dataclass(frozen=True)
class HarmScorer:
    """How RASS tells harmful candidates from benign ones: ``p_harmful(english_texts)`` gives
    p(harmful) per text, and one at or above ``threshold`` is dropped. ``info`` describes the
    scorer; it is saved with the result, the threshold added (:meth:`describe`).

    :func:`harm_scorer` makes one from a fitted ``HarmJudge`` (its own threshold); wrap any
    other function with the threshold it was calibrated for: ``HarmScorer(fn, 0.3)``.
    """

    p_harmful: HarmFn
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.p_harmful):
            raise RefusalLensError(
                "HarmScorer.p_harmful must be a function from English texts to p(harmful) "
                f"each, not {type(self.p_harmful).__name__}."
            )
        if not 0 <= self.threshold <= 1:
            raise RefusalLensError(
                f"HarmScorer.threshold must be in [0, 1], not {self.threshold}; it is the "
                "p(harmful) at or above which a candidate is dropped, e.g. 0.5."
            )

    def describe(self) -> dict[str, Any]:
        return {**self.info, "threshold": self.threshold}


def harm_scorer(judge: HarmJudge, model: ModelHandle) -> HarmScorer:
    """A :class:`HarmJudge` reading ``model`` as a RASS harm scorer,
    with the judge's own threshold (``judge.config.threshold``) and description."""

    def p_harmful(texts: list[str]) -> list[float]:
        return judge.p_harmful(model, texts).tolist()

    return HarmScorer(p_harmful, judge.config.threshold, judge.describe())


def as_harm_scorer(harm: HarmScorer | HarmFn, info: dict[str, Any] | None = None) -> HarmScorer:
    """``harm`` as a :class:`HarmScorer`: a bare function gets the default threshold (0.5);
    ``info`` is added to its description."""
    if not isinstance(harm, HarmScorer):
        if not callable(harm):
            raise RefusalLensError(
                f"RASS needs a HarmScorer or a function of English texts, not "
                f"{type(harm).__name__}; wrap a HarmJudge with harm_scorer(judge, model)."
            )
        harm = HarmScorer(harm)
    return replace(harm, info=harm.info | info) if info else harm
