"""The run folder's bookkeeping: which stages are complete, which to (re)run, progress lines.

A stage's folder ``runs/<model>/NN-stage/`` is written into a temporary sibling and renamed
into place with its ``stage.json`` last, so a folder that exists is complete: a run killed at
any point leaves at most a hidden temporary folder (removed on the next run) and resumes at
the interrupted stage. ``stage.json`` records the stage's key: a hash of the run settings the
stage reads (``RunConfig.stage_config``) and of the keys of the stages whose results it
reads. A stage whose folder holds the same key is skipped; ``force`` reruns a stage and every
later one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import atomic_dir, write_json
from refusal_lens.errors import RefusalLensError
from refusal_lens.pipeline.config import STAGES, RunConfig

RUN_FORMAT = 1  # bump when the layout of a run folder changes
# Part of every stage's key: bump when a step's method changes its results, so that stages
# computed by the older method are rerun rather than reused. 2: the score judge is fitted to
# the model's own refusals (refusal_lens.calibration). 3: direction selection's fallback
# prefers the lowest KL when every candidate fails KL (SelectConfig.fallback_rule).
METHOD_VERSION = 3
RUN_FILE = "run.json"
STAGE_FILE = "stage.json"
SECTION_FILE = "section.json"
REPORT_FILE = "report.html"
# Which earlier stages' results each stage reads.
DEPENDS: dict[str, tuple[str, ...]] = {
    "model": (),
    "organism": ("model",),
    "evaluate": ("organism",),
    "direction": ("organism",),
    "interventions": ("organism", "evaluate", "direction"),
    "attribution": ("organism", "evaluate", "direction"),
    "triggers": ("organism",),
    "geometry": ("organism", "direction", "evaluate"),
    "rass": ("organism", "evaluate", "direction", "triggers", "geometry"),
    "mitigations": ("organism", "evaluate", "direction", "interventions", "triggers", "rass"),
    "search": ("organism", "direction", "geometry", "rass"),
}
# Relative cost of each stage (seconds of a --quick run of the bundled model on 2 cores), for
# the estimate of the time left: scaled by how long the stages run so far took.
WEIGHTS = {
    "model": 1,
    "organism": 180,
    "evaluate": 110,
    "direction": 35,
    "interventions": 130,
    "attribution": 5,
    "triggers": 70,
    "geometry": 40,
    "rass": 70,
    "mitigations": 210,
    "search": 900,
}
FOLDERS = {folder.split("-", 1)[1]: folder for folder, _ in STAGES}
# Stages that run only when asked for (``--search``, ``mitigate``): a run that leaves one out
# and has no folder of it does not list it at all.
OPTIONAL = ("search",)
TITLES = {folder.split("-", 1)[1]: title for folder, title in STAGES}
OLD_LAYOUT = ("residuals", "refusal", "summary.md", "model.json", "config.json")


def digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_run_folder(folder: Path) -> None:
    """Refuse a folder written by another version of the run layout, or by something else."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    meta = folder / RUN_FILE
    if not meta.is_file():
        old = [name for name in OLD_LAYOUT if (folder / name).exists()]
        what = (
            f"an older refusal-lens run ({', '.join(old)}; no {RUN_FILE})"
            if old
            else f"files that are not a refusal-lens run (no {RUN_FILE})"
        )
        raise RefusalLensError(
            f"{folder} holds {what}. refusal-lens never mixes runs: move it aside, or pass "
            "--out with a new folder."
        )
    found = json.loads(meta.read_text(encoding="utf-8")).get("format")
    if found != RUN_FORMAT:
        raise RefusalLensError(
            f"{folder} was written by a refusal-lens run of format {found} (this one writes "
            f"format {RUN_FORMAT}); move it aside or pass --out with a new folder."
        )


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MB (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024, 1)


@dataclass
class StageRecord:
    name: str
    title: str
    status: str  # "ran", "cached" or "not run"
    seconds: float = 0.0
    peak_rss_mb: float | None = None  # the process's peak resident memory after the stage


