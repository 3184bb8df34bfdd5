"""Refusal and false-refusal directions: extract, select, find, steer, orthogonalize, views.

The ``Direction`` value itself lives one level down, in
:mod:`refusal_lens.residual_direction`, so the primitives (``interventions``) can use it
without importing this stage."""

from refusal_lens.directions.extract import (
    Candidates,
    diff_in_means,
    false_refusal_vector,
    template_positions,
)
from refusal_lens.directions.screening import (
    ablation_kl,
    score_candidate,
    score_candidates,
    select_direction,
)
from refusal_lens.directions.selection import CandidateScore, SelectConfig, Selection
from refusal_lens.residual_direction import Direction

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
