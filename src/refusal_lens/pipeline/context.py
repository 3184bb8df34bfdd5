"""What every step of a run reads: the settings, the models, the held-out prompts and the
results of the stages it depends on, through a context bound to the step's stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import local_path
from refusal_lens.calibration import Calibration
from refusal_lens.errors import RefusalLensError
from refusal_lens.evaluation import EvalConfig, EvalSets, eval_prompt_sets, training_prompts_of
from refusal_lens.models import ModelHandle, load_model
from refusal_lens.models.load import model_path
from refusal_lens.models.memory import free_weights
from refusal_lens.pipeline import settings
from refusal_lens.pipeline.config import RunConfig
from refusal_lens.pipeline.records import Organism
from refusal_lens.pipeline.registry import ORGANISM, REGISTRY, Stage
from refusal_lens.pipeline.runner import Runner
from refusal_lens.pipeline.sections import write_section
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.prompts.promptset import normalize_text


@dataclass
class Run:
    """One run: its config, its folder's runner and the models loaded so far (shared by the
    steps, so that a model is loaded once).

    The run holds at most ``capacity`` models, the current stage's ``models`` (1, or 2 where
    a step reads the base beside the aligned organism): loading one more drops the least
    recently used first, so that a run never holds a model that its current step does not
    read (its memory is then about one model's weights, ``benchmarks/stage_memory.py``)."""

    config: RunConfig
    runner: Runner
    models: dict[str, ModelHandle] = field(default_factory=dict)
    eval_sets: dict[str, EvalSets] = field(default_factory=dict)  # by the model's path
    capacity: int = 1

    def load(self, spec: str) -> ModelHandle:
        if spec in self.models:
            self.models[spec] = self.models.pop(spec)  # the most recently used goes last
            return self.models[spec]
        while len(self.models) >= max(self.capacity, 1):
            self.unload(next(iter(self.models)))
        c = self.config
        self.models[spec] = load_model(spec, c.device, c.dtype, c.system)
        return self.models[spec]

    def unload(self, spec: str) -> None:
        """Drop ``spec``'s model and hand its memory back: its weights go to the meta
        device, so a handle a step still holds can no longer run."""
        model = self.models.pop(spec, None)
        if model is not None:
            free_weights(model)  # freed even if a step still holds the handle (then unusable)
            release_memory()

    def release(self) -> None:
        """Drop every model (a step that loads weights of its own, such as an export)."""
        for spec in list(self.models):
            self.unload(spec)

    def base(self) -> ModelHandle:
        """The model as given (before any alignment by the run)."""
        return self.load(self.config.model)

    def context(self, stage: Stage, out: Path) -> StageContext:
        self.capacity = stage.models
        return StageContext(self, stage, out, stage.settings_of(self.config))


def release_memory() -> None:
    """Collect what is unreachable now and empty the CUDA cache, so that dropped weights
    leave the process (CPU) and the device (CUDA) before the next model loads."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class StageContext:
    """What the step of ``stage`` sees: ``out`` (its folder, being written), ``settings`` (its
    library configs, hashed into its key), the models, and the folders of the stages it
    reads: only those its registry record lists in ``depends``."""

    run: Run
    stage: Stage
    out: Path
    settings: dict[str, Any]

    @property
    def config(self) -> RunConfig:
        return self.run.config

    @property
    def say(self) -> Callable[[str], None]:
        return self.run.runner.say

    def input(self, stage: Stage) -> Path:
        """The folder of ``stage``'s result; an error when this stage does not list it in
        ``depends`` (its key would not see a change there) or when it was not run."""
        if stage.name not in self.stage.depends:
            raise RefusalLensError(
                f"Stage {self.stage.name!r} reads the result of {stage.name!r}, which its "
                "registry record does not list in depends: add it there (refusal_lens."
                "pipeline.registry), so that its key sees that result."
            )
        return self.run.runner.require(stage.name, self.stage.name)

    def write_section(self, **parts: Any) -> None:
        """The stage's ``section.json``: ``text``, ``tables``, ``figures``, ``prompts``,
        ``tokens`` (see :func:`refusal_lens.pipeline.sections.write_section`)."""
        folder = self.run.runner.name(self.stage.name)
        write_section(self.out, folder, self.stage.title, **parts)

    def organism(self) -> Organism:
        return Organism.load(self.input(ORGANISM))

    def aligned(self) -> bool:
        return self.organism().aligned

    def base(self) -> ModelHandle:
        return self.run.base()

    def model(self) -> ModelHandle:
        """The model under study: the run's aligned organism, or the model as its makers
        aligned it; its refusal score fitted to its own refusals (step 1's calibration)."""
        record = self.organism()
        # the model as given is loaded once (a second copy would double the run's memory)
        model = self.run.load(str(local_path(record.model))) if record.aligned else self.base()
        return _calibrated(model, record.calibration)

    def model_path(self) -> str:
        """The folder (or hub id) of :meth:`model`'s weights, without loading them."""
        record = self.organism()
        return str(local_path(record.model)) if record.aligned else model_path(self.config.model)

    def calibrated_base(self) -> ModelHandle:
        """The model as given, its refusal score fitted to its own refusals (when the run
        aligned it, the base refuses differently from the organism and has its own fit)."""
        record = self.organism()
        return _calibrated(
            self.base(), record.base_calibration if record.aligned else record.calibration
        )

    def eval_config(self) -> EvalConfig:
        return settings.evaluate(self.config)["eval"]

    def eval_sets(self) -> EvalSets:
        """The held-out test prompts every evaluation of the run uses (the organism's
        training prompts left out, so the base, the organism and each mitigation are judged
        on the same prompts)."""
        path = self.model_path()
        if path not in self.run.eval_sets:
            sets = eval_prompt_sets(self.eval_config(), training_prompts_of(path))
            self.run.eval_sets[path] = sets
        return self.run.eval_sets[path]

    def eval_texts(self) -> set[str]:
        return {normalize_text(t) for ps, _, _ in self.eval_sets().values() for t in ps.texts}

    def unseen(self, spec: str, exclude: set[str] = frozenset()) -> PromptSet:
        """``spec``'s prompts minus the test prompts, the organism's training prompts and
        ``exclude`` (normalized texts): for directions, probes and validation."""
        trained = {normalize_text(t) for t in training_prompts_of(self.model_path())}
        drop = self.eval_texts() | trained | exclude
        prompts = load_prompts(spec)
        kept = tuple(p for p in prompts if normalize_text(p.text) not in drop)
        return PromptSet(kept, name=prompts.name)


def _calibrated(model: ModelHandle, fit: dict[str, Any] | None) -> ModelHandle:
    return Calibration.from_dict(fit).apply(model) if fit else model


def load_run_model(folder: str | Path, device: str | None = None) -> ModelHandle:
    """The model a run studied, read back from its folder: the aligned organism, or the model
    as its makers aligned it, with the refusal-score fit of its step 1 applied.

    >>> model = load_run_model("runs/qwen2.5-coder-0.5b")
    >>> model.refusal_threshold          # fitted to the model's own refusals
    """
    stage_folder = Path(folder) / REGISTRY.folder(ORGANISM.name)
    if not (stage_folder / Organism.FILE).is_file():
        raise RefusalLensError(
            f"{folder} holds no finished organism step ({stage_folder / Organism.FILE} is "
            "missing). Point at a run folder (runs/<model>) and run `refusal-lens run MODEL` "
            "first."
        )
    record = Organism.load(stage_folder)
    return _calibrated(load_model(str(local_path(record.model)), device=device), record.calibration)
