"""Refusal before and after an intervention (the CLI's `steer`), and steering curves.

>>> result = steer(model, prompts, r, ablate=True, judge="substring")
>>> result.before.rate, result.after.rate, result.after.completions[0]
>>> steering_curve(model, {"harmless": harmless}, r, coefs=[0, 0.5, 1, 2])
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from refusal_lens.direction import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.interventions import ablate as ablate_ctx
from refusal_lens.interventions import add as add_ctx
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet
from refusal_lens.scoring import RefusalReport, refusal_rate


@dataclass
class SteerResult:
    """One prompt set's refusal without and with an intervention, under one judge."""

    intervention: dict[str, Any]
    before: RefusalReport
    after: RefusalReport

    def rows(self) -> list[dict[str, Any]]:
        """Per-prompt evidence: refused before/after, and completions or scores."""
        out = []
        for i in range(self.before.n):
            row: dict[str, Any] = {"before": self.before.refused[i], "after": self.after.refused[i]}
            for name, report in (("before", self.before), ("after", self.after)):
                if report.completions:
                    row[f"{name}_completion"] = report.completions[i]
                if report.scores:
                    row[f"{name}_score"] = report.scores[i]
            out.append(row)
        return out


def intervention(
    model: ModelHandle,
    direction: Direction,
    *,
    ablate: bool = False,
    coef: float | None = None,
    layer: int | None = None,
) -> contextlib.AbstractContextManager:
    """The context manager for exactly one of ``ablate=True`` or ``coef=...``."""
    if ablate == (coef is not None):
        raise RefusalLensError("Choose one intervention: ablate the direction, or add it at coef.")
    return ablate_ctx(model, direction) if ablate else add_ctx(model, direction, coef, layer)


def steer(
    model: ModelHandle,
    prompts: PromptSet,
    direction: Direction,
    *,
    ablate: bool = False,
    coef: float | None = None,
    layer: int | None = None,
    judge: str = "substring",
    max_new_tokens: int = 48,
    batch_size: int = 16,
    show_progress: bool = True,
) -> SteerResult:
    """Refusal rate of ``prompts`` as is, then under the intervention (same judge)."""
    context = intervention(model, direction, ablate=ablate, coef=coef, layer=layer)
    kwargs = dict(judge=judge, max_new_tokens=max_new_tokens, batch_size=batch_size)
    before = refusal_rate(model, prompts, show_progress=show_progress, **kwargs)
    with context:
        after = refusal_rate(model, prompts, show_progress=show_progress, **kwargs)
    at = direction.layer if layer is None else layer
    what = {"ablate": True} if ablate else {"add": coef, "layer": at}
    return SteerResult({**what, "direction": direction.metadata()}, before, after)


def steering_curve(
    model: ModelHandle,
    prompt_sets: Mapping[str, PromptSet],
    direction: Direction,
    coefs: Sequence[float],
    *,
    judge: str = "score",
    layer: int | None = None,
    batch_size: int = 16,
) -> dict[str, list[float]]:
    """Refusal rate of each prompt set at each addition coefficient (0 = no intervention)."""
    rates: dict[str, list[float]] = {name: [] for name in prompt_sets}
    for coef in coefs:
        with add_ctx(model, direction, coef, layer):
            for name, prompts in prompt_sets.items():
                report = refusal_rate(
                    model, prompts, judge, batch_size=batch_size, show_progress=False
                )
                rates[name].append(report.rate)
    return rates
