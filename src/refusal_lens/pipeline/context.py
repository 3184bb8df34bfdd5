"""What every step of a run reads: the settings, the models and the held-out prompts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import local_path
from refusal_lens.calibration import Calibration
from refusal_lens.errors import RefusalLensError
from refusal_lens.evaluation import EvalConfig, EvalSets, eval_prompt_sets, training_prompts_of
from refusal_lens.models import ModelHandle, load_model
from refusal_lens.pipeline.config import RunConfig
from refusal_lens.pipeline.runner import FOLDERS, Runner
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.prompts.promptset import normalize_text

ORGANISM_FILE = "organism.json"


@dataclass
class Run:
    """One run: its config, its folder's runner and the models loaded so far."""

    config: RunConfig
    runner: Runner
    models: dict[str, ModelHandle] = field(default_factory=dict)
    _eval_sets: dict[str, EvalSets] = field(default_factory=dict)  # by the model's path

    def load(self, spec: str) -> ModelHandle:
        if spec not in self.models:
            c = self.config
            self.models[spec] = load_model(spec, c.device, c.dtype, c.system)
        return self.models[spec]

    def unload(self, spec: str) -> None:
        self.models.pop(spec, None)

    def base(self) -> ModelHandle:
        """The model as given (before any alignment by the run)."""
        return self.load(self.config.model)

    def organism(self, by: str) -> dict[str, Any]:
        folder = self.runner.require("organism", by)
        return json.loads((folder / ORGANISM_FILE).read_text(encoding="utf-8"))

    def model(self, by: str) -> ModelHandle:
        """The model under study: the run's aligned organism, or the model as its makers
        aligned it; its refusal score fitted to its own refusals (step 1's calibration)."""
        record = self.organism(by)
        # the model as given is loaded once (a second copy would double the run's memory)
        model = self.load(str(local_path(record["model"]))) if record["aligned"] else self.base()
        if record.get("calibration"):
            return Calibration.from_dict(record["calibration"]).apply(model)
        return model

    def calibrated_base(self, by: str) -> ModelHandle:
        """The model as given, its refusal score fitted to its own refusals (when the run
        aligned it, the base refuses differently from the organism and has its own fit)."""
        record, base = self.organism(by), self.base()
        fit = record.get("base_calibration" if record["aligned"] else "calibration")
        return Calibration.from_dict(fit).apply(base) if fit else base

    def aligned(self, by: str) -> bool:
        return bool(self.organism(by)["aligned"])

    def read(self, stage: str, by: str) -> Path:
        return self.runner.require(stage, by)

    def eval_config(self) -> EvalConfig:
        c = self.config
        return EvalConfig(
            n=c.n_eval, max_new_tokens=c.max_new_tokens, sets=c.eval_sets, seed=c.seed
        )

    def eval_sets(self, by: str) -> EvalSets:
        """The held-out test prompts every evaluation of the run uses (the organism's
        training prompts left out, so the base, the organism and each mitigation are judged
        on the same prompts)."""
        model = self.model(by)
        if model.path not in self._eval_sets:
            sets = eval_prompt_sets(self.eval_config(), training_prompts_of(model))
            self._eval_sets[model.path] = sets
        return self._eval_sets[model.path]

    def eval_texts(self, by: str) -> set[str]:
        return {normalize_text(t) for ps, _, _ in self.eval_sets(by).values() for t in ps.texts}

    def unseen(self, spec: str, by: str, exclude: set[str] = frozenset()) -> PromptSet:
        """``spec``'s prompts minus the test prompts, the organism's training prompts and
        ``exclude`` (normalized texts): for directions, probes and validation."""
        trained = {normalize_text(t) for t in training_prompts_of(self.model(by))}
        drop = self.eval_texts(by) | trained | exclude
        prompts = load_prompts(spec)
        kept = tuple(p for p in prompts if normalize_text(p.text) not in drop)
        return PromptSet(kept, name=prompts.name)


def load_run_model(folder: str | Path, device: str | None = None) -> ModelHandle:
    """The model a run studied, read back from its folder: the aligned organism, or the model
    as its makers aligned it, with the refusal-score fit of its step 1 applied.

    >>> model = load_run_model("runs/qwen2.5-coder-0.5b")
    >>> model.refusal_threshold          # fitted to the model's own refusals
    """
    record_path = Path(folder) / FOLDERS["organism"] / ORGANISM_FILE
    if not record_path.is_file():
        raise RefusalLensError(
            f"{folder} holds no finished organism step ({record_path} is missing). Point at "
            "a run folder (runs/<model>) and run `refusal-lens run MODEL` first."
        )
    record = json.loads(record_path.read_text(encoding="utf-8"))
    model = load_model(str(local_path(record["model"])), device=device)
    if record.get("calibration"):
        return Calibration.from_dict(record["calibration"]).apply(model)
    return model
