"""Safety-alignment fine-tuning (paper 2): SFT / P-SFT on α-weighted D_h + D_b, LoRA or full."""

from refusal_lens.alignment.data import PSFT_PREFIXES, REFUSALS, Example
from refusal_lens.alignment.train import (
    AlignConfig,
    AlignResult,
    align,
    answer_loss,
    example_weights,
)

__all__ = [
    "PSFT_PREFIXES",
    "REFUSALS",
    "AlignConfig",
    "AlignResult",
    "Example",
    "align",
    "answer_loss",
    "example_weights",
]
