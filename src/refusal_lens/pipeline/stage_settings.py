"""Each stage's own settings in ``refusal-lens run``: ``RunConfig.<stage>`` (``--<stage>.<field>``).

One frozen dataclass per stage that has settings, named after the stage. A stage's cache key
hashes its own settings whole, the run-level settings it reads and the settings of other
stages it names in its registry record (``Stage.fields``, e.g. ``"triggers.n_masks"``), and
the library configs :mod:`refusal_lens.pipeline.settings` builds from them. The defaults are
the ``full`` preset; ``refusal_lens.pipeline.config.QUICK`` holds the quick preset's changes.

This module imports nothing heavy: the CLI reads it for ``--help``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from refusal_lens.configs import StageConfig, check_positive, check_range
from refusal_lens.errors import RefusalLensError

EVAL_SETS = (  # the full preset's test sets; the search's held-out comparison adds HarmBench
    "borderline",
    "XSTest-safe",
    "Alpaca",
    "XSTest-unsafe",
    "AdvBench",
    "JailbreakBench",
)


def _positive(config: StageConfig, *names: str) -> None:
    for name in names:
        check_positive(name, getattr(config, name))


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RefusalLensError(f"{name} must be {' or '.join(choices)}, not {value!r}.")


def _finite_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise RefusalLensError(f"{name} must be a finite number > 0, not {value}.")


@dataclass(frozen=True)
class OrganismSettings(StageConfig):
    """Step 1: the check, and the organism recipe used when the model refuses too little."""

    refusal_threshold: float = 0.5  # align when fewer harmful prompts are refused (substring)
    n_check: int = 32  # prompts per set of the organism check
    alpha: float = 0.5  # the organism recipe's harmful weight
    n_harmful: int = 160  # the organism's D_h size
    n_benign: int = 200  # the organism's D_b size (Alpaca)
    mode: str = "lora"  # the organism's fine-tuning: lora or full
    epochs: int = 1  # the organism's passes over its data
    lr: float = 5e-4  # the organism's peak learning rate

    def validate(self) -> None:
        check_range("refusal_threshold", self.refusal_threshold, 0.0, 1.0)
        check_range("alpha", self.alpha, 0.0, 1.0)
        _positive(self, "n_check", "n_harmful", "n_benign", "epochs", "lr")
        _choice("mode", self.mode, ("lora", "full"))


@dataclass(frozen=True)
class EvaluateSettings(StageConfig):
    """Step 2: the held-out test prompts every evaluation of the run uses."""

    n: int = 64  # held-out test prompts per set (every evaluation uses the same ones)
    sets: tuple[str, ...] = EVAL_SETS  # the test sets (evaluation.DEFAULT_SETS names)

    def validate(self) -> None:
        _positive(self, "n")
        if not self.sets:
            raise RefusalLensError("sets is empty; name at least one test set.")


@dataclass(frozen=True)
class DirectionSettings(StageConfig):
    """Step 3: the refusal direction r and Wang et al.'s w′."""

    n_train: int = 128  # train prompts per class
    n_val: int = 32  # validation prompts per class
    top_k: int = 8  # candidates fully scored
    kl_max: float = 0.1  # a candidate's ablation KL on harmless prompts must stay below this
    lambdas: tuple[float, ...] = (1.0, 0.8, 0.6)  # the λ of w′ = w − λ r̂ r̂ᵀ w
    n_false_refusal: int = 64  # borderline prompts that define w′

    def validate(self) -> None:
        _positive(self, "n_train", "n_val", "top_k", "n_false_refusal")
        _finite_positive("kl_max", self.kl_max)
        if not self.lambdas or any(not 0 <= lam <= 1 for lam in self.lambdas):
            raise RefusalLensError(f"lambdas must be values in [0, 1], not {self.lambdas}.")


@dataclass(frozen=True)
class InterventionsSettings(StageConfig):
    """Step 4: refusal under each edit on validation prompts; λ chosen there."""

    n_validation: int = 32  # validation prompts per set (λ is chosen on them)
    add_coef: float = 1.0  # coefficient of the activation addition of r
    harmful_drop: float = 0.05  # λ must keep harmful refusal within this of the unedited

    def validate(self) -> None:
        _positive(self, "n_validation")
        check_range("harmful_drop", self.harmful_drop, 0.0, 1.0)
        if not math.isfinite(self.add_coef):
            raise RefusalLensError(
                f"add_coef must be a finite number, not {self.add_coef}; the default is 1.0."
            )


