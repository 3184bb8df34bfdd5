"""The directions a mitigation search draws on: r, Wang's w′ at any λ, and the boundary probe's
normal at any layer.

>>> vectors = Vectors.build(model, r, w, harmful, harmless)
>>> vectors.get("w_prime", EditConfig(lam=0.6))       # w − 0.6 r̂ r̂ᵀ w
>>> vectors.get("probe", EditConfig(probe_layer=12))  # fitted once per layer, then kept
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.errors import RefusalLensError
from refusal_lens.mitigation.edits import EditConfig
from refusal_lens.models import ModelHandle
from refusal_lens.probes import check_counts, fit_probe
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction

PROBE_L2 = 1e-2  # the boundary geometry's default (GeometryConfig.l2)


@dataclass
class Vectors:
    """``r``; ``w``, the mean difference of borderline and harmless prompts at r's layer and
    position (w′ at λ = 0); and the harmful and harmless residuals ``[n, layer, d_model]`` at
    the last template position from which each layer's probe is fitted on first use."""

    r: Direction
    w: Direction
    harmful: Float[Tensor, "n_h n_layers d_model"]
    harmless: Float[Tensor, "n_b n_layers d_model"]
    model: str = ""
    _probes: dict[int, Tensor] = field(default_factory=dict, repr=False)

    @property
    def n_layers(self) -> int:
        return self.harmful.shape[1]

    @classmethod
    def build(
        cls,
        model: ModelHandle,
        r: Direction,
        w: Direction,
        harmful: PromptSet,
        harmless: PromptSet,
        batch_size: int = 16,
    ) -> Vectors:
        """Read both sets once at every layer (one forward pass per batch)."""
        for d in (r, w):
            d.check(model)
        check_counts(len(harmful), len(harmless), "boundary probe")
        config = CollectConfig(
            layers=tuple(range(model.n_layers)), positions=(-1,), batch_size=batch_size
        )
        acts = [
            torch.as_tensor(collect_residuals(model, ps, config, show_progress=False).acts)
            for ps in (harmful, harmless)
        ]
        return cls(r, w, *(a[:, :, 0].float() for a in acts), model=model.model_id)

    def get(self, name: str, config: EditConfig) -> Float[Tensor, " d_model"]:
        """The vector ``name`` (r, w_prime or probe) at ``config``'s λ or probe layer."""
        if name == "r":
            return self.r.vector
        if name == "w_prime":
            return self.w.orthogonalize(self.r, config.lam).vector
        if name == "probe":
            return self.probe(config.probe_layer)
        raise RefusalLensError(f"Unknown direction {name!r}; use r, w_prime or probe.")

    def probe(self, layer: int) -> Float[Tensor, " d_model"]:
        """The unit normal of a logistic probe separating harmful from harmless residuals at
        ``layer`` (pointing to the harmful side), times the two classes' mean difference
        along it: the scale of a difference of means, so that addition coefficients mean the
        same for every direction."""
        if not 0 <= layer < self.n_layers:
            raise RefusalLensError(
                f"probe_layer {layer} is out of range: the model has layers 0..{self.n_layers - 1}."
            )
        if layer not in self._probes:
            h, b = self.harmful[:, layer], self.harmless[:, layer]
            y = torch.cat([torch.ones(len(h)), torch.zeros(len(b))]).bool()
            normal = fit_probe(torch.cat([h, b]), y, l2=PROBE_L2).direction()
            unit = normal / normal.norm().clamp(min=1e-12)
            self._probes[layer] = unit * ((h.mean(0) - b.mean(0)) @ unit)
        return self._probes[layer]
