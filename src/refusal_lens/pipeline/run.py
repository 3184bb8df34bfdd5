"""``run_pipeline``: the method section of refusal-lens, one call per step.

    runs/<model>/
      run.json            config, versions, hardware, stage timings
      00-model/ … 09-mitigations/   one folder per stage: its artifacts, section.json, stage.json
      report.html         one self-contained page (written last)

The stages, their order, folders and dependencies are the registry's
(:mod:`refusal_lens.pipeline.registry`):

0. Model facts.
1. Organism: a model that refuses fewer than ``refusal_threshold`` of harmful prompts is
   aligned with the organism recipe; the run goes on with the aligned model.
2. Evaluate: RR and ASR on held-out test prompts, both judges.
3. Refusal direction r (selection) and the false-refusal vector w′ for each λ.
4. Interventions: ablate r, add r, ablate w′, on validation prompts; λ chosen there.
5. Attribution of the most over-refused benign test prompts, with token views.
6. Harm judge, trigger masks and lexicon, sanitized D_b.
7. Boundary geometry: a probe per layer, borderline prompts against it.
8. RASS: generate, screen, select boundary prompts.
9. Mitigations on the test prompts of step 2; the w′ edit exported as weights.
10. Search (with ``search``; ``refusal-lens mitigate``): the edit that minimises over-refusal
    under a harmful-refusal floor and a KL bound, judged on held-out prompts and exported.
11. The report.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from refusal_lens.artifacts import write_json
from refusal_lens.cache import library_versions
from refusal_lens.models import load_model
from refusal_lens.pipeline.config import RunConfig
from refusal_lens.pipeline.context import Run
from refusal_lens.pipeline.records import FACTS_FILE
from refusal_lens.pipeline.registry import MODEL, REGISTRY, Registry, Stage
from refusal_lens.pipeline.runner import (
    REPORT_FILE,
    RUN_FILE,
    RUN_FORMAT,
    Runner,
    check_run_folder,
)

log = logging.getLogger(__name__)


def run_pipeline(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    force: str | None = None,
    say: Any = print,
    registry: Registry = REGISTRY,
) -> Path:
    """Run every stage of ``config.stages`` into ``out`` (default ``runs/<model id>``),
    reusing complete stage folders, and write the report; returns the report's path.
    ``registry``: the stages (default: the method's; add one with ``REGISTRY.with_stage``)."""
    torch.manual_seed(config.seed)
    registry.check_selection(config.stages)
    for stage in registry:  # every setting is checked before the model loads
        stage.settings_of(config)
    folder = Path(out) if out else _default_folder(config)
    check_run_folder(folder)
    models = {config.model: load_model(config.model, config.device, config.dtype, config.system)}
    runner = Runner(folder, config, force, say, registry)  # the model loaded: claim the folder
    run = Run(config, runner, models)
    _write_run_json(run, finished=False)
    for stage in registry:
        step = stage.step_function()
        runner.run(stage.name, _bind(run, stage, step), stage.outside_of(run), stage.always)
    _write_run_json(run, finished=True)
    from refusal_lens.pipeline.report import write_report

    report = write_report(runner.folder)
    say(f"report: {report} (stages: {runner.folder}/NN-stage/; {_summary(runner)})")
    return report


def _bind(run: Run, stage: Stage, step: Any) -> Any:
    """``step(folder)`` for the runner: the stage's function, given its context."""
    return lambda out: step(run.context(stage, out))


def _default_folder(config: RunConfig) -> Path:
    """``runs/<name>``: a model folder's or file's name, a spec or hub id as written."""
    path = Path(config.model)
    name = path.stem if path.exists() else config.model.replace("/", "--")
    return Path("runs") / name


def _summary(runner: Runner) -> str:
    counts: dict[str, int] = {}
    for record in runner.records.values():
        counts[record.status] = counts.get(record.status, 0) + 1
    total = time.time() - runner.started
    return ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; {total / 60:.1f} min"


def _write_run_json(run: Run, finished: bool) -> None:
    """``run.json``: the format, the config, versions, hardware and the stage timings."""
    runner = run.runner
    record = {
        "kind": "run",
        "format": RUN_FORMAT,
        "model": run.config.model,
        "version": metadata.version("refusal-lens"),
        "config": run.config.to_dict(),
        "model_facts": _model_facts(run) if finished else {},
        "versions": library_versions(),
        "hardware": hardware(),
        "stages": runner.stage_table(),
        "started": datetime.fromtimestamp(runner.started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.time() - runner.started, 1),
        "finished": finished,
        "report": REPORT_FILE,
    }
    write_json(runner.folder / RUN_FILE, record)


def _model_facts(run: Run) -> dict[str, Any]:
    """Step 0's facts, read back from its folder (loading the base again for them would
    double the memory of a run that ends on the aligned organism)."""
    registry = run.runner.registry
    facts = run.runner.path(MODEL.name) / FACTS_FILE if MODEL.name in registry else None
    if facts is not None and facts.is_file():
        return json.loads(facts.read_text(encoding="utf-8"))
    return run.base().describe()


def hardware() -> str:
    device = "CPU"
    if torch.cuda.is_available():
        device = f"CUDA {torch.cuda.get_device_name(0)}"
    return f"{platform.machine()} {device}, {torch.get_num_threads()} threads"