@dataclass(frozen=True)
class AttributionSettings(StageConfig):
    """Step 5: the most over-refused benign test prompts, attributed."""

    n: int = 8  # most over-refused benign test prompts attributed
    method: str = "occlusion"  # occlusion, grad_x_input, integrated_gradients

    def validate(self) -> None:
        _positive(self, "n")


@dataclass(frozen=True)
class TriggersSettings(StageConfig):
    """Step 6: the harm judge, trigger masks of D_h, the sanitized D_b."""

    n_masks: int = 80  # D_h queries given trigger masks (RASS's harmful seeds come from them)
    n_judge: int = 128  # prompts per class the harm judge is fitted on

    def validate(self) -> None:
        _positive(self, "n_masks", "n_judge")


@dataclass(frozen=True)
class GeometrySettings(StageConfig):
    """Step 7: a probe per layer, and the look-alikes that rank layers for RASS."""

    n: int = 64  # prompts per class for the boundary probes and RASS's reference
    n_lookalikes: int = 64  # validation look-alikes answered to rank layers for RASS

    def validate(self) -> None:
        _positive(self, "n", "n_lookalikes")


@dataclass(frozen=True)
class RASSSettings(StageConfig):
    """Step 8: RASS's generation, screening and selection."""

    contexts: int = 24  # few-shot lists
    samples: int = 4  # continuations per list and coefficient
    band: float = 0.5  # keep |margin| <= band (rule margin, or its fallback)
    rule: str = "refusal"  # layer and band: refusal (where the geometry stage's validation
    # look-alikes say the boundary predicts refusal) or margin (the direction's layer)
    coefs: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)  # steering coefficients
    # (figures/rass_baselines.md measures each one's yield; see its "generators" table)
    n_seeds: int = 160  # seeds (half D_h queries, half Alpaca rows)

    def validate(self) -> None:
        _positive(self, "contexts", "samples", "band", "n_seeds")
        _choice("rule", self.rule, ("refusal", "margin"))


@dataclass(frozen=True)
class MitigationsSettings(StageConfig):
    """Step 9: the fixed mitigations on the test prompts."""

    realign: bool = True  # re-align with sanitized and RASS D_b (models the run aligned)
    export: bool = True  # weight-orthogonalized copy of the w′ mitigation


@dataclass(frozen=True)
class SearchSettings(StageConfig):
    """Step 10 (``--search``, ``refusal-lens mitigate``): the mitigation search."""

    n: int = 64  # validation prompts per set (borderline, AdvBench, ...)
    trials: int = 60  # trials per search
    seeds: int = 3  # over-refusal searches, one per seed
    harmful_drop: float = 0.05  # δ: harmful refusal may fall this far below the unedited
    kl_max: float = 0.1  # κ, the first-token KL bound on plain prompts
    budget: float | None = None  # minutes for the whole step (None: no bound)
    rejudge: int = 3  # best trials per search judged again by generation
    kinds: tuple[str, ...] = ("ablate", "add")  # edit kinds (ablate: the winner is weights)
    n_heldout: int | None = None  # held-out test prompts per set (None: evaluate.n)
    judge: str = "substring"  # trials judged by substring or score (one forward pass)
    tokens: int = 24  # tokens generated per answer when judge=substring

    def validate(self) -> None:
        _positive(self, "n", "trials", "seeds", "rejudge", "tokens")
        check_range("harmful_drop", self.harmful_drop, 0.0, 1.0)
        _finite_positive("kl_max", self.kl_max)
        if not self.kinds or any(k not in ("ablate", "add") for k in self.kinds):
            raise RefusalLensError(f"kinds must name some of ablate, add, not {self.kinds}.")
        if self.budget is not None:
            check_positive("budget (minutes)", self.budget)
        if self.n_heldout is not None:
            check_positive("n_heldout", self.n_heldout)
        _choice("judge", self.judge, ("score", "substring"))


@dataclass(frozen=True)
class MultilingualSettings(StageConfig):
    """Step 11 (``--languages``): each extra language against English on the same items."""

    n: int = 40  # PolyRefuse test items per kind (harmful, harmless), the same in every language

    def validate(self) -> None:
        _positive(self, "n")
