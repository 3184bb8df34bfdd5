"""Refusal before and after an intervention (the CLI's `steer`), and steering curves.

>>> result = steer(model, prompts, r, SteerConfig(ablate=True, judge="substring"))
>>> result.before.rate, result.after.rate, result.after.completions[0]
>>> result.save("runs/steer"); SteerResult.load("runs/steer").rows()[0]
>>> steering_curve(model, {"harmless": harmless}, r, coefs=[0, 0.5, 1, 2])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import artifact_meta, json_writer, read_meta, save_artifact
from refusal_lens.configs import StageConfig, check_positive
from refusal_lens.errors import RefusalLensError
from refusal_lens.interventions import ablate as ablate_ctx
from refusal_lens.interventions import add as add_ctx
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import RefusalReport, refusal_rate

STEER_FILE = "steer.json"


@dataclass(frozen=True)
class SteerConfig(StageConfig):
    """One intervention (ablate the direction, or add ``add`` × it at ``layer``) and the
    judge of refusal before and after it."""

    ablate: bool = False  # ablate the direction at every layer
    add: float | None = None  # add this coefficient × the direction at its layer (or layer)
    layer: int | None = None  # layer of the addition (default: the direction's)
    judge: str = "substring"  # refusal judge: substring (generates) or score
    max_new_tokens: int = 48
    batch_size: int = 16

    def validate(self) -> None:
        if self.ablate == (self.add is not None):
            raise RefusalLensError(
                "Choose one intervention: ablate the direction, or add it at coef."
            )
        if self.add is not None and not math.isfinite(self.add):
            raise RefusalLensError(
                f"add must be a finite coefficient, not {self.add}; e.g. 1.0, or -1.0 to "
                "subtract the direction."
            )
        if self.judge not in ("score", "substring"):
            raise RefusalLensError(f"judge must be 'score' or 'substring', not {self.judge!r}.")
        check_positive("max_new_tokens", self.max_new_tokens)
        check_positive("batch_size", self.batch_size)


@dataclass
class SteerResult:
    """One prompt set's refusal without and with an intervention, under one judge."""

    intervention: dict[str, Any]
    before: RefusalReport
    after: RefusalReport
    config: SteerConfig | None = None
    prompts: list[str] | None = None

    def save(self, folder: str | Path) -> Path:
        """``steer.json``: the intervention, both reports and the per-prompt rows."""
        rows = self.rows()
        if self.prompts is not None:
            rows = [{"prompt": p, **r} for p, r in zip(self.prompts, rows, strict=True)]
        meta = artifact_meta(
            "steer",
            self.config,
            intervention=self.intervention,
            rate_before=self.before.rate,
            rate_after=self.after.rate,
            before=asdict(self.before),
            after=asdict(self.after),
            rows=rows,
        )
        return save_artifact(folder, {STEER_FILE: json_writer(meta)})

    @classmethod
    def load(cls, folder: str | Path) -> SteerResult:
        meta = read_meta(folder, STEER_FILE, "steer")
        config = SteerConfig.from_dict(meta["config"]) if "config" in meta else None
        prompts = [r["prompt"] for r in meta["rows"] if "prompt" in r] or None
        before, after = RefusalReport(**meta["before"]), RefusalReport(**meta["after"])
        return cls(meta["intervention"], before, after, config, prompts)

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
    model: ModelHandle, direction: Direction, config: SteerConfig
) -> contextlib.AbstractContextManager:
    """The context manager of the config's one intervention."""
    if config.ablate:
        return ablate_ctx(model, direction)
    return add_ctx(model, direction, config.add, config.layer)


def steer(
    model: ModelHandle,
    prompts: PromptSet,
    direction: Direction,
    config: SteerConfig,
    *,
    show_progress: bool = True,
) -> SteerResult:
    """Refusal rate of ``prompts`` as is, then under the intervention (same judge)."""
    kwargs = dict(
        judge=config.judge, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size
    )
    before = refusal_rate(model, prompts, show_progress=show_progress, **kwargs)
    with intervention(model, direction, config):
        after = refusal_rate(model, prompts, show_progress=show_progress, **kwargs)
    at = direction.layer if config.layer is None else config.layer
    what = {"ablate": True} if config.ablate else {"add": config.add, "layer": at}
    what["direction"] = direction.metadata()
    return SteerResult(what, before, after, config, list(prompts.texts))


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
