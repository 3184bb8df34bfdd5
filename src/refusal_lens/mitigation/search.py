"""The seeded search for the edit that removes over-refusal and keeps refusal.

Objective ``over_refusal`` (the default): minimise the benign look-alike refusal share,
subject to a harmful refusal share of at least the unedited model's minus ``harmful_drop``
(δ), and a first-token KL on plain prompts of at most ``kl_max`` (κ). Objective ``refusal``
is heretic's aim, for comparison: minimise the harmful refusal share under the KL bound
alone. Optuna's TPE proposes the edits (seeded; its constraint handling keeps infeasible
trials out of the good group); Wang et al.'s w′ ablations at ``warm_start`` are tried first.

>>> result = search_edits(objective, vectors, SearchConfig(trials=48, seed=0))
>>> result.best()["label"], result.front()
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import artifact_meta, json_writer, jsonl_writer, save_artifact
from refusal_lens.configs import StageConfig, check_positive, check_range
from refusal_lens.errors import RefusalLensError
from refusal_lens.mitigation.edits import KINDS, EditConfig, resolve
from refusal_lens.mitigation.objective import Measured, Objective
from refusal_lens.mitigation.space import suggest_edit, wang_params
from refusal_lens.mitigation.vectors import Vectors

OBJECTIVES = ("over_refusal", "refusal")
KIND = "search"
FILES = ("search.json", "trials.jsonl")


@dataclass(frozen=True)
class SearchConfig(StageConfig):
    """Settings of one search; saved with its trials."""

    trials: int = 48
    seed: int = 0
    objective: str = "over_refusal"  # or "refusal" (heretic's aim: remove refusal)
    harmful_drop: float = 0.05  # δ: harmful refusal may fall this far below the unedited
    kl_max: float = 0.1  # κ: the first-token KL bound on plain prompts
    kinds: tuple[str, ...] = KINDS
    startup: int | None = None  # random trials before TPE (None: a third, at most 10)
    warm_start: tuple[float, ...] = (1.0, 0.8, 0.6)  # λ of the Wang w′ ablations tried first

    def validate(self) -> None:
        check_positive("trials", self.trials)
        if self.objective not in OBJECTIVES:
            raise RefusalLensError(
                f"objective must be one of {OBJECTIVES}, not {self.objective!r}."
            )
        check_range("harmful_drop (δ)", self.harmful_drop, 0.0, 1.0)
        if not (self.kl_max > 0 and math.isfinite(self.kl_max)):
            raise RefusalLensError(f"kl_max (κ) must be a finite number > 0, not {self.kl_max}.")
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise RefusalLensError(f"kinds must name some of {KINDS}, not {self.kinds}.")


@dataclass
class SearchResult:
    """Every trial of one search, in order, with the unedited model's measurements."""

    config: SearchConfig
    unedited: dict[str, Any]
    trials: list[dict[str, Any]]
    model: str = ""
    seconds: float = 0.0
    stopped: str = ""  # why it stopped before ``config.trials`` (the budget), or ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def floor(self) -> float:
        return self.unedited["harmful"] - self.config.harmful_drop

    def feasible(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["feasible"]]

    def best(self) -> dict[str, Any]:
        """The feasible trial with the lowest objective (then KL, then the earliest); with
        none feasible, the closest trial (see :func:`closeness`)."""
        if ok := self.feasible():
            return min(ok, key=_rank)
        return min(self.trials, key=self._nearness)

    def _nearness(self, trial: dict[str, Any]) -> tuple:
        return closeness(trial, self.config), trial["number"]

    def ranked(self, k: int) -> list[dict[str, Any]]:
        """The ``k`` best feasible trials with distinct edits (closest first if none)."""
        ok = self.feasible()
        out, seen = [], set()
        for t in sorted(ok, key=_rank) if ok else sorted(self.trials, key=self._nearness):
            if t["label"] not in seen:
                out.append(t)
                seen.add(t["label"])
        return out[:k]

    def binding(self) -> str:
        """Which constraint keeps the search from a feasible edit, in words ("" if none)."""
        if self.feasible():
            return ""
        closest = self.best()
        v = closest["violation"]
        parts = []
        if v["harmful"] > 0:
            parts.append(
                f"harmful refusal ≥ {self.floor:.0%} (the closest trial refuses "
                f"{closest['measured']['harmful']:.0%})"
            )
        if v["kl"] > 0:
            parts.append(
                f"KL ≤ {self.config.kl_max:g} (the closest trial's KL is "
                f"{closest['measured']['kl']:.3f})"
            )
        return "no trial met " + " and ".join(parts) + f"; closest: {closest['label']}"

    def front(self) -> list[dict[str, Any]]:
        """The trials within the KL bound that no other such trial beats on both benign
        refusal (lower) and harmful refusal (higher), by benign refusal."""
        pool = [t for t in self.trials if t["measured"]["kl"] <= self.config.kl_max]
        return pareto_front(pool)

    def save(self, folder: str | Path) -> Path:
        meta = artifact_meta(
            KIND,
            self.config,
            model=self.model,
            unedited=self.unedited,
            seconds=self.seconds,
            stopped=self.stopped,
            best=self.best()["number"] if self.trials else None,
            binding=self.binding() if self.trials else "",
            **self.extra,
        )
        files = {FILES[0]: json_writer(meta), FILES[1]: jsonl_writer(self.trials)}
        return save_artifact(folder, files)

    @classmethod
    def load(cls, folder: str | Path) -> SearchResult:
        from refusal_lens.artifacts import read_meta

        meta = read_meta(folder, FILES[0], KIND)
        path = Path(folder) / FILES[1]
        trials = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        known = {"kind", "format", "config", "model", "unedited", "seconds", "stopped"}
        extra = {k: v for k, v in meta.items() if k not in known | {"best", "binding"}}
        return cls(
            SearchConfig.from_dict(meta["config"]),
            meta["unedited"],
            trials,
            meta["model"],
            meta["seconds"],
            meta["stopped"],
            extra,
        )


