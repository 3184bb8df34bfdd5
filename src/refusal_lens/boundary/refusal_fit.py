"""Where the safety boundary predicts refusal: the layer and the band RASS selects in.

The geometry stage places look-alike prompts (benign requests shaped like harmful ones) against
every layer's boundary and knows which of them the model refused. Two choices follow, both
made on *validation* look-alikes, never on the test prompts a result is reported on:

- **layer** (:func:`choose_layer`): the layer whose margin best tells refused from answered
  look-alikes (AUROC of the margin, refused as positives); ties go to the earlier layer.
  With fewer than ``min_per_class`` refused or answered prompts no layer can be ranked, and
  the caller falls back (RASS: the direction's layer) and says so;
- **band** (:func:`refusal_band`): a logistic fit of refusal on the margin at that layer,
  ``p(refused | m) = σ(a·m + b)``, and the margins where the predicted refusal lies in
  ``[p_low, p_high]`` (about one half: where the model is undecided). A slope ``a ≤ 0`` means
  the margin does not predict refusal there: no band.

The fit is a ridge-penalised logistic regression on the standardised margin (penalty ``l2`` on
the slope per standard deviation): when refused and answered prompts separate perfectly the
plain fit has no finite slope, and the penalty keeps the band's width finite; say so beside a
band fitted at AUROC 1.

>>> fit = boundary_fit(layers, margins, refused)     # margins: [n, layer], refused: [n]
>>> fit.layer, fit.band                               # e.g. 19, (-0.21, 0.35)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from refusal_lens.errors import RefusalLensError
from refusal_lens.probes import auroc

MIN_PER_CLASS = 4  # refused and answered look-alikes needed to rank layers
P_BAND = (0.25, 0.75)  # predicted refusal kept by the band
L2 = 0.1  # penalty on the slope per standard deviation of the margin


@dataclass(frozen=True)
class BoundaryFit:
    """The selection layer and band, with what they were chosen from.

    ``layer`` and ``band`` are None when no choice could be made; ``reason`` then says why.
    ``auroc`` maps every layer read to its AUROC (None where a class is empty)."""

    layer: int | None
    band: tuple[float, float] | None
    auroc: dict[int, float | None]
    n_refused: int
    n_answered: int
    slope: float | None = None  # a, per margin unit
    intercept: float | None = None  # b
    p_band: tuple[float, float] = P_BAND
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["auroc"] = {str(k): v for k, v in self.auroc.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoundaryFit:
        data = dict(data)
        data["auroc"] = {int(k): v for k, v in data["auroc"].items()}
        for key in ("band", "p_band"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def describe(self) -> str:
        """One sentence for a report: the layer, its AUROC and the band, or why none."""
        if self.layer is None:
            return f"No layer chosen: {self.reason}"
        text = (
            f"layer {self.layer}, where the margin tells refused from answered validation "
            f"look-alikes best (AUROC {self.auroc[self.layer]:.2f}; {self.n_refused} refused, "
            f"{self.n_answered} answered)"
        )
        if self.band is None:
            return f"{text}; no band: {self.reason}"
        lo, hi = self.band
        p_lo, p_hi = self.p_band
        return (
            f"{text}; band {lo:+.2f} ≤ margin ≤ {hi:+.2f}, where the fitted refusal "
            f"probability is {p_lo:.2f}–{p_hi:.2f}"
        )


def choose_layer(
    layers: list[int],
    margins: Float[Tensor, "n layer"],
    refused: Bool[Tensor, " n"],
    min_per_class: int = MIN_PER_CLASS,
) -> tuple[int | None, dict[int, float | None], str]:
    """The layer whose margin ranks refused above answered look-alikes best, every layer's
    AUROC, and the reason when no layer could be chosen."""
    check_shapes(layers, margins, refused)
    n_ref, n_ans = int(refused.sum()), int((~refused).sum())
    scores = {
        layer: auroc(margins[refused, i], margins[~refused, i]) for i, layer in enumerate(layers)
    }
    if min(n_ref, n_ans) < min_per_class:
        why = (
            f"{n_ref} refused and {n_ans} answered look-alikes; ranking layers needs at least "
            f"{min_per_class} of each"
        )
        return None, scores, why
    best = max(layers, key=lambda layer: (scores[layer] or 0.0, -layer))
    return best, scores, ""


def logistic_1d(
    x: Float[Tensor, " n"], y: Bool[Tensor, " n"], l2: float = L2, steps: int = 50
) -> tuple[float, float]:
    """``(a, b)`` of ``p(y | x) = σ(a·x + b)``: Newton's method on the standardised ``x``
    with penalty ``l2 · a_std² / 2`` on the slope (none on the intercept)."""
    x64, t = x.double().flatten(), y.double().flatten()
    mu, sd = float(x64.mean()), float(x64.std(unbiased=False)) or 1.0
    z = torch.stack([(x64 - mu) / sd, torch.ones_like(x64)], dim=1)
    w = torch.zeros(2, dtype=torch.float64)
    penalty = torch.diag(torch.tensor([l2, 0.0], dtype=torch.float64))
    for _ in range(steps):
        p = torch.sigmoid(z @ w)
        grad = z.T @ (p - t) + penalty @ w
        hess = z.T @ (z * (p * (1 - p))[:, None]) + penalty + 1e-9 * torch.eye(2)
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if float(step.abs().max()) < 1e-10:
            break
    a_std, b_std = float(w[0]), float(w[1])
    return a_std / sd, b_std - a_std * mu / sd


def refusal_band(
    margin: Float[Tensor, " n"],
    refused: Bool[Tensor, " n"],
    p_band: tuple[float, float] = P_BAND,
    l2: float = L2,
) -> tuple[tuple[float, float] | None, float, float, str]:
    """The margins where the fitted refusal probability lies in ``p_band``, the fit's slope and
    intercept, and the reason when there is no band (the slope is not positive)."""
    p_lo, p_hi = p_band
    if not 0 < p_lo < p_hi < 1:
        raise RefusalLensError(f"p_band must satisfy 0 < low < high < 1, not {p_band}.")
    a, b = logistic_1d(margin, refused, l2)
    if a <= 0:
        why = f"refusal does not rise with the margin at this layer (fitted slope {a:.3f} ≤ 0)"
        return None, a, b, why
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    return ((logit(p_lo) - b) / a, (logit(p_hi) - b) / a), a, b, ""


def boundary_fit(
    layers: list[int],
    margins: Float[Tensor, "n layer"],
    refused: Bool[Tensor, " n"],
    p_band: tuple[float, float] = P_BAND,
    min_per_class: int = MIN_PER_CLASS,
    l2: float = L2,
) -> BoundaryFit:
    """:func:`choose_layer`, then :func:`refusal_band` at the chosen layer."""
    refused = torch.as_tensor(refused, dtype=torch.bool)
    layer, scores, why = choose_layer(layers, margins, refused, min_per_class)
    counts = {"n_refused": int(refused.sum()), "n_answered": int((~refused).sum())}
    if layer is None:
        return BoundaryFit(None, None, scores, **counts, p_band=p_band, reason=why)
    column = margins[:, layers.index(layer)]
    band, a, b, why = refusal_band(column, refused, p_band, l2)
    return BoundaryFit(
        layer, band, scores, **counts, slope=a, intercept=b, p_band=p_band, reason=why
    )


def check_shapes(layers: list[int], margins: Tensor, refused: Tensor) -> None:
    if margins.ndim != 2 or margins.shape != (len(refused), len(layers)):
        raise RefusalLensError(
            f"margins must be [n prompts, n layers] = [{len(refused)}, {len(layers)}], not "
            f"{list(margins.shape)}; pass one column per layer read and one flag per prompt."
        )
    if len(refused) == 0:
        raise RefusalLensError("No look-alike prompts to fit on; give at least a few.")
