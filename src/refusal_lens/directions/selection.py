"""The values of direction selection: its config, each candidate's scores, and the
:class:`Selection` (the chosen direction with every candidate's scores), which saves and loads.
The procedure that fills them is :mod:`refusal_lens.directions.screening`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from refusal_lens.artifacts import artifact_meta, json_writer, read_meta, save_artifact
from refusal_lens.configs import StageConfig, check_positive, check_range
from refusal_lens.directions.extract import Candidates
from refusal_lens.errors import RefusalLensError
from refusal_lens.residual_direction import Direction

SELECTION_FILE, SELECTION_TABLE, SELECTION_FIGURE = (
    "selection.json",
    "selection.md",
    "selection.png",
)


@dataclass(frozen=True)
class SelectConfig(StageConfig):
    """Selection settings; every threshold is reported with the result."""

    kl_max: float = 0.1
    induce_min: float | None = None  # None: the model's own refusal threshold (calibration)
    max_layer_frac: float = 0.8
    top_k: int = 8  # candidates fully scored after the screen; 0 scores every candidate
    batch_size: int = 32
    # with no survivor, among those failing fewest filters: "kl" = lowest KL when they fail
    # KL (the least harm to harmless prompts), else lowest bypass; "bypass" = lowest bypass
    # (the rule before 2026-11-26, which can pick an ablation that breaks the model)
    fallback_rule: str = "kl"

    def validate(self) -> None:
        if self.fallback_rule not in ("kl", "bypass"):
            raise RefusalLensError(
                f"fallback_rule must be 'kl' or 'bypass', not {self.fallback_rule!r}."
            )
        check_range("max_layer_frac", self.max_layer_frac, 0.0, 1.0)
        check_range("kl_max", self.kl_max, 0.0, math.inf)
        check_positive("batch_size", self.batch_size)
        if self.top_k < 0:
            raise RefusalLensError(f"top_k must be 0 (score all) or positive, not {self.top_k}.")


@dataclass
class CandidateScore:
    """One candidate's scores (``None`` where not computed) and the filters it failed."""

    layer: int
    position: int
    screen_bypass: float | None = None
    screen_induce: float | None = None
    bypass: float | None = None
    induce: float | None = None
    kl: float | None = None
    filtered_by: list[str] = field(default_factory=list)


@dataclass
class Selection:
    """The chosen direction, every candidate's scores, and how the choice was made."""

    direction: Direction
    table: list[CandidateScore]
    config: SelectConfig
    baseline: dict[str, float]
    fallback: bool = False
    message: str = ""
    prompts: dict[str, list[str]] = field(default_factory=dict)  # provenance, if recorded
    candidates: Candidates | None = None

    def scored(self) -> list[CandidateScore]:
        return [c for c in self.table if c.bypass is not None]

    def markdown(self) -> str:
        """The scored candidates as a Markdown table, best bypass first."""
        lines = [
            self.message,
            "",
            f"Baseline mean refusal score: harmful {self.baseline['harmful']:.2f}, "
            f"harmless {self.baseline['harmless']:.2f}. Filters: induce > "
            f"{self.config.induce_min}, KL < {self.config.kl_max}, layer < "
            f"{self.config.max_layer_frac} · n_layers.",
            "",
            "| layer | pos | bypass | induce | KL | screen bypass | filtered by |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in sorted(self.scored(), key=lambda c: c.bypass):
            screen = "" if c.screen_bypass is None else f"{c.screen_bypass:.2f}"
            lines.append(
                f"| {c.layer} | {c.position} | {c.bypass:.2f} | {c.induce:.2f} | {c.kl:.3f} | "
                f"{screen} | {', '.join(c.filtered_by) or '—'} |"
            )
        return "\n".join(lines) + "\n"

    def save(self, out: str | Path) -> Path:
        """The direction (``direction.*``), every candidate's scores (``selection.json``,
        ``selection.md``) and the score figure (``selection.png``) into folder ``out``."""
        import matplotlib.pyplot as plt

        from refusal_lens.directions.views import plot_selection

        out = Path(out)
        self.direction.save(out)
        fig = plot_selection(self)
        meta = artifact_meta(
            "selection",
            self.config,
            message=self.message,
            fallback=self.fallback,
            baseline=self.baseline,
            candidates=self.table,
            prompts=self.prompts,
        )
        files = {
            SELECTION_FIGURE: lambda p: fig.savefig(p, dpi=150, bbox_inches="tight", format="png"),
            SELECTION_TABLE: lambda p: p.write_text(self.markdown()),
            SELECTION_FILE: json_writer(meta),
        }
        try:
            return save_artifact(out, files)
        finally:
            plt.close(fig)

    @classmethod
    def load(cls, folder: str | Path) -> Selection:
        meta = read_meta(folder, SELECTION_FILE, "selection")
        table = [CandidateScore(**c) for c in meta["candidates"]]
        return cls(
            Direction.load(folder),
            table,
            SelectConfig.from_dict(meta["config"]),
            meta["baseline"],
            meta.get("fallback", False),
            meta.get("message", ""),
            meta.get("prompts", {}),
        )
