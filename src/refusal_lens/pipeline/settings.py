"""The library configs each stage uses, built from the run's settings (``RunConfig``: its
run-level settings and the stage's own, ``config.<stage>``).

Each function is a stage's ``settings`` in the registry: the step reads its configs from
``ctx.settings`` instead of building them, and the stage's cache key hashes them whole, with
every default. A changed default of any library config therefore reruns the stages that use
it, and reuses the rest.
"""

from __future__ import annotations

from typing import Any

from refusal_lens.alignment import AlignConfig
from refusal_lens.attribution.methods import AttributionConfig
from refusal_lens.boundary.geometry import GeometryConfig
from refusal_lens.boundary.rass_config import RASSConfig
from refusal_lens.directions import SelectConfig
from refusal_lens.directions.find import DirectionConfig
from refusal_lens.evaluation import EvalConfig
from refusal_lens.mitigation.search import SearchConfig
from refusal_lens.pipeline.config import RunConfig
from refusal_lens.pipeline.stage_settings import EVAL_SETS
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.triggers.harm import HarmJudgeConfig
from refusal_lens.triggers.masks import TriggerConfig
from refusal_lens.triggers.sanitize import SanitizeConfig

JUDGES = ("score", "substring")  # the judges of every check, evaluation and validation


def harmful_queries(n_masks: int) -> PromptSet:
    """D_h: the organism's harmful training queries (or, for a model aligned by its makers,
    the shipped harmful set), the first ``n_masks``."""
    return load_prompts("harmful")[:n_masks]


# The search's held-out comparison: every set of the full preset's, and HarmBench.
SEARCH_TEST_SETS = EVAL_SETS
SEARCH_EXTRA_SETS = {"HarmBench": ("harmbench", "harmful")}


def organism(c: RunConfig) -> dict[str, Any]:
    """The organism recipe the run aligns with when the model refuses too little."""
    s = c.organism
    recipe = AlignConfig.organism(
        s.alpha,
        n_harmful=s.n_harmful,
        n_benign=s.n_benign,
        mode=s.mode,
        epochs=s.epochs,
        lr=s.lr,
        seed=c.seed,
    )
    return {"align": recipe}


def evaluate(c: RunConfig) -> dict[str, Any]:
    """The held-out test prompts and judges every evaluation of the run uses."""
    return {
        "eval": EvalConfig(
            n=c.evaluate.n, max_new_tokens=c.max_new_tokens, sets=c.evaluate.sets, seed=c.seed
        )
    }


def direction(c: RunConfig) -> dict[str, Any]:
    config = DirectionConfig(
        harmful="harmful",
        harmless="harmless",
        n_train=c.direction.n_train,
        n_val=c.direction.n_val,
        seed=c.seed,
        select=SelectConfig(kl_max=c.direction.kl_max, top_k=c.direction.top_k),
    )
    return {"direction": config}


def attribution(c: RunConfig) -> dict[str, Any]:
    """The run's attribution method, and the projection on r for the heat map."""
    return {
        "method": AttributionConfig(c.attribution.method, attribute_unrefused=True),
        "projection": AttributionConfig("projection", attribute_unrefused=True),
    }


def triggers(c: RunConfig) -> dict[str, Any]:
    return {"harm_judge": HarmJudgeConfig(), "masks": TriggerConfig(), "sanitize": SanitizeConfig()}


def geometry(c: RunConfig) -> dict[str, Any]:
    return {"geometry": GeometryConfig(seed=c.seed)}


def multilingual(c: RunConfig) -> dict[str, Any]:
    """The English boundary's probe is the geometry stage's, fitted the same way."""
    return geometry(c)


def rass(c: RunConfig) -> dict[str, Any]:
    """RASS's settings before the geometry stage's fit sets its layer and band."""
    config = RASSConfig(
        coefs=c.rass.coefs,
        contexts=c.rass.contexts,
        samples=c.rass.samples,
        band=c.rass.band,
        seed=c.seed,
    )
    return {"rass": config}


def search(c: RunConfig) -> dict[str, Any]:
    """The search's settings, and its held-out test prompts (``n_heldout`` per set; unset,
    the evaluation's ``n``)."""
    s = c.search
    config = SearchConfig(
        trials=s.trials, harmful_drop=s.harmful_drop, kl_max=s.kl_max, seed=c.seed, kinds=s.kinds
    )
    tests = EvalConfig(
        n=c.evaluate.n if s.n_heldout is None else s.n_heldout,
        max_new_tokens=c.max_new_tokens,
        sets=SEARCH_TEST_SETS,
        extra=SEARCH_EXTRA_SETS,
        seed=c.seed,
    )
    return {"search": config, "tests": tests}
