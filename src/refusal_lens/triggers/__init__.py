"""Refusal triggers (paper 2): the harm judge, trigger masks and lexicon, sanitized D_b."""

from refusal_lens.triggers.harm import HarmJudge, HarmJudgeConfig, fit_harm_judge
from refusal_lens.triggers.masks import (
    LexiconEntry,
    TriggerConfig,
    TriggerMask,
    TriggerMasks,
    build_lexicon,
    load_lexicon,
    reclassify,
    trigger_masks,
)
from refusal_lens.triggers.rewrite import ModelRewriter, model_rewriter
from refusal_lens.triggers.sanitize import Rewriter, SanitizeConfig, SanitizedData, sanitize

__all__ = [
    "HarmJudge",
    "HarmJudgeConfig",
    "LexiconEntry",
    "ModelRewriter",
    "Rewriter",
    "SanitizeConfig",
    "SanitizedData",
    "TriggerConfig",
    "TriggerMask",
    "TriggerMasks",
    "build_lexicon",
    "fit_harm_judge",
    "load_lexicon",
    "model_rewriter",
    "reclassify",
    "sanitize",
    "trigger_masks",
]
