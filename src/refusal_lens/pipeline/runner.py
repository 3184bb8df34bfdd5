"""The run folder's bookkeeping: which stages are complete, which to (re)run, progress lines.

A stage's folder ``runs/<model>/NN-stage/`` is written into a temporary sibling and renamed
into place with its ``stage.json`` last, so a folder that exists is complete: a run killed at
any point leaves at most a hidden temporary folder (removed on the next run) and resumes at
the interrupted stage. ``stage.json`` records the stage's key: a hash of the run settings the
stage reads (the registry record's ``fields``), of the library configs it uses (its ``settings``,
whole), of the keys of the stages whose results it reads, of its method version and of the
numeric libraries' versions. A stage whose folder holds the same key is skipped; ``force``
reruns a stage and every later one.
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
from refusal_lens.cache import library_versions
from refusal_lens.errors import RefusalLensError
from refusal_lens.pipeline.config import RunConfig
from refusal_lens.pipeline.registry import COMMON_FIELDS, REGISTRY, Registry, Stage

RUN_FORMAT = 2  # bump when the layout of a run folder changes. 2: the stage registry
RUN_FILE = "run.json"
STAGE_FILE = "stage.json"
SECTION_FILE = "section.json"
REPORT_FILE = "report.html"
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
            f"format {RUN_FORMAT}), whose stages this version cannot reuse: rerun into a new "
            "folder (--out), or move this one aside."
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


def stage_fields(config: RunConfig, stage: Stage) -> dict[str, Any]:
    """The run settings ``stage`` reads: what its ``stage.json`` records and its key hashes."""
    every = config.to_dict()
    own = (stage.name,) if isinstance(every.get(stage.name), dict) else ()
    return {k: _lookup(every, k) for k in (*COMMON_FIELDS, *own, *stage.fields)}


def _lookup(settings: dict[str, Any], path: str) -> Any:
    """``settings["a"]["b"]`` for ``"a.b"``."""
    value: Any = settings
    for part in path.split("."):
        value = value[part]
    return value


def stage_key(
    config: RunConfig,
    stage: Stage,
    settings: dict[str, Any],
    inputs: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> str:
    """A stage's key: its run settings, its library configs whole (every default), the keys
    of its inputs, anything else it reads (``extra``), its method version, the run layout
    and the numeric libraries' versions."""
    configs = {name: c.to_dict() for name, c in settings.items()}
    parts = [stage_fields(config, stage), configs, inputs, extra or {}, stage.version]
    return digest([*parts, RUN_FORMAT, library_versions()])


