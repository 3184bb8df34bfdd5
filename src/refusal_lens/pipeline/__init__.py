"""The pipeline of ``refusal-lens run``: one stage folder per step, and the run report.

>>> from refusal_lens.pipeline import RunConfig, run_pipeline
>>> run_pipeline(RunConfig.preset(quick=True))            # -> runs/smollm2-135m/report.html
>>> model = load_run_model("runs/smollm2-135m")             # the model it studied, fitted
>>> [stage.name for stage in REGISTRY]                      # the stages, in order
>>> RunConfig.preset(quick=True, rass={"contexts": 8}).rass  # a stage's settings: RASSSettings

The names import lazily: the registry and the config are read by the CLI's ``--help``,
which must not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "REGISTRY": "refusal_lens.pipeline.registry",
    "Registry": "refusal_lens.pipeline.registry",
    "Stage": "refusal_lens.pipeline.registry",
    "RunConfig": "refusal_lens.pipeline.config",
    "AttributionSettings": "refusal_lens.pipeline.stage_settings",
    "DirectionSettings": "refusal_lens.pipeline.stage_settings",
    "EvaluateSettings": "refusal_lens.pipeline.stage_settings",
    "GeometrySettings": "refusal_lens.pipeline.stage_settings",
    "InterventionsSettings": "refusal_lens.pipeline.stage_settings",
    "MitigationsSettings": "refusal_lens.pipeline.stage_settings",
    "OrganismSettings": "refusal_lens.pipeline.stage_settings",
    "RASSSettings": "refusal_lens.pipeline.stage_settings",
    "SearchSettings": "refusal_lens.pipeline.stage_settings",
    "TriggersSettings": "refusal_lens.pipeline.stage_settings",
    "StageContext": "refusal_lens.pipeline.context",
    "load_run_model": "refusal_lens.pipeline.context",
    "run_pipeline": "refusal_lens.pipeline.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'refusal_lens.pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
