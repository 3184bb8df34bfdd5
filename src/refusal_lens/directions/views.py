"""Figures of the directions stage: selection scores by layer, refusal rate under steering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from refusal_lens.plots import finish, pyplot

POSITION_CMAP = "viridis"


def plot_selection(selection: Any, path: str | Path | None = None, title: str = "") -> Any:
    """Bypass, induce and KL against layer, one line per post-instruction position.

    Fully scored candidates are solid markers; screen estimates (first order) are faint dashed
    lines; thresholds are grey lines; the chosen direction is a red star.
    """
    plt = pyplot()
    config, chosen = selection.config, selection.direction
    positions = sorted({c.position for c in selection.table})
    colors = plt.get_cmap(POSITION_CMAP)(
        [i / max(len(positions) - 1, 1) for i in range(len(positions))]
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharex=True)
    panels = [
        ("bypass", "screen_bypass", "mean refusal score, harmful, ablated", None),
        ("induce", "screen_induce", "mean refusal score, harmless, added", config.induce_min),
        ("kl", None, "KL(base ‖ ablated), harmless", config.kl_max),
    ]
    for ax, (key, screen_key, ylabel, threshold) in zip(axes, panels, strict=True):
        for pos, color in zip(positions, colors, strict=True):
            rows = sorted((c for c in selection.table if c.position == pos), key=lambda c: c.layer)
            if screen_key:
                est = [(c.layer, getattr(c, screen_key)) for c in rows]
                est = [(x, y) for x, y in est if y is not None]
                if est:
                    ax.plot(*zip(*est, strict=True), "--", color=color, alpha=0.35, lw=1)
            full = [(c.layer, getattr(c, key)) for c in rows if getattr(c, key) is not None]
            if full:
                ax.plot(*zip(*full, strict=True), "o-", color=color, ms=3, lw=1, label=f"pos {pos}")
        if key == "bypass":
            ax.axhline(selection.baseline["harmful"], color="grey", ls=":", lw=1, label="no edit")
        if key == "induce":
            ax.axhline(selection.baseline["harmless"], color="grey", ls=":", lw=1, label="no edit")
        if threshold is not None:
            ax.axhline(threshold, color="black", lw=0.8, label="threshold")
        if key == "kl":
            ax.set_yscale("log")
        ax.axvspan(
            config.max_layer_frac * max(c.layer + 1 for c in selection.table),
            max(c.layer for c in selection.table) + 0.5,
            color="grey",
            alpha=0.12,
            lw=0,
        )
        value = chosen.scores.get(key)
        if value is not None:
            ax.plot([chosen.layer], [value], "*", color="red", ms=14, label="selected")
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
        ax.set_title(key)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title or f"Refusal-direction candidates of {chosen.model}")
    return finish(fig, path)


def plot_steering(
    coefs: Sequence[float],
    rates: Mapping[str, Sequence[float]],
    path: str | Path | None = None,
    title: str = "Refusal rate under activation addition",
    xlabel: str = "steering coefficient (× refusal direction)",
) -> Any:
    """Refusal rate (y, %) against steering coefficient (x), one line per prompt set."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in rates.items():
        ax.plot(list(coefs), [100 * v for v in values], "o-", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("refusal rate (%)")
    ax.set_ylim(-3, 103)
    ax.axvline(0, color="grey", lw=0.8)
    ax.legend()
    ax.set_title(title)
    return finish(fig, path)
