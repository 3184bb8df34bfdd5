"""``RunConfig``: every setting of ``refusal-lens run``, with the ``quick`` and ``full`` presets.

Each stage reads only its own fields (its record's ``fields`` in
:mod:`refusal_lens.pipeline.registry`); a stage's folder is reused when those fields, the
library configs it builds from them and the results it reads from earlier stages are
unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from refusal_lens.configs import StageConfig, check_positive, check_range
from refusal_lens.errors import RefusalLensError
from refusal_lens.pipeline.registry import REGISTRY

EVAL_SETS = (  # the full preset's test sets; the search's held-out comparison adds HarmBench
    "borderline",
    "XSTest-safe",
    "Alpaca",
    "XSTest-unsafe",
    "AdvBench",
    "JailbreakBench",
)


@dataclass(frozen=True)
class RunConfig(StageConfig):
    """Settings of ``refusal-lens run``; saved in ``run.json`` and, per stage, in each
    ``stage.json``. The defaults are the ``full`` preset (the README's counts)."""

    model: str = "smollm2-135m"
    quick: bool = False  # the quick preset's reduced counts (about ten minutes on 2 cores)
    stages: tuple[str, ...] | None = None  # which to run (the report is always written);
    # None: every stage of the registry but the optional ones (the search: --search, mitigate)
    seed: int = 0
    device: str | None = None
    dtype: str = "float32"
    system: str | None = None  # system prompt of every chat (default: what the template does)
    refusal_threshold: float = 0.5  # align when fewer harmful prompts are refused (substring)
    n_check: int = 32  # prompts per set of the organism check
    alpha: float = 0.5  # the organism recipe's harmful weight
    align_harmful: int = 160  # the organism's D_h size
    align_benign: int = 200  # the organism's D_b size (Alpaca)
    align_mode: str = "lora"  # the organism's fine-tuning: lora or full
    align_epochs: int = 1  # the organism's passes over its data
    align_lr: float = 5e-4  # the organism's peak learning rate
    n_eval: int = 64  # held-out test prompts per set (every evaluation uses the same ones)
    max_new_tokens: int = 32  # tokens generated per answer (substring judge)
    eval_sets: tuple[str, ...] = EVAL_SETS  # the test sets (evaluation.DEFAULT_SETS names)
    n_train: int = 128  # direction: train prompts per class
    n_val: int = 32  # direction: validation prompts per class
    top_k: int = 8  # direction: candidates fully scored
    select_kl_max: float = 0.1  # direction: a candidate's ablation KL on harmless prompts
    # must stay below this (SelectConfig.kl_max; the search's bound is kl_max)
    lambdas: tuple[float, ...] = (1.0, 0.8, 0.6)  # the λ of w′ = w − λ r̂ r̂ᵀ w
    n_false_refusal: int = 64  # borderline prompts that define w′
    n_validation: int = 32  # validation prompts per set (interventions; λ chosen on them)
    add_coef: float = 1.0  # coefficient of the activation addition of r
    harmful_drop: float = 0.05  # λ must keep harmful refusal within this of the unedited
    n_attribution: int = 8  # most over-refused benign test prompts attributed
    attribution_method: str = "occlusion"  # occlusion, grad_x_input, integrated_gradients
    n_masks: int = 80  # D_h queries given trigger masks
    n_geometry: int = 64  # prompts per class for the boundary probes and RASS's reference
    n_lookalikes: int = 64  # geometry: validation look-alikes answered to rank layers for RASS
    n_judge: int = 128  # prompts per class the harm judge is fitted on
    rass_contexts: int = 24  # RASS few-shot lists
    rass_samples: int = 4  # RASS continuations per list and coefficient
    rass_band: float = 0.5  # RASS keeps |margin| <= band (rass_rule margin, or its fallback)
    rass_rule: str = "refusal"  # RASS layer and band: refusal (where the geometry stage's
    # validation look-alikes say the boundary predicts refusal) or margin (the direction's
    # layer, |margin| <= rass_band: the rule before)
    rass_coefs: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)  # RASS steering coefficients
    # (figures/rass_baselines.md measures each one's yield; see its "generators" table)
    n_seeds: int = 160  # RASS seeds (half D_h queries, half Alpaca rows)
    realign: bool = True  # re-align with sanitized and RASS D_b (models the run aligned)
    export: bool = True  # weight-orthogonalized copy of the w′ mitigation
    search: bool = False  # also run step 10, the mitigation search (`refusal-lens mitigate`)
    n_search: int = 64  # search: validation prompts per set (borderline, AdvBench, ...)
    search_trials: int = 60  # search: trials per search
    search_seeds: int = 3  # search: over-refusal searches, one per seed
    kl_max: float = 0.1  # search: κ, the first-token KL bound on plain prompts
    search_budget: float | None = None  # search: minutes for the whole step (None: no bound)
    search_rejudge: int = 3  # search: best trials per search judged again by generation
    search_kinds: tuple[str, ...] = ("ablate", "add")  # search: edit kinds (ablate: weights)
    n_heldout: int | None = None  # search: held-out test prompts per set (None: n_eval)
    search_judge: str = "substring"  # search: trials judged by substring or score (one forward)
    search_tokens: int = 24  # search: tokens generated per answer when search_judge=substring

    @classmethod
    def preset(cls, quick: bool = False, **changes: Any) -> RunConfig:
        """The full preset (the README's counts), or with ``quick`` the reduced counts that
        take the bundled model, aligned from nothing, through every stage on a 2-core CPU in
        about ten minutes (CI runs it). ``changes`` override either."""
        config = cls(quick=quick, **((QUICK if quick else {}) | changes))
        REGISTRY.check_selection(config.stages)
        config.check_selected(changes)
        return config

    def check_selected(self, given: Any) -> None:
        """Refuse a setting given for stages none of which this run selects: it would be
        silently ignored."""
        for name in given:
            readers = REGISTRY.readers(name)
            always = {s.name for s in REGISTRY if s.always}
            if readers and not set(readers) & {*self.stages, *always}:
                raise RefusalLensError(
                    f"{name} is a setting of stage(s) {', '.join(readers)}, which this run "
                    f"does not select (--stages {','.join(self.stages)}): add one of them to "
                    "--stages, or leave the setting out."
                )

    def __post_init__(self) -> None:
        if self.stages is None:
            object.__setattr__(self, "stages", REGISTRY.default)
        for name in ("stages", "eval_sets", "lambdas", "search_kinds"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.search and "search" not in self.stages:
            object.__setattr__(self, "stages", (*self.stages, "search"))
        super().__post_init__()

    def validate(self) -> None:
        if not self.stages:
            raise RefusalLensError(
                f"stages is empty; choose from {', '.join(REGISTRY.names)} (default: all)."
            )
        for name in ("refusal_threshold", "alpha", "harmful_drop"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        for name in STAGE_FIELDS_COUNTS:
            check_positive(name, getattr(self, name))
        if not math.isfinite(self.add_coef):
            raise RefusalLensError(
                f"add_coef must be a finite number, not {self.add_coef}; the default is 1.0."
            )
        for name in ("kl_max", "select_kl_max"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise RefusalLensError(f"{name} must be a finite number > 0, not {value}.")
        if not self.search_kinds or any(k not in ("ablate", "add") for k in self.search_kinds):
            raise RefusalLensError(
                f"search_kinds must name some of ablate, add, not {self.search_kinds}."
            )
        if self.search_budget is not None:
            check_positive("search_budget (minutes)", self.search_budget)
        if self.n_heldout is not None:
            check_positive("n_heldout", self.n_heldout)
        if self.search_judge not in ("score", "substring"):
            raise RefusalLensError(
                f"search_judge must be score or substring, not {self.search_judge!r}."
            )
        if self.rass_rule not in ("refusal", "margin"):
            raise RefusalLensError(f"rass_rule must be refusal or margin, not {self.rass_rule!r}.")
        if self.align_mode not in ("lora", "full"):
            raise RefusalLensError(f"align_mode must be lora or full, not {self.align_mode!r}.")
        if not self.lambdas or any(not 0 <= lam <= 1 for lam in self.lambdas):
            raise RefusalLensError(f"lambdas must be values in [0, 1], not {self.lambdas}.")


QUICK: dict[str, Any] = dict(
    n_check=12,
    align_harmful=96,
    align_benign=48,
    n_eval=16,
    max_new_tokens=16,
    eval_sets=("borderline", "XSTest-safe", "Alpaca", "XSTest-unsafe", "AdvBench"),
    n_train=64,
    n_val=16,
    top_k=8,
    lambdas=(1.0, 0.6),
    n_false_refusal=48,
    n_validation=8,
    n_attribution=3,
    n_masks=16,
    n_geometry=32,
    n_lookalikes=48,
    rass_contexts=6,
    rass_samples=3,
    n_seeds=40,
    n_search=16,
    search_trials=24,
    search_rejudge=2,
)
STAGE_FIELDS_COUNTS = (
    "n_check",
    "align_harmful",
    "align_benign",
    "align_epochs",
    "align_lr",
    "n_eval",
    "max_new_tokens",
    "n_train",
    "n_val",
    "top_k",
    "n_false_refusal",
    "n_validation",
    "n_attribution",
    "n_masks",
    "n_geometry",
    "n_lookalikes",
    "n_judge",
    "rass_contexts",
    "rass_samples",
    "rass_band",
    "n_seeds",
    "n_search",
    "search_trials",
    "search_seeds",
    "search_rejudge",
    "search_tokens",
)
