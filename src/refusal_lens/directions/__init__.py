"""Refusal and false-refusal directions: extraction, selection, the ``Direction`` value."""

from refusal_lens.directions.direction import Direction
from refusal_lens.directions.extract import (
    Candidates,
    diff_in_means,
    false_refusal_vector,
    template_positions,
)
from refusal_lens.directions.select import (
    CandidateScore,
    SelectConfig,
    Selection,
    ablation_kl,
    score_candidate,
    score_candidates,
    select_direction,
)

__all__ = [
    "CandidateScore",
    "Candidates",
    "Direction",
    "SelectConfig",
    "Selection",
    "ablation_kl",
    "diff_in_means",
    "false_refusal_vector",
    "score_candidate",
    "score_candidates",
    "select_direction",
    "template_positions",
]
