"""refusal-lens: the mechanistic study of over-refusal in chat models.

The package follows the method's data flow:

- primitives: ``models`` (load a chat model into TransformerBridge), ``prompts`` (prompt sets,
  chat formatting, benchmark loaders), ``activations`` (residual streams), ``generation``,
  ``scoring`` (refusal scores and refusal judges), ``probes``, ``hooks`` (hook points, capture,
  projection), ``residual_direction`` (the Direction
  value), ``interventions`` (ablation, addition), ``evaluation`` (RR / ASR);
- stages: ``alignment`` (paper 2's safety fine-tuning), ``directions`` (extract, select,
  steer, orthogonalize), ``attribution`` (refusals attributed to tokens), ``triggers`` (harm
  judge, trigger masks, sanitized D_b), ``boundary`` (layer-wise geometry and RASS, paper 1),
  ``mitigation`` (the edit that removes over-refusal, found by search; exported);
- ``pipeline`` chains them; ``cli`` is the command line.

Every stage has one shape: a frozen ``XConfig``, one function, and a result with
``save(folder)`` / ``load(folder)``. The names below import lazily from their modules.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names -> defining module, in data-flow order. Imported lazily: transformer_lens
# alone takes seconds.
_EXPORTS = {
    "load_model": "refusal_lens.models",
    "ModelHandle": "refusal_lens.models",
    "cache_dir": "refusal_lens.locations",
    "data_dir": "refusal_lens.locations",
    "Prompt": "refusal_lens.prompts",
    "PromptSet": "refusal_lens.prompts",
    "load_prompts": "refusal_lens.prompts",
    "load_benchmark": "refusal_lens.prompts",
    "load_polyrefuse": "refusal_lens.prompts",
    "detect_language": "refusal_lens.languages",
    "collect_residuals": "refusal_lens.activations",
    "CollectConfig": "refusal_lens.activations",
    "Residuals": "refusal_lens.activations",
    "refusal_score": "refusal_lens.scoring",
    "refusal_scores": "refusal_lens.scoring",
    "refusal_rate": "refusal_lens.scoring",
    "refusal_rates": "refusal_lens.scoring",
    "is_refusal": "refusal_lens.scoring",
    "judge_text": "refusal_lens.scoring",
    "RefusalJudge": "refusal_lens.scoring",
    "ScoreJudge": "refusal_lens.scoring",
    "SubstringJudge": "refusal_lens.scoring",
    "RefusalReport": "refusal_lens.scoring",
    "generate": "refusal_lens.generation",
    "Direction": "refusal_lens.residual_direction",
    "ablate": "refusal_lens.interventions",
    "add": "refusal_lens.interventions",
    "project_out": "refusal_lens.interventions",
    "evaluate": "refusal_lens.evaluation",
    "EvalConfig": "refusal_lens.evaluation",
    "EvalResult": "refusal_lens.evaluation",
    "align": "refusal_lens.alignment",
    "AlignConfig": "refusal_lens.alignment",
    "AlignResult": "refusal_lens.alignment",
    "diff_in_means": "refusal_lens.directions.extract",
    "false_refusal_vector": "refusal_lens.directions.extract",
    "select_direction": "refusal_lens.directions.screening",
    "SelectConfig": "refusal_lens.directions.selection",
    "Selection": "refusal_lens.directions.selection",
    "find_direction": "refusal_lens.directions.find",
    "DirectionConfig": "refusal_lens.directions.find",
    "steer": "refusal_lens.directions.steer",
    "steering_curve": "refusal_lens.directions.steer",
    "SteerConfig": "refusal_lens.directions.steer",
    "SteerResult": "refusal_lens.directions.steer",
    "orthogonalize_weights": "refusal_lens.directions.orthogonalize",
    "export_direction": "refusal_lens.directions.export",
    "export_gguf": "refusal_lens.directions.export",
    "export_steering_vectors": "refusal_lens.directions.export",
    "read_gguf": "refusal_lens.directions.export",
    "attribute": "refusal_lens.attribution.methods",
    "AttributionConfig": "refusal_lens.attribution.methods",
    "Attributions": "refusal_lens.attribution.methods",
    "METHODS": "refusal_lens.attribution.methods",
    "AttributionMethod": "refusal_lens.attribution.methods",
    "scores_without": "refusal_lens.attribution.methods",
    "TokenAttribution": "refusal_lens.attribution.methods",
    "attributions_html": "refusal_lens.attribution.views",
    "attribution_heatmap": "refusal_lens.attribution.views",
    "write_attribution_report": "refusal_lens.attribution.views",
    "fit_harm_judge": "refusal_lens.triggers.harm",
    "HarmJudge": "refusal_lens.triggers.harm",
    "HarmJudgeConfig": "refusal_lens.triggers.harm",
    "HarmScorer": "refusal_lens.triggers.harm",
    "harm_scorer": "refusal_lens.triggers.harm",
    "trigger_masks": "refusal_lens.triggers.masks",
    "TriggerConfig": "refusal_lens.triggers.masks",
    "TriggerMasks": "refusal_lens.triggers.masks",
    "sanitize": "refusal_lens.triggers.sanitize",
    "SanitizeConfig": "refusal_lens.triggers.sanitize",
    "SanitizedData": "refusal_lens.triggers.sanitize",
    "boundary_geometry": "refusal_lens.boundary.geometry",
    "GeometryConfig": "refusal_lens.boundary.geometry",
    "Geometry": "refusal_lens.boundary.geometry",
    "plot_boundary_grid": "refusal_lens.boundary.views",
    "plot_margins": "refusal_lens.boundary.views",
    "rass": "refusal_lens.boundary.rass",
    "RASSConfig": "refusal_lens.boundary.rass_config",
    "RASSResult": "refusal_lens.boundary.rass_result",
    "BoundaryFit": "refusal_lens.boundary.refusal_fit",
    "boundary_fit": "refusal_lens.boundary.refusal_fit",
    "EditConfig": "refusal_lens.mitigation.edits",
    "Edit": "refusal_lens.mitigation.edits",
    "apply_edit": "refusal_lens.mitigation.edits",
    "SearchConfig": "refusal_lens.mitigation.search",
    "SearchResult": "refusal_lens.mitigation.search",
    "search_edits": "refusal_lens.mitigation.search",
    "export_edit": "refusal_lens.mitigation.export",
    "RunConfig": "refusal_lens.pipeline.config",
    "OrganismSettings": "refusal_lens.pipeline.stage_settings",
    "EvaluateSettings": "refusal_lens.pipeline.stage_settings",
    "DirectionSettings": "refusal_lens.pipeline.stage_settings",
    "InterventionsSettings": "refusal_lens.pipeline.stage_settings",
    "AttributionSettings": "refusal_lens.pipeline.stage_settings",
    "TriggersSettings": "refusal_lens.pipeline.stage_settings",
    "GeometrySettings": "refusal_lens.pipeline.stage_settings",
    "RASSSettings": "refusal_lens.pipeline.stage_settings",
    "MitigationsSettings": "refusal_lens.pipeline.stage_settings",
    "SearchSettings": "refusal_lens.pipeline.stage_settings",
    "REGISTRY": "refusal_lens.pipeline.registry",
    "Stage": "refusal_lens.pipeline.registry",
    "StageContext": "refusal_lens.pipeline.context",
    "run_pipeline": "refusal_lens.pipeline.run",
    "load_run_model": "refusal_lens.pipeline.context",
    "write_report": "refusal_lens.pipeline.report",
    "RefusalLensError": "refusal_lens.errors",
    "ModelMismatchWarning": "refusal_lens.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'refusal_lens' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (what tab completion shows), not only what was imported so far."""
    return sorted({*globals(), *__all__})
