"""The pipeline of ``refusal-lens run``: one stage folder per step, and the run report.

>>> from refusal_lens.pipeline import RunConfig, run_pipeline
>>> run_pipeline(RunConfig.quick(model="smollm2-135m"))   # -> runs/smollm2-135m/report.html
>>> model = load_run_model("runs/smollm2-135m")             # the model it studied, fitted
"""

from refusal_lens.pipeline.config import STAGE_NAMES, STAGES, RunConfig
from refusal_lens.pipeline.context import load_run_model
from refusal_lens.pipeline.run import run_pipeline

__all__ = ["STAGES", "STAGE_NAMES", "RunConfig", "load_run_model", "run_pipeline"]
