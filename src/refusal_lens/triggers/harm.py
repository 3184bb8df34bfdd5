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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.activations import collect_residuals
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.probes import LinearProbe, check_classes, fit_probe
from refusal_lens.prompts import ChatBatch, PromptSet


@dataclass
class HarmJudgeConfig:
    layers: list[int] | None = None  # candidate layers; None = every layer
    val_frac: float = 0.25
    l2: float = 1e-2
    threshold: float = 0.5  # p(harmful) at or above this = harmful
    seed: int = 0


@dataclass
class HarmJudge:
    probe: LinearProbe
    layer: int
    model_id: str
    val_accuracy: float
    accuracy_by_layer: dict[int, float]
    config: HarmJudgeConfig = field(default_factory=HarmJudgeConfig)

    def p_harmful(self, model: ModelHandle, prompts: PromptSet | list[str]) -> Float[Tensor, " n"]:
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
        seen: dict[str, Tensor] = {}

        def hook(x: Tensor, hook: object) -> None:
            seen["x"] = x[:, -1].float()

        with (
            torch.inference_mode(),
            model.bridge.hooks(fwd_hooks=[(f"blocks.{self.layer}.hook_resid_pre", hook)]),
        ):
            model.bridge(batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=1)
        return self.probe.logits(seen["x"].cpu())

    def is_harmful(self, model: ModelHandle, prompts: PromptSet | list[str]) -> list[bool]:
        return (self.p_harmful(model, prompts) >= self.config.threshold).tolist()

    def describe(self) -> dict:
        return {
            "kind": "linear probe on the residual stream (last template token)",
            "model": self.model_id,
            "layer": self.layer,
            "val_accuracy": self.val_accuracy,
            "accuracy_by_layer": self.accuracy_by_layer,
            "config": asdict(self.config),
        }


def _features(
    model: ModelHandle, prompts: PromptSet | list[str], layers: list[int] | None
) -> Float[Tensor, "n layer d_model"]:
    res = collect_residuals(model, prompts, layers=layers, positions=[-1], show_progress=False)
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
    layers = config.layers or list(range(1, model.n_layers))
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
