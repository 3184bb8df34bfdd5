"""Shared matplotlib setup for every stage's figures.

Each stage draws its own figures in its ``views`` module; they return the Figure and, given
``path``, also save it (atomically, through :func:`save_figure`). matplotlib is imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refusal_lens.artifacts import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot``, imported on first use (headless machines fall back to Agg)."""
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` atomically; the format follows the suffix (PNG by default)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def finish(fig: Any, path: str | Path | None, tight: bool = True) -> Any:
    """Lay ``fig`` out (``tight``), save it to ``path`` when given, and return it."""
    if tight:
        fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
