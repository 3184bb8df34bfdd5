"""RASS: steer, generate and select prompts near the model's safety boundary.

Our own implementation of the idea in Pan et al. (EMNLP 2025), who released no code. Three
steps, each documented where it lives:

1. **Generation** (:mod:`refusal_lens.boundary.candidates`): the model writes new requests from the
   seeds while the refusal direction is added at several coefficients; optionally, frames made
   of the trigger lexicon's words wrap benign contexts. Empty, repetitive, refusing, copied and
   duplicate candidates are screened out, and a coefficient whose output is mostly empty or
   repetitive is reported.
2. **Selection**, per language: the candidate's residual stream at ``layer`` (last template
   token) is placed against that layer's harmful-vs-harmless probe
   (:func:`refusal_lens.boundary.geometry.layer_boundary`, fitted on the reference sets, translated into
   the language when a translator is given); candidates with ``|margin| ≤ band`` are kept
   (margin units: the class means sit near ±1). A judge then keeps those it deems benign: by
   default a :class:`refusal_lens.triggers.harm.HarmJudge` (a probe on the judge model) reading the
   English text, i.e. the candidate translated back to English when it is not.
3. **Output**: one JSONL row per selected prompt, loadable as a ``PromptSet`` (label
   ``borderline``), with its margin, the refusal score of its seeds (before) and of itself
   (after), the judge's ``p_harmful`` and its provenance (method, coefficient, seeds, frame).

>>> result = rass(model, seeds, direction, reference=(harmful, harmless), judge=judge)
>>> result.save("runs/rass"); result.selected[0].scores
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from refusal_lens.artifacts import atomic_dir, write_json
from refusal_lens.boundary.candidates import (
    HEADER,
    Candidate,
    collapse_report,
    recombined_candidates,
    screen_candidates,
    steered_candidates,
)
from refusal_lens.boundary.geometry import (
    GeometryConfig,
    LayerBoundary,
    layer_boundary,
    read_layers,
)
from refusal_lens.direction import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet
from refusal_lens.scoring import refusal_scores

log = logging.getLogger(__name__)
Judge = Callable[[list[str]], Sequence[float]]  # English texts -> p(harmful) each
Translator = Callable[[list[str], str], list[str]]  # texts, target language -> translations


@dataclass(frozen=True)
class RASSConfig:
    """Every setting of one RASS run; saved as ``config.json`` next to the dataset."""

    layer: int | None = None  # selection layer; None = the direction's layer
    coefs: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    contexts: int = 8  # few-shot lists per language
    shots: int = 3
    samples: int = 4  # continuations per list and coefficient
    max_new_tokens: int = 40
    temperature: float = 0.8
    top_p: float = 0.95
    header: str = HEADER
    band: float = 0.5  # keep |margin| <= band
    max_repeat: float = 0.25
    require_request: bool = True  # drop candidates not shaped like a request (is_request)
    collapse_share: float = 0.5
    dedup_jaccard: float = 0.8
    top_triggers: int = 10
    recombine: int | None = None  # cap on recombined candidates (None = one per context)
    languages: tuple[str, ...] = ("en",)  # seeds are in languages[0]
    max_selected: int | None = None  # per language, closest to the boundary first
    seed: int = 0
    batch_size: int = 16

    def validate(self) -> None:
        if not self.coefs:
            raise RefusalLensError("coefs is empty; give at least one steering coefficient.")
        if self.band <= 0:
            raise RefusalLensError(f"band must be positive, not {self.band}.")
        if min(self.contexts, self.shots, self.samples, self.max_new_tokens) < 1:
            raise RefusalLensError("contexts, shots, samples and max_new_tokens must be ≥ 1.")


@dataclass
class RASSResult:
    """All candidates (with the reason each was dropped) and the selected ones."""

    candidates: list[Candidate]
    config: RASSConfig
    model: str
    direction: dict[str, Any]
    judge: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def selected(self) -> list[Candidate]:
        return [c for c in self.candidates if c.reason == ""]

    def summary(self) -> dict[str, Any]:
        """Counts per method/coefficient: generated, each drop reason, selected."""
        groups: dict[str, dict[str, int]] = {}
        for c in self.candidates:
            key = f"{c.language} {c.method}" + (f" coef {c.coef:g}" if c.coef is not None else "")
            row = groups.setdefault(key, {"generated": 0, "selected": 0})
            row["generated"] += 1
            reason = c.reason.split(" (")[0] if c.reason else "selected"
            row[reason] = row.get(reason, 0) + 1
        return {"groups": groups, "selected": len(self.selected), "warnings": self.warnings}

    def records(self, selected_only: bool = True) -> list[dict[str, Any]]:
        rows = []
        for c in self.selected if selected_only else self.candidates:
            row = {"text": c.text, "label": "borderline", "category": f"rass:{c.method}"}
            row |= {"source": "rass", **c.scores, "provenance": c.provenance()}
            rows.append(row if selected_only else row | {"reason": c.reason})
        return rows

    def prompts(self) -> PromptSet:
        return PromptSet.from_texts([c.text for c in self.selected], "borderline", "rass")

    def save(self, out: str | Path) -> Path:
        """``rass.jsonl`` (selected), ``candidates.jsonl`` (all, with reasons),
        ``summary.json`` and ``config.json``, written together or not at all."""
        with atomic_dir(out) as tmp:
            for name, rows in (("rass", self.records()), ("candidates", self.records(False))):
                with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            write_json(tmp / "summary.json", self.summary())
            meta = {"config": asdict(self.config), "model": self.model}
            write_json(
                tmp / "config.json", meta | {"direction": self.direction, "judge": self.judge}
            )
        return Path(out)


def margins(
    model: ModelHandle, boundary: LayerBoundary, texts: list[str], batch_size: int = 16
) -> torch.Tensor:
    config = GeometryConfig(layers=(boundary.layer,), batch_size=batch_size)
    return boundary.margin(read_layers(model, texts, config)[:, 0])


def _translated(
    prompts: PromptSet, language: str, base: str, translator: Translator | None
) -> PromptSet:
    if language == base:
        return prompts
    assert translator is not None
    return PromptSet.from_texts(translator(prompts.texts, language), prompts.prompts[0].label)


def select_near_boundary(
    model: ModelHandle,
    candidates: list[Candidate],
    boundary: LayerBoundary,
    judge: Judge,
    config: RASSConfig,
    to_english: Callable[[list[str]], list[str]] | None = None,
) -> None:
    """Score the screened candidates of one language and mark those outside the band or
    judged harmful (in place): ``margin``, ``p_harmful`` and ``refusal_score`` are set on
    every screened candidate, so unselected ones can serve as a baseline."""
    live = [c for c in candidates if c.reason == ""]
    if not live:
        return
    texts = [c.text for c in live]
    m = margins(model, boundary, texts, config.batch_size)
    english = to_english(texts) if to_english else texts
    p = [float(x) for x in judge(english)]
    after = refusal_scores(model, texts, config.batch_size, show_progress=False)
    for c, mi, pi, si, en in zip(live, m.tolist(), p, after.tolist(), english, strict=True):
        c.scores |= {"margin": mi, "layer": boundary.layer, "p_harmful": pi, "refusal_score": si}
        if en != c.text:
            c.scores["english"] = en
        if abs(mi) > config.band:
            c.reason = f"outside the band (|margin| {abs(mi):.2f} > {config.band:g})"
        elif pi >= 0.5:
            c.reason = f"judged harmful (p {pi:.2f})"
    if config.max_selected is not None:
        kept = sorted((c for c in live if c.reason == ""), key=lambda c: abs(c.scores["margin"]))
        for c in kept[config.max_selected :]:
            c.reason = "over max_selected"


def seed_scores(model: ModelHandle, candidates: list[Candidate], batch_size: int) -> None:
    """``refusal_score_seeds``: the mean refusal score of the prompts a candidate came from."""
    seeds = sorted({s for c in candidates for s in c.seeds})
    if not seeds:
        return
    score = dict(zip(seeds, refusal_scores(model, seeds, batch_size, False).tolist(), strict=True))
    for c in candidates:
        if c.seeds:
            c.scores["refusal_score_seeds"] = sum(score[s] for s in c.seeds) / len(c.seeds)


def rass(
    model: ModelHandle,
    seeds: PromptSet | list[str],
    direction: Direction,
    reference: tuple[PromptSet, PromptSet],
    judge: Judge,
    config: RASSConfig | None = None,
    *,
    lexicon: Sequence[dict] | None = None,
    benign_contexts: Sequence[str] = (),
    translator: Translator | None = None,
    judge_info: dict[str, Any] | None = None,
) -> RASSResult:
    """Generate around the boundary from ``seeds``, screen, and select per language.

    ``reference`` = (harmful, harmless) prompts that define the boundary. ``judge`` maps
    English texts to p(harmful). ``lexicon`` (a trigger lexicon) with ``benign_contexts`` adds
    recombined candidates. ``translator(texts, language)`` is needed for more than one
    language: it translates seeds, reference sets and contexts into each language and the
    candidates back into English for the judge.
    """
    config = config or RASSConfig()
    config.validate()
    seeds = list(getattr(seeds, "texts", seeds))
    if not seeds:
        raise RefusalLensError("No seed prompts; give at least one request to start from.")
    direction.check(model)
    base = config.languages[0]
    if len(config.languages) > 1 and translator is None:
        raise RefusalLensError(
            f"languages {config.languages} need a translator: pass translator= (e.g. "
            "refusal_lens.boundary.translate.model_translator(model)) or use one language."
        )
    layer = direction.layer if config.layer is None else config.layer
    geo = GeometryConfig(batch_size=config.batch_size, seed=config.seed)
    candidates: list[Candidate] = []
    for language in config.languages:
        lang_seeds = seeds if language == base else translator(seeds, language)  # type: ignore[misc]
        found = steered_candidates(
            model,
            lang_seeds,
            direction,
            config.coefs,
            language=language,
            n_contexts=config.contexts,
            shots=config.shots,
            samples=config.samples,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            header=config.header,
            seed=config.seed,
            batch_size=config.batch_size,
        )
        if lexicon and benign_contexts and language == base:
            found += recombined_candidates(
                lexicon,
                list(benign_contexts),
                top_triggers=config.top_triggers,
                language=language,
                limit=config.recombine,
            )
        screen_candidates(
            found,
            lang_seeds,
            max_repeat=config.max_repeat,
            dedup_jaccard=config.dedup_jaccard,
            require_request=config.require_request,
        )
        harmful, harmless = (_translated(p, language, base, translator) for p in reference)
        boundary = layer_boundary(model, harmful, harmless, layer, direction, geo)

        def back(texts: list[str], language: str = language) -> list[str]:
            return translator(texts, base)  # type: ignore[misc]

        select_near_boundary(
            model, found, boundary, judge, config, None if language == base else back
        )
        candidates += found
    warnings = collapse_report(candidates, config.collapse_share)
    for w in warnings:
        log.warning(w)
    if not any(c.reason == "" for c in candidates):
        raise RefusalLensError(
            "RASS selected nothing: "
            + json.dumps(
                RASSResult(candidates, config, "", {}, warnings=warnings).summary()["groups"]
            )
            + ". Widen the band, add seeds or contexts, "
            "or use smaller steering coefficients."
        )
    seed_scores(model, candidates, config.batch_size)
    return RASSResult(
        candidates, config, model.model_id, direction.metadata(), judge_info or {}, warnings
    )


def probe_judge(judge: Any, model: ModelHandle) -> Judge:
    """A :class:`refusal_lens.triggers.harm.HarmJudge` on ``model`` as a RASS judge."""

    def p_harmful(texts: list[str]) -> list[float]:
        return judge.p_harmful(model, texts).tolist()

    return p_harmful