def pareto_front(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials not dominated on (benign refusal ↓, harmful refusal ↑), by benign refusal."""
    points = [(t["measured"]["benign"], -t["measured"]["harmful"], t) for t in trials]
    points.sort(key=lambda p: (p[0], p[1], p[2]["number"]))
    front, best_harmful = [], math.inf
    for _, neg_harmful, t in points:
        if neg_harmful < best_harmful:
            front.append(t)
            best_harmful = neg_harmful
    return front


def violations(m: Measured, floor: float | None, kl_max: float) -> dict[str, float]:
    """How far a trial misses each constraint (0 when met)."""
    harmful = 0.0 if floor is None else max(0.0, floor - m.harmful)
    return {"harmful": harmful, "kl": max(0.0, m.kl - kl_max)}


def closeness(trial: dict[str, Any], config: SearchConfig) -> tuple[int, float]:
    """How far from feasible: the number of constraints missed, then the misses summed, each
    relative to its bound (harmful in units of max(δ, 1 point), KL in units of κ)."""
    v = trial["violation"]
    scaled = v["harmful"] / max(config.harmful_drop, 0.01) + v["kl"] / config.kl_max
    return sum(x > 0 for x in v.values()), scaled


def search_edits(
    objective: Objective,
    vectors: Vectors,
    config: SearchConfig,
    *,
    deadline: float | None = None,
    say: Callable[[str], Any] | None = None,
) -> SearchResult:
    """Run ``config.trials`` trials (fewer when ``deadline``, a ``time.monotonic()`` value,
    would pass during the next one) and return every trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    unedited = objective.unedited
    over = config.objective == "over_refusal"
    floor = unedited.harmful - config.harmful_drop if over else None
    sampler = optuna.samplers.TPESampler(
        seed=config.seed,
        n_startup_trials=min(10, config.trials // 3) if config.startup is None else config.startup,
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    if over:
        for lam in config.warm_start:
            study.enqueue_trial(wang_params(lam))
    trials: list[dict[str, Any]] = []
    start, stopped = time.monotonic(), ""
    for i in range(config.trials):
        if deadline is not None and trials and time.monotonic() + _mean_cost(trials) > deadline:
            stopped = f"the time budget ran out after {len(trials)} of {config.trials} trials"
            break
        trial = study.ask()
        edit_config = suggest_edit(trial, vectors.n_layers, config.kinds)
        measured = objective.measure(resolve(edit_config, vectors))
        v = violations(measured, floor, config.kl_max)
        for key, miss in v.items():
            trial.set_constraint(key, miss)
        value = measured.benign if over else measured.harmful
        study.tell(trial, value)
        trials.append(_record(i, edit_config, measured, v, value))
        if say:
            say(_progress(trials, config, start, deadline))
    result = SearchResult(
        config, unedited.to_dict(), trials, objective.model.model_id, 0.0, stopped
    )
    result.seconds = round(time.monotonic() - start, 1)
    return result


def _record(
    number: int, edit: EditConfig, m: Measured, v: dict[str, float], value: float
) -> dict[str, Any]:
    return {
        "number": number,
        "label": edit.label(),
        "edit": edit.to_dict(),
        "measured": m.to_dict(),
        "value": value,
        "violation": v,
        "feasible": not any(v.values()),
    }


def _rank(trial: dict[str, Any]) -> tuple:
    """Feasible trials, best first: the lowest objective, then KL, then the earliest."""
    return trial["value"], trial["measured"]["kl"], trial["number"]


def _mean_cost(trials: list[dict[str, Any]]) -> float:
    return sum(t["measured"]["seconds"] for t in trials) / len(trials)


def _progress(
    trials: list[dict[str, Any]], config: SearchConfig, start: float, deadline: float | None
) -> str:
    done = len(trials)
    left = _mean_cost(trials) * (config.trials - done)
    if deadline is not None:
        left = min(left, max(0.0, deadline - time.monotonic()))
    ok = [t for t in trials if t["feasible"]]
    if ok:
        b = min(ok, key=_rank)
        m = b["measured"]
        best = f"best: benign {m['benign']:.0%}, harmful {m['harmful']:.0%}, KL {m['kl']:.3f}"
    else:
        best = "no trial meets the constraints yet"
    return (
        f"search {config.objective} seed {config.seed}: trial {done}/{config.trials} · {best} "
        f"· ~{left / 60:.1f} min left"
    )
