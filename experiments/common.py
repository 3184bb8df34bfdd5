"""Shared edges of the experiment scripts: arguments, hardware note, figure and table output."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from refusal_lens.artifacts import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def parser(doc: str | None, n: int, **extra: float) -> argparse.ArgumentParser:
    """Arguments every experiment takes: model, prompts per set, data and output folders."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=n, help="prompts per set (seeded sample)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "figures")
    for name, default in extra.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return p


def hardware() -> str:
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(fig, path: Path, tight: bool = True) -> None:
    import matplotlib.pyplot as plt

    from refusal_lens.viz import save_figure as save

    if tight:
        fig.tight_layout()
    save(fig, path, dpi=120)
    plt.close(fig)


def organism_config(model: str, alpha: float, data: Path):
    """The default alignment recipe at ``alpha`` (the one ``align_sweep.py`` caches)."""
    from refusal_lens.alignment import AlignConfig

    return AlignConfig(
        model=model, alpha=alpha, device="cpu", benign_path=str(data / "alpaca_instructions.json")
    )
