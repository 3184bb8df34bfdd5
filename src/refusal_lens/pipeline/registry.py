"""The stages of ``refusal-lens run``, in order: one :class:`Stage` record each.

Everything the run does per stage is derived from this list: its folder
(``runs/<model>/NN-name/``, NN its position), its title, which earlier results it reads
(``depends``: the cache key includes theirs, and a step that reads any other stage's folder
fails), its share of the time estimate, the run settings and library configs its key hashes,
the CLI's stage lists and ``mitigate``'s stage set (the dependency closure of ``search``).

Adding a stage is one record here and one step function ``step(ctx: StageContext) -> None``
that writes into ``ctx.out`` (see ``refusal_lens.pipeline.context``). A step names the stages
it reads by their records (``ctx.input(DIRECTION)``), never by a string.

This module imports nothing heavy: the CLI reads it for ``--help``. Steps and settings are
named as ``"module:function"`` and imported when a run needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from refusal_lens.errors import RefusalLensError

COMMON_FIELDS = ("model", "device", "dtype", "system", "seed")  # every stage's key holds them


@dataclass(frozen=True)
class Stage:
    """One stage of the run.

    ``step``: ``"module:function"`` (or the function), called as ``step(ctx)``.
    ``settings``: ``"module:function"`` (or the function) ``(RunConfig) -> dict[str,
    StageConfig]``: the library configs the step uses, built once from the run's settings;
    the step reads them from ``ctx.settings`` and the cache key hashes them whole, so a
    changed default of any of them reruns the stage. ``fields``: the run settings the step
    reads besides its own (``RunConfig.<name>``, always hashed): run-level ones
    (``"max_new_tokens"``) and other stages' (``"triggers.n_masks"``). ``version``: bump
    when the step's method changes its results while its settings stay the same."""

    name: str
    title: str
    step: str | Callable[..., None]
    depends: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    settings: str | Callable[..., dict[str, Any]] | None = None
    weight: int = 1  # seconds of a --quick run of the bundled model on 2 cores
    optional: bool = False  # runs only when asked for (--search, `mitigate`)
    always: bool = False  # runs whatever --stages says (the model's facts, the organism)
    version: int = 1
    models: int = 1  # models its step holds at once: 2 where it reads the base beside the
    # aligned organism (the run keeps at most this many loaded, dropping the least recent)
    outside: str | Callable[..., dict[str, Any]] | None = None  # "module:function" (run) ->
    # what the stage reads from outside the run folder, for its key (the weights' hash)

    def outside_of(self, run: Any) -> dict[str, Any] | None:
        return None if self.outside is None else _resolve(self.outside)(run)

    def step_function(self) -> Callable[..., None]:
        return _resolve(self.step)

    def settings_of(self, config: Any) -> dict[str, Any]:
        return {} if self.settings is None else _resolve(self.settings)(config)


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Registry:
    """An ordered list of stages, checked on construction: unique names, dependencies that
    exist and come earlier (so no cycle)."""

    stages: tuple[Stage, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_stages(self.stages)
        object.__setattr__(self, "_index", {s.name: i for i, s in enumerate(self.stages)})

    def __iter__(self):
        return iter(self.stages)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> Stage:
        if name not in self._index:
            raise RefusalLensError(
                f"Unknown stage {name!r}; the stages are {', '.join(self.names)}."
            )
        return self.stages[self._index[name]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def default(self) -> tuple[str, ...]:
        """What ``run`` runs when ``--stages`` is not given: every stage but the optional."""
        return tuple(s.name for s in self.stages if not s.optional)

    def folder(self, name: str) -> str:
        """The stage's folder name in a run: ``NN-name``, NN its position."""
        return f"{self._index[self[name].name]:02d}-{name}"

    def position(self, name: str) -> int:
        return self._index[self[name].name]

    def closure(self, name: str) -> tuple[str, ...]:
        """The stage, every stage it reads directly or through others, and the stages every
        run runs, in order: what a run of ``name`` alone needs."""
        need, todo = {name}, [name]
        while todo:
            for dep in self[todo.pop()].depends:
                if dep not in need:
                    need.add(dep)
                    todo.append(dep)
        return tuple(s.name for s in self.stages if s.name in need or s.always)

    def readers(self, name: str) -> tuple[str, ...]:
        """The stages whose key holds the run setting ``name``: a run-level setting, or a
        stage's settings (its own, and those of the stages that name one of its fields)."""
        return tuple(
            s.name
            for s in self.stages
            if s.name == name or any(f == name or f.startswith(f"{name}.") for f in s.fields)
        )

    def with_stage(self, stage: Stage, after: str | None = None) -> Registry:
        """A registry with ``stage`` added after ``after`` (default: at the end)."""
        at = len(self.stages) if after is None else self.position(after) + 1
        return Registry((*self.stages[:at], stage, *self.stages[at:]))

    def check_selection(self, stages: Iterable[str]) -> None:
        chosen = list(stages)
        unknown = [s for s in chosen if s not in self]
        if unknown or not chosen:
            given = unknown or "(none given)"
            raise RefusalLensError(
                f"stages names unknown stage(s) {given}; choose from {', '.join(self.names)}."
            )


def check_stages(stages: tuple[Stage, ...]) -> None:
    """Refuse duplicate names, dependencies on unknown stages, and cycles (a dependency on the
    stage itself or on a later one), naming the stage."""
    seen: set[str] = set()
    names = [s.name for s in stages]
    for stage in stages:
        if stage.name in seen:
            raise RefusalLensError(f"Stage {stage.name!r} is registered twice.")
        for dep in stage.depends:
            if dep not in names:
                raise RefusalLensError(
                    f"Stage {stage.name!r} depends on {dep!r}, which is not a registered stage."
                )
            if dep not in seen:
                raise RefusalLensError(
                    f"Stage {stage.name!r} depends on {dep!r}, which does not run before it: "
                    f"{_cycle(stages, stage.name) or 'register it earlier'}."
                )
        seen.add(stage.name)


def _cycle(stages: tuple[Stage, ...], start: str) -> str | None:
    """``a → b → a`` when ``start`` reaches itself through dependencies, else None."""
    depends = {s.name: s.depends for s in stages}
    path: list[str] = []

    def walk(name: str) -> bool:
        if name == start and path:
            return True
        if name in path:
            return False
        path.append(name)
        if any(walk(dep) for dep in depends.get(name, ())):
            return True
        path.pop()
        return False

    return " → ".join([*path, start]) + " is a cycle" if walk(start) else None


_P = "refusal_lens.pipeline."
MODEL = Stage(
    "model",
    "Model facts",
    _P + "measure:model_facts",
    outside=_P + "measure:weights",
    always=True,
)
ORGANISM = Stage(
    "organism",
    "Organism: a model that refuses",
    _P + "measure:organism",
    depends=("model",),
    fields=("max_new_tokens",),
    settings=_P + "settings:organism",
    outside=_P + "measure:organism_checked",
    weight=180,
    always=True,
)
EVALUATE = Stage(
    "evaluate",
    "Evaluation: refusal and over-refusal",
    _P + "measure:evaluation",
    depends=("organism",),
    fields=("max_new_tokens",),
    settings=_P + "settings:evaluate",
    weight=110,
)
DIRECTION = Stage(
    "direction",
    "Refusal direction and false-refusal vector",
    _P + "measure:direction",
    depends=("organism",),
    settings=_P + "settings:direction",
    weight=35,
)
INTERVENTIONS = Stage(
    "interventions",
    "Interventions: ablate, add, ablate w′",
    _P + "measure:interventions",
    depends=("organism", "evaluate", "direction"),
    fields=("max_new_tokens", "direction.lambdas"),
    weight=130,
)
ATTRIBUTION = Stage(
    "attribution",
    "Attribution: the tokens that trigger refusal",
    _P + "explain:attribution",
    depends=("organism", "evaluate", "direction"),
    settings=_P + "settings:attribution",
    weight=5,
)
TRIGGERS = Stage(
    "triggers",
    "Trigger masks, lexicon and sanitized D_b",
    _P + "explain:triggers",
    depends=("organism",),
    settings=_P + "settings:triggers",
    weight=70,
    models=2,
)
GEOMETRY = Stage(
    "geometry",
    "The safety boundary, layer by layer",
    _P + "boundary:geometry",
    depends=("organism", "direction", "evaluate"),
    fields=("max_new_tokens",),
    settings=_P + "settings:geometry",
    weight=40,
)
RASS = Stage(
    "rass",
    "RASS: prompts near the boundary",
    _P + "boundary:rass_stage",
    depends=("organism", "evaluate", "direction", "triggers", "geometry"),
    fields=("max_new_tokens", "triggers.n_masks"),
    settings=_P + "settings:rass",
    weight=70,
    models=2,
)
MITIGATIONS = Stage(
    "mitigations",
    "Mitigations on held-out prompts",
    _P + "mitigations:mitigations",
    depends=("organism", "evaluate", "direction", "interventions", "triggers", "rass"),
    settings=_P + "settings:evaluate",
    weight=210,
)
SEARCH = Stage(
    "search",
    "Mitigation by search: over-refusal as the objective",
    _P + "search:search_stage",
    depends=("organism", "direction", "geometry", "rass"),
    fields=("max_new_tokens",),
    settings=_P + "settings:search",
    weight=900,
    optional=True,
)
MULTILINGUAL = Stage(
    "multilingual",
    "Over-refusal across languages",
    _P + "multilingual:multilingual",
    depends=("organism", "direction", "geometry"),
    fields=("max_new_tokens", "languages"),
    settings=_P + "settings:multilingual",
    outside=_P + "multilingual:data_files",
    weight=40,
    optional=True,
)
REGISTRY = Registry(
    (
        MODEL,
        ORGANISM,
        EVALUATE,
        DIRECTION,
        INTERVENTIONS,
        ATTRIBUTION,
        TRIGGERS,
        GEOMETRY,
        RASS,
        MITIGATIONS,
        SEARCH,
        MULTILINGUAL,
    )
)
FOLDERS = {stage.name: REGISTRY.folder(stage.name) for stage in REGISTRY}  # name -> NN-name