@dataclass
class Runner:
    """Runs the stages of one run folder in order, skipping those already complete."""

    folder: Path
    config: RunConfig
    force: str | None = None
    say: Callable[[str], None] = print
    records: dict[str, StageRecord] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        check_run_folder(self.folder)
        if self.force is not None and self.force not in FOLDERS:
            raise RefusalLensError(
                f"--force names unknown stage {self.force!r}; choose from {', '.join(FOLDERS)}."
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / RUN_FILE).is_file():  # claims the folder for this layout
            write_json(self.folder / RUN_FILE, {"kind": "run", "format": RUN_FORMAT})
        for stale in self.folder.glob(".*.tmp"):  # left by a killed run: ours, never complete
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:  # a file: the report's, or a run.json being written
                stale.unlink(missing_ok=True)

    def path(self, stage: str) -> Path:
        return self.folder / FOLDERS[stage]

    def complete(self, stage: str) -> dict[str, Any] | None:
        """The ``stage.json`` of a complete stage folder, or None."""
        meta = self.path(stage) / STAGE_FILE
        if not meta.is_file():
            return None
        return json.loads(meta.read_text(encoding="utf-8"))

    def require(self, stage: str, by: str) -> Path:
        """The folder of ``stage``, whose result ``by`` reads; a clear error when missing."""
        if self.complete(stage) is None:
            raise RefusalLensError(
                f"Stage {FOLDERS[by]} reads the result of {FOLDERS[stage]}, which is not in "
                f"{self.folder}: {stage!r} was left out of --stages. Run it first "
                f"(--stages {stage},{by}) or run every stage (no --stages)."
            )
        return self.path(stage)

    def key(self, stage: str, extra: dict[str, Any] | None = None) -> str:
        inputs = {dep: self._key_of(dep, stage) for dep in DEPENDS[stage]}
        return digest(
            [self.config.stage_config(stage), inputs, extra or {}, RUN_FORMAT, METHOD_VERSION]
        )

    def _key_of(self, dep: str, stage: str) -> str:
        if dep in self.keys:
            return self.keys[dep]
        meta = self.complete(dep)
        if meta is None:
            self.require(dep, stage)
        return meta["key"]

    def forced(self, stage: str) -> bool:
        names = list(FOLDERS)
        return self.force is not None and names.index(stage) >= names.index(self.force)

    def run(
        self,
        stage: str,
        step: Callable[[Path], None],
        extra: dict | None = None,
        always: bool = False,
    ) -> None:
        """Run ``step(tmp_folder)`` for ``stage`` unless its folder is complete with the same
        key; ``extra`` adds inputs the stage reads from outside the run (weights' hash).
        ``always``: run it even when ``config.stages`` leaves it out."""
        if stage not in self.config.stages and not always:
            meta = self.complete(stage)
            if meta is not None:
                self.keys[stage] = meta["key"]
            if meta is not None or stage not in OPTIONAL:
                self.records[stage] = StageRecord(FOLDERS[stage], TITLES[stage], "not run")
            return
        key = self.key(stage, extra)
        meta = self.complete(stage)
        if meta is not None and meta.get("key") == key and not self.forced(stage):
            self.keys[stage] = key
            took = meta.get("seconds", 0.0)  # when it ran
            peak = meta.get("peak_rss_mb")
            self.records[stage] = StageRecord(FOLDERS[stage], TITLES[stage], "cached", took, peak)
            self.say(f"{self._counter(stage)} {FOLDERS[stage]}: reused (same settings and inputs)")
            return
        self.say(f"{self._counter(stage)} {FOLDERS[stage]}: {TITLES[stage]} ...")
        seconds, peak = self._write(stage, step, key)
        self.keys[stage] = key
        record = StageRecord(FOLDERS[stage], TITLES[stage], "ran", round(seconds, 1), peak)
        self.records[stage] = record
        self.say(f"{self._counter(stage)} {FOLDERS[stage]}: done in {seconds:.0f} s{self._eta()}")

    def _write(self, stage: str, step: Callable[[Path], None], key: str) -> tuple[float, float]:
        """Run the step into a temporary folder, then ``stage.json`` (with the step's time and
        the process's peak memory so far) and the rename; the seconds and the peak in MB."""
        try:
            with atomic_dir(self.path(stage), marker=STAGE_FILE) as tmp:
                t0 = time.time()
                step(tmp)
                seconds = round(time.time() - t0, 1)
                peak = peak_rss_mb()
                meta = {
                    "kind": "stage",
                    "format": RUN_FORMAT,
                    "stage": FOLDERS[stage],
                    "key": key,
                    "config": self.config.stage_config(stage),
                    "inputs": {dep: self.keys.get(dep) for dep in DEPENDS[stage]},
                    "seconds": seconds,
                    "peak_rss_mb": peak,
                }
                write_json(tmp / STAGE_FILE, meta)
            return seconds, peak
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise RefusalLensError(
                f"The disk filled while stage {FOLDERS[stage]} was writing ({e}). The stages "
                f"completed before it in {self.folder} stay usable; free some space and run the "
                "same command again to resume at this stage."
            ) from e

    def _counter(self, stage: str) -> str:
        shown = [s for s in FOLDERS if s not in OPTIONAL or s in self.config.stages]
        return f"[{shown.index(stage) + 1}/{len(shown)}]"

    def _eta(self) -> str:
        """Elapsed time and, from the stages run so far, an estimate of the time left."""
        elapsed = time.time() - self.started
        ran = [s for s, r in self.records.items() if r.status == "ran"]  # this time
        todo = [s for s in self.config.stages if s not in self.records]
        done_weight = sum(WEIGHTS[s] for s in ran)
        text = f" (elapsed {elapsed / 60:.1f} min"
        if done_weight >= 30 and todo:
            per_weight = sum(self.records[s].seconds for s in ran) / done_weight
            text += f", about {per_weight * sum(WEIGHTS[s] for s in todo) / 60:.1f} min left"
        return text + ")"

    def stage_table(self) -> list[dict[str, Any]]:
        return [vars(self.records[s]) for s in FOLDERS if s in self.records]
