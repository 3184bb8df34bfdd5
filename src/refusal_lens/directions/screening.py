"""Choose the refusal direction among the candidates (Arditi et al.'s selection, made fast).

Three scores per candidate ``r[l, i]``, on validation prompts the candidates were not built from:

- *bypass*: mean refusal score on harmful prompts with ``r`` ablated at every layer (lower is
  better: the model stops refusing);
- *induce*: mean refusal score on harmless prompts with ``r`` added before block ``l`` (must
  exceed ``induce_min``, by default the model's refusal threshold: 0, i.e. ``p(R) > 0.5``,
  unless :mod:`refusal_lens.calibration` fitted it to the model's own refusals; adding ``r``
  makes the mean harmless prompt refused);
- *KL*: mean first-token KL(base ‖ ablated) on harmless prompts (must stay below ``kl_max``,
  default 0.1: ablation leaves harmless behaviour alone).

Candidates at layers ``≥ max_layer_frac · n_layers`` are excluded (late layers tend to act on
the output tokens directly), and the survivor with the lowest bypass wins.

Scoring every candidate costs three forward passes each. The **screen** ranks all eligible
candidates first from one forward and backward pass per set (attribution patching): the
ablation's effect on the refusal score is estimated to first order as
``−Σ_writes Σ_pos (r̂·w)(r̂·∂s/∂x)`` over the residual-stream writes ``w`` (the embedding and
each attention and MLP output), and the addition's as ``Σ_pos r·∂s/∂x`` at the layer. Only
the ``top_k`` (default 8) candidates with the lowest estimated bypass get the full scores
(``top_k=0`` scores all of them). ``benchmarks/selection.py`` compares the choice and the time
with scoring every candidate; ``tests/test_directions.py`` checks both estimates against
finite differences.

When every scored candidate fails a filter, the selection says which filter removed how many,
and returns, with ``fallback=True`` rather than failing, the candidate that fails the fewest
filters: among those, when they fail KL, the one with the lowest KL (ablating it harms harmless
prompts least; ``fallback_rule="bypass"`` restores the earlier rule, lowest bypass, which can
choose an ablation that breaks the model), else the one with the lowest bypass.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, replace

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens import interventions
from refusal_lens.directions.extract import Candidates
from refusal_lens.directions.selection import CandidateScore, SelectConfig, Selection
from refusal_lens.errors import RefusalLensError
from refusal_lens.hooks import capture, hook_name, intervene
from refusal_lens.models import ModelHandle
from refusal_lens.progress import progress
from refusal_lens.prompts import ChatBatch, PromptSet, length_sorted_batches
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import answer_logits, refusal_score

log = logging.getLogger(__name__)


class _ValSet:
    """A validation set tokenized once into device batches."""

    def __init__(self, model: ModelHandle, prompts: PromptSet | list[str], role: str, bs: int):
        texts = prompts.texts if isinstance(prompts, PromptSet) else list(prompts)
        if not texts:
            raise RefusalLensError(
                f"The {role} validation set is empty; selection needs validation prompts of "
                "both classes (e.g. 32 each) that the candidates were not built from."
            )
        lengths = model.chat.token_lengths(texts)
        self.n = len(texts)
        self.batches: list[ChatBatch] = [
            model.chat.tokenize([texts[i] for i in idx]).to(model.device)
            for idx in length_sorted_batches(lengths, bs)
        ]


def _logprobs(model: ModelHandle, batch: ChatBatch) -> Float[Tensor, "batch d_vocab"]:
    return answer_logits(model, batch).log_softmax(-1)


def _run(model: ModelHandle, val: _ValSet, hooks: list) -> list[Tensor]:
    with torch.inference_mode(), intervene(model, hooks):
        return [_logprobs(model, batch) for batch in val.batches]


def _mean_score(model: ModelHandle, logprobs: list[Tensor]) -> float:
    scores = torch.cat([refusal_score(lp, model.refusal_tokens) for lp in logprobs])
    return float(scores.mean())


def _mean_kl(base: list[Tensor], other: list[Tensor]) -> float:
    kl = torch.cat([(b.exp() * (b - o)).sum(-1) for b, o in zip(base, other, strict=True)])
    return float(kl.mean())


# Tokens per backward pass of the screen, per unit of d_model: a backward pass stores every
# layer's activations for its rows, about d_model numbers per token and layer (times a small
# constant), while the weights hold about d_model² per layer; d_model / 8 tokens keep the
# pass near a tenth of the weights' memory at any model size. A validation batch is split
# into row groups of that many tokens (padding included); the estimates are sums over rows,
# the same whatever the split.
GRAD_TOKENS_PER_D = 1 / 8


def _row_groups(model: ModelHandle, batch: ChatBatch) -> list[ChatBatch]:
    tokens = max(32, int(model.d_model * GRAD_TOKENS_PER_D))
    rows = max(1, tokens // batch.input_ids.shape[1])
    return [
        ChatBatch(
            batch.input_ids[i : i + rows],
            batch.attention_mask[i : i + rows],
            batch.user_mask[i : i + rows],
            batch.texts[i : i + rows],
        )
        for i in range(0, batch.input_ids.shape[0], rows)
    ]


def _write_grads(
    model: ModelHandle, batch: ChatBatch
) -> tuple[list[Float[Tensor, "batch pos d_model"]], list[Float[Tensor, "batch pos d_model"]]]:
    """The residual stream right after each write (the embedding, then each attention and
    MLP output), and the gradient of the summed refusal score there; padding zeroed."""
    names = [hook_name(0)] + [
        hook_name(layer, f"resid_{p}") for layer in range(model.n_layers) for p in ("mid", "post")
    ]
    # the graph starts at the embedding (names[0]): no weight grads
    with torch.enable_grad(), capture(model, names, grad=True) as stored:
        logprobs = _logprobs(model, batch)
        total = refusal_score(logprobs, model.refusal_tokens).sum()
        acts = [stored[n] for n in names]
        grads = torch.autograd.grad(total, acts)
    mask = batch.attention_mask[:, :, None].float()
    here = mask.device  # layers may sit on several devices under a device map
    resid = [a.detach().float().to(here) for a in acts]
    return resid, [g.float().to(here) * mask for g in grads]


def _bypass_terms(
    model: ModelHandle, batch: ChatBatch, units: Float[Tensor, "layer pos d_model"]
) -> Float[Tensor, "layer pos"]:
    """``Σ_writes Σ_pos (r̂·w)(r̂·∂s/∂x)`` over the batch's rows, for every candidate; one
    write at a time (never every layer's writes at once)."""
    flat = units.flatten(0, 1)  # [candidate, d_model]
    total = torch.zeros(flat.shape[0], device=units.device)
    for rows in _row_groups(model, batch):
        resid, grads = _write_grads(model, rows)
        previous = None
        for x, g in zip(resid, grads, strict=True):
            write = x if previous is None else x - previous
            previous = x
            total += ((write @ flat.T) * (g @ flat.T)).sum((0, 1))
    return total.view(units.shape[:2])


def _induce_terms(
    model: ModelHandle, batch: ChatBatch, vecs: Float[Tensor, "layer pos d_model"], layers: list
) -> Float[Tensor, "layer pos"]:
    """``Σ_pos r·∂s/∂x`` at each candidate's layer (``resid_pre``), summed over the rows."""
    total = torch.zeros(vecs.shape[:2], device=vecs.device)
    for rows in _row_groups(model, batch):
        _, grads = _write_grads(model, rows)
        # gradient at resid_pre of block l: the embedding slot for l = 0, else resid_post l-1
        pre = [grads[0], *grads[2::2]][: model.n_layers]
        g_sum = torch.stack([pre[layer].sum((0, 1)) for layer in layers])  # [layer, d_model]
        total += torch.einsum("ld,lqd->lq", g_sum, vecs)
    return total


def first_order_estimates(
    model: ModelHandle, candidates: Candidates, harmful: _ValSet, harmless: _ValSet
) -> tuple[Float[Tensor, "layer pos"], Float[Tensor, "layer pos"]]:
    """First-order estimates of the change in mean refusal score: under ablation on harmful
    prompts (bypass) and under addition at the candidate's layer on harmless ones (induce)."""
    vecs = candidates.vectors.to(model.device, torch.float32)
    units = vecs / vecs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bypass = -sum(_bypass_terms(model, batch, units) for batch in harmful.batches)
    induce = sum(_induce_terms(model, b, vecs, list(candidates.layers)) for b in harmless.batches)
    return (bypass / harmful.n).cpu(), (induce / harmless.n).cpu()


def score_candidate(
    model: ModelHandle,
    direction: Direction,
    harmful: _ValSet,
    harmless: _ValSet,
    base_harmless: list[Tensor],
) -> tuple[float, float, float]:
    """Full (bypass, induce, KL) of one candidate."""
    hooks = interventions.projection_hooks(model, [direction])
    bypass = _mean_score(model, _run(model, harmful, hooks))
    kl = _mean_kl(base_harmless, _run(model, harmless, hooks))
    with interventions.add(model, direction, 1.0):
        induce = _mean_score(model, _run(model, harmless, []))
    return bypass, induce, kl


def score_candidates(
    model: ModelHandle,
    candidates: Candidates,
    harmful_val: PromptSet | list[str],
    harmless_val: PromptSet | list[str],
    keys: list[tuple[int, int]],
    batch_size: int = 32,
    show_progress: bool = True,
) -> dict[tuple[int, int], tuple[float, float, float]]:
    """Full (bypass, induce, KL) of the candidates at ``keys`` (layer, position pairs)."""
    harmful = _ValSet(model, harmful_val, "harmful", batch_size)
    harmless = _ValSet(model, harmless_val, "harmless", batch_size)
    base = _run(model, harmless, [])
    return {
        key: score_candidate(model, candidates.direction(*key), harmful, harmless, base)
        for key in progress(keys, "score candidates", show_progress)
    }


def ablation_kl(
    model: ModelHandle, prompts: PromptSet | list[str], direction: Direction, batch_size: int = 32
) -> float:
    """Mean first-token KL(base ‖ ablated) over ``prompts``."""
    val = _ValSet(model, prompts, "KL", batch_size)
    hooks = interventions.projection_hooks(model, [direction])
    return _mean_kl(_run(model, val, []), _run(model, val, hooks))


def _filters(c: CandidateScore, config: SelectConfig) -> list[str]:
    failed = []
    if c.induce is not None and not c.induce > config.induce_min:
        failed.append("induce")
    if c.kl is not None and not c.kl < config.kl_max:
        failed.append("kl")
    if c.bypass is not None and not math.isfinite(c.bypass):
        failed.append("nan")
    return failed


def select_direction(
    model: ModelHandle,
    candidates: Candidates,
    harmful_val: PromptSet | list[str],
    harmless_val: PromptSet | list[str],
    config: SelectConfig | None = None,
    *,
    show_progress: bool = True,
) -> Selection:
    """Pick the refusal direction among ``candidates`` (see the module docstring)."""
    config = config or SelectConfig()
    if config.induce_min is None:  # "adding r induces refusal": crosses the model's threshold
        config = replace(config, induce_min=model.refusal_threshold)
    if candidates.model != model.model_id or candidates.vectors.shape[-1] != model.d_model:
        raise RefusalLensError(
            f"The candidates come from {candidates.model} (d_model "
            f"{candidates.vectors.shape[-1]}), not {model.model_id} (d_model {model.d_model})."
        )
    harmful = _ValSet(model, harmful_val, "harmful", config.batch_size)
    harmless = _ValSet(model, harmless_val, "harmless", config.batch_size)
    base_harmful = _mean_score(model, _run(model, harmful, []))
    base_harmless_lp = _run(model, harmless, [])
    baseline = {"harmful": base_harmful, "harmless": _mean_score(model, base_harmless_lp)}
    table, eligible = _eligible(model, candidates, config)
    if config.top_k > 0:
        eligible = _screen(
            model, candidates, table, eligible, (harmful, harmless), baseline, config
        )
    for key in progress(eligible, "score candidates", show_progress):
        c = table[key]
        c.bypass, c.induce, c.kl = score_candidate(
            model, candidates.direction(*key), harmful, harmless, base_harmless_lp
        )
        c.filtered_by = _filters(c, config)
    return _choose(candidates, table, [table[key] for key in eligible], baseline, config)


Key = tuple[int, int]


def _eligible(
    model: ModelHandle, candidates: Candidates, config: SelectConfig
) -> tuple[dict[Key, CandidateScore], list[Key]]:
    """Every candidate's score row, and those not ruled out by layer or a zero norm."""
    max_layer = config.max_layer_frac * model.n_layers
    norms = candidates.vectors.norm(dim=-1)
    table = {
        (layer, pos): CandidateScore(layer, pos)
        for layer in candidates.layers
        for pos in candidates.positions
    }
    for (layer, pos), c in table.items():
        if not layer < max_layer:
            c.filtered_by.append("layer")
        # e.g. layer 0 at template positions: the same token embeddings in both sets
        if not norms[candidates.layers.index(layer), candidates.positions.index(pos)] > 1e-6:
            c.filtered_by.append("zero_norm")
    eligible = [key for key, c in table.items() if not c.filtered_by]
    if not eligible:
        raise RefusalLensError(
            f"No candidate can be scored: each is at a layer ≥ max_layer_frac·n_layers = "
            f"{max_layer:g} or has zero norm (candidates cover layers {candidates.layers}). "
            "Raise max_layer_frac, or extract later layers than 0 (at layer 0 the template "
            "tokens have the same embedding in every prompt)."
        )
    return table, eligible


def _screen(
    model: ModelHandle,
    candidates: Candidates,
    table: dict[Key, CandidateScore],
    eligible: list[Key],
    val: tuple[_ValSet, _ValSet],
    baseline: dict[str, float],
    config: SelectConfig,
) -> list[Key]:
    """Record the first-order estimates; keep the ``top_k`` eligible ones by bypass."""
    d_bypass, d_induce = first_order_estimates(model, candidates, *val)
    for (layer, pos), c in table.items():
        li, pi = candidates.layers.index(layer), candidates.positions.index(pos)
        c.screen_bypass = baseline["harmful"] + float(d_bypass[li, pi])
        c.screen_induce = baseline["harmless"] + float(d_induce[li, pi])
    return sorted(eligible, key=lambda key: table[key].screen_bypass)[: config.top_k]


def _choose(
    candidates: Candidates,
    table: dict[Key, CandidateScore],
    scored: list[CandidateScore],
    baseline: dict[str, float],
    config: SelectConfig,
) -> Selection:
    """The best candidate that passes every filter, else the fallback, as a Selection."""
    passed = [c for c in scored if not c.filtered_by]
    fallback = not passed
    best = min(passed or scored, key=lambda c: fallback_key(c, config.fallback_rule))
    message = _explain(best, scored, passed, config)
    if fallback:
        log.warning(message)
    scores = {"bypass": best.bypass, "induce": best.induce, "kl": best.kl}
    direction = candidates.direction(
        best.layer,
        best.position,
        scores={**scores, **{f"baseline_{k}": v for k, v in baseline.items()}},
    )
    config_all = {**candidates.config, "selection": asdict(config), "fallback": fallback}
    direction = replace(direction, config=config_all)
    return Selection(
        direction, list(table.values()), config, baseline, fallback, message, {}, candidates
    )


def fallback_key(c: CandidateScore, rule: str) -> tuple[int, float, float]:
    """Order of preference among candidates: fewest failed filters first; then, under the
    ``"kl"`` rule, the lowest KL among those that fail KL (ablating the others would change
    harmless behaviour more); then the lowest bypass."""
    bypass = c.bypass if c.bypass is not None and math.isfinite(c.bypass) else math.inf
    kl = c.kl if c.kl is not None and math.isfinite(c.kl) else math.inf
    fails_kl = rule == "kl" and "kl" in c.filtered_by
    return (len(c.filtered_by), kl if fails_kl else -math.inf, bypass)


def _explain(
    best: CandidateScore,
    scored: list[CandidateScore],
    passed: list[CandidateScore],
    config: SelectConfig,
) -> str:
    where = f"layer {best.layer}, position {best.position}"
    if passed:
        return (
            f"Selected {where}: bypass {best.bypass:.2f}, induce {best.induce:.2f}, KL "
            f"{best.kl:.3f} ({len(passed)} of {len(scored)} scored candidates passed the filters)."
        )
    labels = {
        "induce": f"induce ≤ {config.induce_min}",
        "kl": f"KL ≥ {config.kl_max}",
        "nan": "NaN bypass",
    }
    counts = {f: sum(f in c.filtered_by for c in scored) for f in labels}
    kl_first = config.fallback_rule == "kl" and "kl" in best.filtered_by
    order = "lowest KL" if kl_first else "lowest bypass"
    why = ", ".join(f"{n} by {labels[f]}" for f, n in counts.items() if n)
    return (
        f"Every one of the {len(scored)} scored candidates was filtered out: {why}. Returning "
        f"the candidate that fails the fewest filters ({', '.join(best.filtered_by)}), "
        f"{order} first ({where}: bypass {best.bypass:.2f}, induce "
        f"{best.induce:.2f}, KL {best.kl:.3f}); loosen kl_max / induce_min, raise top_k, or use "
        "more contrasting prompt sets."
    )
