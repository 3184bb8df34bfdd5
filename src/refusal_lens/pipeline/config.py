"""``RunConfig``: the settings of ``refusal-lens run``, with the ``quick`` and ``full`` presets.

Run-level settings (model, seed, device, dtype, system prompt, answer length) sit on
``RunConfig`` itself; each stage's own settings are one nested config named after the stage
(``config.rass.contexts``; ``--rass.contexts`` on the command line), defined in
:mod:`refusal_lens.pipeline.stage_settings`. A stage's folder is reused when its settings, the
library configs built from them and the results it reads from earlier stages are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from refusal_lens.configs import StageConfig, check_positive
from refusal_lens.errors import RefusalLensError
from refusal_lens.pipeline.registry import MULTILINGUAL, REGISTRY, SEARCH
from refusal_lens.pipeline.stage_settings import (
    EVAL_SETS,
    AttributionSettings,
    DirectionSettings,
    EvaluateSettings,
    GeometrySettings,
    InterventionsSettings,
    MitigationsSettings,
    MultilingualSettings,
    OrganismSettings,
    RASSSettings,
    SearchSettings,
    TriggersSettings,
)

__all__ = ["EVAL_SETS", "QUICK", "RunConfig"]


@dataclass(frozen=True)
class RunConfig(StageConfig):
    """Settings of ``refusal-lens run``; saved in ``run.json`` and, per stage, in each
    ``stage.json``. The defaults are the ``full`` preset (the README's counts)."""

    model: str = "smollm2-135m"
    quick: bool = False  # the quick preset's reduced counts (about ten minutes on 2 cores)
    stages: tuple[str, ...] | None = None  # which to run (the report is always written);
    # None: every stage of the registry but the optional ones (the search: with_search)
    seed: int = 0
    device: str | None = None
    dtype: str = "float32"
    system: str | None = None  # system prompt of every chat (default: what the template does)
    max_new_tokens: int = 32  # tokens generated per answer (substring judge), in every stage
    with_search: bool = False  # also run step 10, the mitigation search (`refusal-lens mitigate`)
    languages: tuple[str, ...] = ("en",)  # studied languages, English always the reference: any
    # of de, es, fr, ja, ru, zh (PolyRefuse) adds step 11, with a report section per language
    organism: OrganismSettings = field(default_factory=OrganismSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    direction: DirectionSettings = field(default_factory=DirectionSettings)
    interventions: InterventionsSettings = field(default_factory=InterventionsSettings)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    triggers: TriggersSettings = field(default_factory=TriggersSettings)
    geometry: GeometrySettings = field(default_factory=GeometrySettings)
    rass: RASSSettings = field(default_factory=RASSSettings)
    mitigations: MitigationsSettings = field(default_factory=MitigationsSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    multilingual: MultilingualSettings = field(default_factory=MultilingualSettings)

    @classmethod
    def preset(cls, quick: bool = False, **changes: Any) -> RunConfig:
        """The full preset (the README's counts), or with ``quick`` the reduced counts that
        take the bundled model, aligned from nothing, through every stage on a 2-core CPU in
        about ten minutes (CI runs it). ``changes`` override either: run-level settings by
        name, a stage's settings as a dict of the fields to change
        (``rass={"contexts": 4}``: the preset's other RASS settings stay) or as a whole
        settings object."""
        base = QUICK if quick else {}
        merged = {k: _settings(k, v) if k in SETTINGS else v for k, v in base.items()}
        for name, value in changes.items():
            if name in SETTINGS and not isinstance(value, dict | SETTINGS[name]):
                raise RefusalLensError(
                    f"{name} must be a {SETTINGS[name].__name__} or a dict of its fields, "
                    f"not {type(value).__name__}."
                )
            if name in SETTINGS and isinstance(value, dict):
                value = _settings(name, base.get(name, {}) | value)
            merged[name] = value
        config = cls(quick=quick, **merged)
        REGISTRY.check_selection(config.stages)
        config.check_selected(changes)
        return config

    def check_selected(self, given: Any) -> None:
        """Refuse a setting given for stages none of which this run selects: it would be
        silently ignored."""
        always = {s.name for s in REGISTRY if s.always}
        for name in given:
            readers = REGISTRY.readers(name)
            if readers and not set(readers) & {*self.stages, *always}:
                flag = " (the search: --search)" if SEARCH.name in readers else ""
                if MULTILINGUAL.name in readers:
                    flag = " (other languages: --languages de,ru)"
                raise RefusalLensError(
                    f"{name} is a setting of stage(s) {', '.join(readers)}, which this run "
                    f"does not select (--stages {','.join(self.stages)}): add one of them to "
                    f"--stages{flag}, or leave the setting out."
                )

    def __post_init__(self) -> None:
        if self.stages is None:
            object.__setattr__(self, "stages", REGISTRY.default)
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        if self.with_search and SEARCH.name not in self.stages:
            object.__setattr__(self, "stages", (*self.stages, SEARCH.name))
        if isinstance(self.languages, list):  # as read back from JSON
            object.__setattr__(self, "languages", tuple(self.languages))
        if self.extra_languages and MULTILINGUAL.name not in self.stages:
            object.__setattr__(self, "stages", (*self.stages, MULTILINGUAL.name))
        for name, kind in SETTINGS.items():
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise RefusalLensError(
                    f"{name} must be a {kind.__name__} (RunConfig.preset also takes a dict "
                    f"of its fields), not {type(value).__name__}."
                )
        super().__post_init__()

    def validate(self) -> None:
        if not self.stages:
            raise RefusalLensError(
                f"stages is empty; choose from {', '.join(REGISTRY.names)} (default: all)."
            )
        check_positive("max_new_tokens", self.max_new_tokens)
        from refusal_lens.prompts.polyrefuse import check_language

        for language in self.languages:
            check_language(language)
        if len(set(self.languages)) != len(self.languages):
            raise RefusalLensError(f"languages lists a language twice: {self.languages}.")
        if MULTILINGUAL.name in self.stages and not self.extra_languages:
            raise RefusalLensError(
                "The multilingual stage compares other languages with English: give them with "
                "--languages (e.g. de,ru), which selects the stage."
            )

    @property
    def extra_languages(self) -> tuple[str, ...]:
        """The studied languages other than English (step 11 runs when there are any)."""
        return tuple(x for x in self.languages if x != "en")


def _settings(stage: str, values: dict[str, Any]) -> StageConfig:
    """``stage``'s settings with ``values``; an error names the field as ``stage.field``."""
    kind = SETTINGS[stage]
    unknown = set(values) - {f.name for f in fields(kind)}  # type: ignore[arg-type]
    if unknown:
        raise RefusalLensError(
            f"{stage} has no setting(s) {', '.join(sorted(unknown))}; its settings are "
            f"{', '.join(f.name for f in fields(kind))}."  # type: ignore[arg-type]
        )
    try:
        return kind(**values)
    except RefusalLensError as exc:
        raise RefusalLensError(f"{stage}.{exc}") from None


SETTINGS: dict[str, type[StageConfig]] = {  # stage name -> its settings type
    f.name: f.default_factory  # type: ignore[misc]
    for f in fields(RunConfig)
    if callable(f.default_factory)
}
QUICK: dict[str, Any] = dict(
    max_new_tokens=16,
    organism=dict(n_check=12, n_harmful=96, n_benign=48),
    evaluate=dict(n=16, sets=("borderline", "XSTest-safe", "Alpaca", "XSTest-unsafe", "AdvBench")),
    direction=dict(n_train=64, n_val=16, top_k=8, lambdas=(1.0, 0.6), n_false_refusal=48),
    interventions=dict(n_validation=8),
    attribution=dict(n=3),
    triggers=dict(n_masks=16),
    geometry=dict(n=32, n_lookalikes=48),
    rass=dict(contexts=6, samples=3, n_seeds=40),
    search=dict(n=16, trials=24, rejudge=2),
    multilingual=dict(n=8),
)