@dataclass
class Runner:
    """Runs the stages of one run folder in order, skipping those already complete."""

    folder: Path
    config: RunConfig
    force: str | None = None
    say: Callable[[str], None] = print
    registry: Registry = REGISTRY
    records: dict[str, StageRecord] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        check_run_folder(self.folder)
        self.registry.check_selection(self.config.stages)
        if self.force is not None and self.force not in self.registry:
            raise RefusalLensError(
                f"--force names unknown stage {self.force!r}; choose from "
                f"{', '.join(self.registry.names)}."
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / RUN_FILE).is_file():  # claims the folder for this layout
            write_json(self.folder / RUN_FILE, {"kind": "run", "format": RUN_FORMAT})
        for stale in self.folder.glob(".*.tmp"):  # left by a killed run: ours, never complete
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:  # a file: the report's, or a run.json being written
                stale.unlink(missing_ok=True)

    def name(self, stage: str) -> str:
        """The stage's folder name, ``NN-stage``."""
        return self.registry.folder(stage)

    def path(self, stage: str) -> Path:
        return self.folder / self.name(stage)

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
                f"Stage {self.name(by)} reads the result of {self.name(stage)}, which is not "
                f"in {self.folder}: {stage!r} was left out of --stages. Run it first "
                f"(--stages {stage},{by}) or run every stage (no --stages)."
            )
        return self.path(stage)

    def key(self, stage: str, extra: dict[str, Any] | None = None) -> str:
        record = self.registry[stage]
        inputs = {dep: self._key_of(dep, stage) for dep in record.depends}
        return stage_key(self.config, record, record.settings_of(self.config), inputs, extra)

    def _key_of(self, dep: str, stage: str) -> str:
        if dep in self.keys:
            return self.keys[dep]
        meta = self.complete(dep)
        if meta is None:
            self.require(dep, stage)
        return meta["key"]

    def forced(self, stage: str) -> bool:
        at = self.registry.position
        return self.force is not None and at(stage) >= at(self.force)

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
        record = self.registry[stage]
        name, title = self.name(stage), record.title
        if stage not in self.config.stages and not always:
            meta = self.complete(stage)
            if meta is not None:
                self.keys[stage] = meta["key"]
            if meta is not None or not record.optional:
                self.records[stage] = StageRecord(name, title, "not run")
            return
        key = self.key(stage, extra)
        meta = self.complete(stage)
        if meta is not None and meta.get("key") == key and not self.forced(stage):
            self.keys[stage] = key
            took = meta.get("seconds", 0.0)  # when it ran
            self.records[stage] = StageRecord(name, title, "cached", took, meta.get("peak_rss_mb"))
            self.say(f"{self._counter(stage)} {name}: reused (same settings and inputs)")
            return
        self.say(f"{self._counter(stage)} {name}: {title} ...")
        seconds, peak = self._write(stage, step, key)
        self.keys[stage] = key
        self.records[stage] = StageRecord(name, title, "ran", round(seconds, 1), peak)
        self.say(f"{self._counter(stage)} {name}: done in {seconds:.0f} s{self._eta()}")

    def _write(self, stage: str, step: Callable[[Path], None], key: str) -> tuple[float, float]:
        """Run the step into a temporary folder, then ``stage.json`` (with the step's time and
        the process's peak memory so far) and the rename; the seconds and the peak in MB."""
        record = self.registry[stage]
        try:
            with atomic_dir(self.path(stage), marker=STAGE_FILE) as tmp:
                t0 = time.time()
                step(tmp)
                seconds = round(time.time() - t0, 1)
                peak = peak_rss_mb()
                settings = record.settings_of(self.config)
                meta = {
                    "kind": "stage",
                    "format": RUN_FORMAT,
                    "stage": self.name(stage),
                    "key": key,
                    "config": stage_fields(self.config, record),
                    "settings": {k: c.to_dict() for k, c in settings.items()},
                    "inputs": {dep: self.keys.get(dep) for dep in record.depends},
                    "seconds": seconds,
                    "peak_rss_mb": peak,
                }
                write_json(tmp / STAGE_FILE, meta)
            return seconds, peak
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise RefusalLensError(
                f"The disk filled while stage {self.name(stage)} was writing ({e}). The stages "
                f"completed before it in {self.folder} stay usable; free some space and run the "
                "same command again to resume at this stage."
            ) from e

    def _shown(self) -> list[str]:
        return [s.name for s in self.registry if not s.optional or s.name in self.config.stages]

    def _counter(self, stage: str) -> str:
        shown = self._shown()
        return f"[{shown.index(stage) + 1}/{len(shown)}]"

    def _eta(self) -> str:
        """Elapsed time and, from the stages run so far, an estimate of the time left."""
        weight = {s.name: s.weight for s in self.registry}
        elapsed = time.time() - self.started
        ran = [s for s, r in self.records.items() if r.status == "ran"]  # this time
        todo = [s for s in self.config.stages if s not in self.records]
        done_weight = sum(weight[s] for s in ran)
        text = f" (elapsed {elapsed / 60:.1f} min"
        if done_weight >= 30 and todo:
            per_weight = sum(self.records[s].seconds for s in ran) / done_weight
            text += f", about {per_weight * sum(weight[s] for s in todo) / 60:.1f} min left"
        return text + ")"

    def stage_table(self) -> list[dict[str, Any]]:
        return [vars(self.records[s.name]) for s in self.registry if s.name in self.records]
