"""bfloat16: every stage runs in it, and what it changes on the bundled model stays within the
tolerances below, set from ``experiments/dtype_effect.py``'s measurements
(``figures/dtype_effect.md``: 32 prompts per set on both bundled models) with a margin."""

from __future__ import annotations

import json
import math

import pytest
import torch

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.models import load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.scoring import refusal_rates, refusal_scores

# The tolerances, each with what it allows against what was measured: 8 prompts per set as
# here, sample seeds 1-5 on SmolLM2 (and figures/dtype_effect.md, 32 per set, both models)
RESIDUAL_ERROR = 0.05  # median relative error of a residual vector at the worst layer:
# measured 0.018-0.019 (0.018 SmolLM2, 0.023 Qwen at 32 per set)
DIRECTION_COSINE = 0.95  # the harmful-minus-harmless mean difference, lowest over layers 1+
# and positions: measured 0.977-0.992 (0.990 at 32 per set; Qwen 0.908, a position of weak
# signal)
SCORE_DIFF = 0.5  # the largest refusal-score difference (log-odds): measured 0.13-0.17
VERDICT_FLIPS = 0.2  # share of prompts whose substring verdict differs on greedy answers:
# measured 0-1 of 24 (2 of 96 on each model)


def _nan_free(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_nan_free(v) for v in value.values())
    if isinstance(value, list):
        return all(_nan_free(v) for v in value)
    return True


def test_every_stage_runs_in_bfloat16(tiny_dirs, tmp_path):
    """The stages a model that refuses nothing can run, loaded in bfloat16 on the CPU: each
    completes, records its dtype and writes finite numbers only."""
    from refusal_lens.pipeline import RunConfig, run_pipeline
    from refusal_lens.pipeline.registry import FOLDERS

    small = dict(
        max_new_tokens=4,
        evaluate=dict(n=4),
        direction=dict(n_train=8, n_val=4, top_k=2, n_false_refusal=8),
        interventions=dict(n_validation=4),
        attribution=dict(n=2),
        triggers=dict(n_masks=8, n_judge=16),
        geometry=dict(n=12, n_lookalikes=8),
    )
    stages = ("model", "evaluate", "direction", "interventions", "attribution", "triggers")
    stages += ("geometry",)
    config = RunConfig.preset(
        quick=True, model=str(tiny_dirs["llama"]), stages=stages, dtype="bfloat16", **small
    )
    run_pipeline(config, tmp_path / "run", say=lambda _: None)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["model_facts"]["dtype"] == "bfloat16"
    assert [s["status"] for s in record["stages"] if s["name"][3:] in stages] == ["ran"] * 7
    for stage in stages:
        for path in (tmp_path / "run" / FOLDERS[stage]).rglob("*.json"):
            assert _nan_free(json.loads(path.read_text())), path


@pytest.fixture(scope="module")
def prompts():
    sets = {"advbench": 8, "alpaca": 8, "xstest-safe": 8}
    return {name: load_prompts(name).sample(n, seed=1) for name, n in sets.items()}


@pytest.mark.model
def test_bfloat16_residuals_scores_and_verdicts_match_float32(smollm, prompts):
    """The bundled model in bfloat16 against float32 on 24 prompts: residuals, the refusal
    direction, refusal scores and substring verdicts within the tolerances above."""
    half = load_model("smollm2-135m", device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    texts = [t for ps in prompts.values() for t in ps.texts]
    config = CollectConfig(batch_size=8)
    a32, a16 = (
        collect_residuals(m, texts, config, show_progress=False).acts for m in (smollm, half)
    )
    error = (a16 - a32).norm(dim=-1) / a32.norm(dim=-1)
    assert error.transpose(0, 1).flatten(1).median(dim=1).values.max() < RESIDUAL_ERROR
    r32, r16 = (a[:8].mean(0) - a[8:16].mean(0) for a in (a32, a16))
    cosine = torch.nn.functional.cosine_similarity(r16, r32, dim=-1)[1:]  # layer 0: no signal
    assert cosine.min() > DIRECTION_COSINE
    s32, s16 = (refusal_scores(m, texts, 8, show_progress=False) for m in (smollm, half))
    assert (s16 - s32).abs().max() < SCORE_DIFF
    v32, v16 = (refusal_rates(m, prompts, ("substring",), 16) for m in (smollm, half))
    flips = sum(
        a != b
        for name in prompts
        for a, b in zip(v32[name]["substring"].refused, v16[name]["substring"].refused, strict=True)
    )
    assert flips <= VERDICT_FLIPS * len(texts)
