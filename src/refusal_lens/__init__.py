"""refusal-lens: the mechanistic study of over-refusal in chat models.

Stages, in the order the data flows: ``models`` (load a chat model into TransformerBridge),
``prompts`` (prompt sets and chat formatting), ``activations`` (residual streams),
``scoring`` (refusal scores and judges), ``generation``, ``alignment``, ``evaluation``,
``directions`` and ``interventions`` (refusal directions, ablation, addition, weight
orthogonalization), ``attribution`` and ``attribution_views`` (per-token attribution of
refusals), ``harm`` (a probe judge of harm), ``triggers`` (harmful cues vs triggers) and
``sanitize`` (trigger-matched benign data), ``geometry`` and ``geometry_views`` (the safety
boundary layer by layer), ``rass_generate`` and ``rass`` (boundary prompt generation and
selection; ``from refusal_lens.boundary.rass import rass``) and ``translate``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names -> defining module. Imported lazily: transformer_lens alone takes seconds.
_EXPORTS = {
    "load_model": "refusal_lens.models",
    "ModelHandle": "refusal_lens.models",
    "Prompt": "refusal_lens.prompts",
    "PromptSet": "refusal_lens.prompts",
    "load_prompts": "refusal_lens.prompts",
    "load_benchmark": "refusal_lens.prompts",
    "collect_residuals": "refusal_lens.activations",
    "Residuals": "refusal_lens.activations",
    "refusal_score": "refusal_lens.scoring",
    "refusal_scores": "refusal_lens.scoring",
    "refusal_rate": "refusal_lens.scoring",
    "is_refusal": "refusal_lens.scoring",
    "generate": "refusal_lens.generation",
    "Direction": "refusal_lens.directions",
    "diff_in_means": "refusal_lens.directions",
    "select_direction": "refusal_lens.directions",
    "false_refusal_vector": "refusal_lens.directions",
    "ablate": "refusal_lens.interventions",
    "add": "refusal_lens.interventions",
    "project_out": "refusal_lens.interventions",
    "orthogonalize_weights": "refusal_lens.directions.orthogonalize",
    "attribute": "refusal_lens.attribution.methods",
    "scores_without": "refusal_lens.attribution.methods",
    "attributions_html": "refusal_lens.attribution.views",
    "attribution_heatmap": "refusal_lens.attribution.views",
    "write_attribution_report": "refusal_lens.attribution.views",
    "fit_harm_judge": "refusal_lens.triggers.harm",
    "trigger_masks": "refusal_lens.triggers.masks",
    "TriggerMasks": "refusal_lens.triggers.masks",
    "boundary_geometry": "refusal_lens.boundary.geometry",
    "Geometry": "refusal_lens.boundary.geometry",
    "plot_boundary_grid": "refusal_lens.boundary.views",
    "plot_margins": "refusal_lens.boundary.views",
    "RASSConfig": "refusal_lens.boundary.rass",
    "RefusalLensError": "refusal_lens.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'refusal_lens' has no attribute {name!r}")
