"""Linear probes on residual-stream features: L2-regularised logistic regression, fitted by
L-BFGS on standardised features. Deterministic (full-batch, zero initialisation)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from refusal_lens.errors import RefusalLensError

MIN_PER_CLASS = 8


@dataclass
class LinearProbe:
    """``p(positive | x) = sigmoid(w · (x − mean) / std + b)``."""

    weight: Float[Tensor, " d"]
    bias: float
    mean: Float[Tensor, " d"]
    std: Float[Tensor, " d"]

    def logits(self, x: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
        z = (x.float() - self.mean) / self.std
        return z @ self.weight + self.bias

    def predict(self, x: Float[Tensor, "n d"]) -> Bool[Tensor, " n"]:
        return self.logits(x) > 0

    def accuracy(self, x: Float[Tensor, "n d"], y: Bool[Tensor, " n"]) -> float:
        return float((self.predict(x) == y.bool()).float().mean())

    def direction(self) -> Float[Tensor, " d"]:
        """The probe's normal vector in the original (unstandardised) coordinates."""
        return self.weight / self.std


def check_classes(y: Bool[Tensor, " n"], what: str = "probe") -> None:
    """Both classes need ``MIN_PER_CLASS`` examples, or the fit is noise."""
    check_counts(int(y.sum()), int((~y.bool()).sum()), what)


def check_counts(pos: int, neg: int, what: str = "probe") -> None:
    """:func:`check_classes` from the two classes' counts."""
    if min(pos, neg) < MIN_PER_CLASS:
        raise RefusalLensError(
            f"A {what} needs at least {MIN_PER_CLASS} prompts per class; got {pos} positive and "
            f"{neg} negative. Add prompts to the smaller class."
        )


def fit_probe(
    x: Float[Tensor, "n d"], y: Bool[Tensor, " n"], l2: float = 1e-2, steps: int = 100
) -> LinearProbe:
    """Fit a logistic probe separating ``y`` (True = positive class)."""
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise RefusalLensError(
            f"fit_probe needs x [n, d] and y [n]; got {tuple(x.shape)}, {tuple(y.shape)}."
        )
    check_classes(y)
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    target = y.float()
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, target)
        loss = loss + l2 * (w @ w) / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(w.detach(), float(b.detach()), mean, std)


def fit_probe_chunks(
    chunks: Callable[[], Iterable[tuple[Tensor, Tensor]]], l2: float = 1e-2, steps: int = 100
) -> LinearProbe:
    """:func:`fit_probe` on data read a piece at a time: every call of ``chunks()`` yields the
    same ``(x [k, d], y [k])`` pieces in order, and memory holds one of them, whatever the
    number of rows (the data are read twice for the standardisation, then once per L-BFGS
    evaluation). Still full-batch: the loss is summed piece by piece, and the mean and standard
    deviation are accumulated in float64, so the probe is :func:`fit_probe`'s up to where
    L-BFGS stops (weights within ~1e-3)."""
    n, pos, total = 0, 0, None
    for x, y in chunks():
        total = x.double().sum(0) + (0 if total is None else total)
        n, pos = n + len(x), pos + int(y.sum())
    check_counts(pos, n - pos)
    mean = total / n
    squares = sum(((x.double() - mean) ** 2).sum(0) for x, _ in chunks())
    std = (squares / (n - 1)).sqrt().float().clamp(min=1e-6)
    mean = mean.float()
    w = torch.zeros(len(mean), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = l2 * (w @ w) / 2
        loss.backward()
        for x, y in chunks():
            z = (x.float() - mean) / std
            part = torch.nn.functional.binary_cross_entropy_with_logits(
                z @ w + b, y.float(), reduction="sum"
            )
            (part / n).backward()
            loss = loss.detach() + part.detach() / n
        return loss.detach()

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(w.detach(), float(b.detach()), mean, std)


def auroc(positive: Tensor | list[float], negative: Tensor | list[float]) -> float | None:
    """P(a positive scores above a negative), ties counted half: the Mann–Whitney U from
    ranks (ties averaged), in O(n log n); ``None`` when a side is empty."""
    pos = torch.as_tensor(positive, dtype=torch.float64).flatten()
    neg = torch.as_tensor(negative, dtype=torch.float64).flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        return None
    _, inverse, counts = torch.unique(
        torch.cat([pos, neg]), return_inverse=True, return_counts=True
    )
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]  # 1-based, ties averaged
    n_pos, n_neg = pos.numel(), neg.numel()
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
