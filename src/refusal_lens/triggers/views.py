"""Figures of the triggers stage: the ranked trigger lexicon."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refusal_lens.plots import finish, pyplot
from refusal_lens.triggers.masks import LexiconEntry

KIND_COLORS = {"trigger": "tab:orange", "harmful_cue": "tab:red", "neutral": "tab:gray"}


def plot_lexicon(
    lexicon: Sequence[LexiconEntry], path: str | Path | None = None, top: int = 30, title: str = ""
) -> Any:
    """The first ``top`` entries of the ranked trigger lexicon: carrier effect per word,
    coloured by kind, with the number of requests in which it has that kind. Saved to ``path``
    when given; returns the figure."""
    plt = pyplot()
    rows = list(lexicon)[:top][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.22 * len(rows) + 1.2))
    ax.barh(
        range(len(rows)),
        [e.carrier_effect for e in rows],
        color=[KIND_COLORS[e.kind] for e in rows],
    )
    ax.set_yticks(range(len(rows)), [f"{e.word}  (×{e.n_requests})" for e in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("carrier effect: rise in refusal score in benign carriers (log-odds)")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS[k]) for k in ("trigger", "harmful_cue")
    ]
    ax.legend(handles, ["trigger", "harmful cue"], loc="lower right", fontsize=8)
    ax.set_title(title or "Trigger lexicon (× = requests)", fontsize=10)
    return finish(fig, path, tight=False)
