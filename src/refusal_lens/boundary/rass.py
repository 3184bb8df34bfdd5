"""RASS: steer, generate and select prompts near the model's safety boundary.

Our own implementation of the idea in Pan et al. (EMNLP 2025), who released no code. Three
steps, each documented where it lives:

1. **Generation** (:mod:`refusal_lens.boundary.candidates`): the model writes new requests
   from the seeds while the refusal direction is added at several coefficients; optionally,
   frames made of the trigger lexicon's words wrap benign contexts. Empty, repetitive,
   refusing, copied and duplicate candidates are screened out, and a coefficient whose output
   is mostly empty or repetitive is reported.
2. **Selection**, per language: the candidate's residual stream at ``layer`` (last template
   token) is placed against that layer's harmful-vs-harmless probe
   (:func:`refusal_lens.boundary.geometry.layer_boundary`, fitted on the reference sets,
   translated into the language when a translator is given); candidates with
   ``|margin| ≤ band`` are kept (margin units: the class means sit near ±1), or, with
   ``band_range = (lo, hi)``, those with ``lo ≤ margin ≤ hi``: the pipeline takes the layer
   and that band from :mod:`refusal_lens.boundary.refusal_fit`, where the margin predicts the
   model's refusals of validation look-alikes and the fitted refusal is near one half. A
   :class:`HarmScorer` then drops those whose ``p_harmful`` reaches its ``threshold``: by
   default a :class:`refusal_lens.triggers.harm.HarmJudge` (a probe on the judge model, with
   its own ``config.threshold``; :func:`harm_scorer`) reading the English text, i.e. the
   candidate translated back to English when it is not. The candidates left are re-checked by
   a second judge, ``harm_check`` (by default
   :data:`refusal_lens.triggers.harm.cue_check`, harm cue words for phishing, malware,
   intrusion and credential theft; the probe alone, fitted as the run fits it, calls such
   requests benign: ``figures/harm_judge.md``); one it flags is dropped with reason
   ``harm check (...)``, listed in :attr:`RASSResult.dropped_by_harm_check` (saved in
   ``rass_summary.json`` and ``rass.json``) and counted in a warning.
3. **Output** (:meth:`RASSResult.save`): ``rass.jsonl``, one row per selected prompt, loadable
   as a ``PromptSet`` (label ``borderline``), with its margin, the refusal score of its seeds
   (before) and of itself (after), ``p_harmful`` and its provenance (method, coefficient,
   seeds, frame); ``rass_candidates.jsonl`` (every candidate, with the reason it was dropped),
   ``rass_summary.json`` (counts) and ``rass.json`` (config, model, direction, the harm
   scorer with its threshold, warnings). :meth:`RASSResult.load` reads them back.

Translation (more than one language): a translator that returns anything but one string per
text is an error; an empty translation keeps its source text, and empty and unchanged
translations are counted per direction (``RASSResult.translations``, in ``rass_summary.json``
and ``rass.json``) and warned about (:mod:`refusal_lens.boundary.translate`).

>>> result = rass(model, seeds, direction, (harmful, harmless), harm_scorer(judge, base))
>>> result.save("runs/rass"); result.selected[0].scores
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from refusal_lens.boundary.candidates import (
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
from refusal_lens.boundary.rass_config import RASSConfig, band_text, in_band
from refusal_lens.boundary.rass_result import HARM_CHECK_REASON, RASSResult
from refusal_lens.boundary.translate import check_translations
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import refusal_scores
from refusal_lens.triggers.harm import HarmFn, HarmScorer, as_harm_scorer
from refusal_lens.triggers.harm_check import HarmCheck, cue_check, describe_check, run_check
from refusal_lens.triggers.masks import LexiconEntry

log = logging.getLogger(__name__)
Translator = Callable[[list[str], str], list[str]]  # texts, target language -> translations


def margins(
    model: ModelHandle, boundary: LayerBoundary, texts: list[str], batch_size: int = 16
) -> torch.Tensor:
    config = GeometryConfig(layers=(boundary.layer,), batch_size=batch_size)
    return boundary.margin(read_layers(model, texts, config)[:, 0])


def select_near_boundary(
    model: ModelHandle,
    candidates: list[Candidate],
    boundary: LayerBoundary,
    harm: HarmScorer,
    config: RASSConfig,
    to_english: Callable[[list[str]], list[str]] | None = None,
    harm_check: HarmCheck | None = None,
) -> None:
    """Score the screened candidates of one language and mark those outside the band or
    with ``p_harmful >= harm.threshold`` (in place): ``margin``, ``p_harmful`` and
    ``refusal_score`` are set on every screened candidate, so unselected ones can serve as a
    baseline. ``harm_check`` then re-checks the English text of the candidates left."""
    live = [c for c in candidates if c.reason == ""]
    if not live:
        return
    texts = [c.text for c in live]
    m = margins(model, boundary, texts, config.batch_size)
    english = to_english(texts) if to_english else texts
    p = [float(x) for x in harm.p_harmful(english)]
    after = refusal_scores(model, texts, config.batch_size, show_progress=False)
    for c, mi, pi, si, en in zip(live, m.tolist(), p, after.tolist(), english, strict=True):
        c.scores |= {"margin": mi, "layer": boundary.layer, "p_harmful": pi, "refusal_score": si}
        if en != c.text:
            c.scores["english"] = en
        if not in_band(mi, config):
            c.reason = f"outside the band ({band_text(mi, config)})"
        elif pi >= harm.threshold:
            c.reason = f"judged harmful (p {pi:.2f} >= {harm.threshold:g})"
    if harm_check is not None:
        passed = [(c, en) for c, en in zip(live, english, strict=True) if c.reason == ""]
        reasons = run_check(harm_check, [en for _, en in passed])
        for (c, _), why in zip(passed, reasons, strict=True):
            if why is not None:
                c.reason = f"{HARM_CHECK_REASON} ({why})"
    if config.max_selected is not None:
        centre = sum(config.band_range) / 2 if config.band_range else 0.0
        kept = sorted(
            (c for c in live if c.reason == ""), key=lambda c: abs(c.scores["margin"] - centre)
        )
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


@dataclass
class RASSRun:
    """The inputs of one :func:`rass` call, and the per-language steps on them."""

    model: ModelHandle
    seeds: list[str]
    direction: Direction
    reference: tuple[PromptSet, PromptSet]
    harm: HarmScorer
    config: RASSConfig
    lexicon: Sequence[LexiconEntry] | None = None
    benign_contexts: list[str] = field(default_factory=list)
    translator: Translator | None = None
    translations: dict[str, dict[str, int]] = field(default_factory=dict)  # RASSResult's
    harm_check: HarmCheck | None = cue_check

    @property
    def base(self) -> str:
        return self.config.languages[0]

    @property
    def layer(self) -> int:
        return self.direction.layer if self.config.layer is None else self.config.layer

    def check(self) -> None:
        if not self.seeds:
            raise RefusalLensError("No seed prompts; give at least one request to start from.")
        self.direction.check(self.model)
        if len(self.config.languages) > 1 and self.translator is None:
            raise RefusalLensError(
                f"languages {self.config.languages} need a translator: pass translator= (e.g. "
                "refusal_lens.boundary.translate.model_translator(model)) or use one language."
            )

    def translate(self, texts: list[str], language: str, source: str) -> list[str]:
        """``texts`` (in ``source``) translated into ``language``, checked and counted: an
        empty translation keeps its source text."""
        assert self.translator is not None
        out = check_translations(self.translator(texts, language), texts, language)
        row = self.translations.setdefault(
            f"{source}->{language}", {"texts": 0, "empty": 0, "unchanged": 0}
        )
        pairs = list(zip(out, texts, strict=True))
        row["texts"] += len(pairs)
        row["empty"] += sum(not t.strip() for t, _ in pairs)
        row["unchanged"] += sum(t.strip().lower() == x.strip().lower() for t, x in pairs)
        return [t.strip() or x for t, x in pairs]

    def translation_warnings(self) -> list[str]:
        return [
            f"{key}: {row['empty']} of {row['texts']} translations were empty (the source text "
            f"was kept) and {row['unchanged']} came back unchanged; check the translator."
            for key, row in self.translations.items()
            if row["empty"] or row["unchanged"]
        ]

    def boundary(self, language: str) -> LayerBoundary:
        """The selection layer's boundary, fitted on the reference sets in ``language``."""
        harmful, harmless = self.reference
        if language != self.base:
            harmful, harmless = (
                PromptSet.from_texts(
                    self.translate(p.texts, language, self.base), p.prompts[0].label
                )
                for p in self.reference
            )
        geo = GeometryConfig(batch_size=self.config.batch_size, seed=self.config.seed)
        return layer_boundary(self.model, harmful, harmless, self.layer, self.direction, geo)

    def candidates(self, language: str) -> list[Candidate]:
        """Generate, screen and select the candidates of one language."""
        config, base = self.config, self.base
        seeds = self.seeds if language == base else self.translate(self.seeds, language, base)
        found = steered_candidates(self.model, seeds, self.direction, config, language)
        if self.lexicon and self.benign_contexts and language == base:
            found += recombined_candidates(self.lexicon, self.benign_contexts, config, language)
        screen_candidates(found, seeds, config)
        boundary = self.boundary(language)

        def to_english(texts: list[str]) -> list[str]:
            return self.translate(texts, base, language)

        english = None if language == base else to_english
        select_near_boundary(
            self.model, found, boundary, self.harm, config, english, self.harm_check
        )
        return found


def rass(
    model: ModelHandle,
    seeds: PromptSet | list[str],
    direction: Direction,
    reference: tuple[PromptSet, PromptSet],
    harm: HarmScorer | HarmFn,
    config: RASSConfig | None = None,
    *,
    lexicon: Sequence[LexiconEntry] | None = None,
    benign_contexts: Sequence[str] = (),
    translator: Translator | None = None,
    harm_check: HarmCheck | None = cue_check,
) -> RASSResult:
    """Generate around the boundary from ``seeds``, screen, and select per language.

    ``reference`` = (harmful, harmless) prompts that define the boundary. ``harm`` is a
    :class:`HarmScorer` (e.g. ``harm_scorer(judge, model)``) or a bare function of English
    texts to p(harmful), then with threshold 0.5. ``lexicon`` (a trigger lexicon) with
    ``benign_contexts`` adds recombined candidates. ``translator(texts, language)`` is needed
    for more than one language: it translates seeds, reference sets and contexts into each
    language and the candidates back into English for the scorer. ``harm_check`` re-checks
    the candidates the scorer passed (None: no re-check).
    """
    config = config or RASSConfig()
    run = RASSRun(
        model,
        list(getattr(seeds, "texts", seeds)),
        direction,
        reference,
        as_harm_scorer(harm),
        config,
        lexicon,
        list(benign_contexts),
        translator,
        harm_check=harm_check,
    )
    run.check()
    candidates = [c for language in config.languages for c in run.candidates(language)]
    warnings = collapse_report(candidates, config.collapse_share) + run.translation_warnings()
    warnings += harm_check_warnings(candidates)
    for w in warnings:
        log.warning(w)
    result = RASSResult(
        candidates,
        config,
        model.model_id,
        direction.metadata(),
        run.harm.describe(),
        warnings,
        run.translations,
        describe_check(harm_check),
    )
    if not result.selected:
        raise RefusalLensError(
            f"RASS selected nothing: {json.dumps(result.summary()['groups'])}. "
            f"{closest_outside(candidates, config)}Widen the band, add seeds or contexts, use "
            "smaller steering coefficients or check the harm scorer's threshold "
            f"({run.harm.threshold:g}) and the harm check."
        )
    seed_scores(model, candidates, config.batch_size)
    return result


def closest_outside(candidates: list[Candidate], config: RASSConfig, shown: int = 3) -> str:
    """The candidates outside the band nearest to it, and the band that would take them in."""
    outside = [c for c in candidates if c.reason.startswith("outside the band")]
    if not outside:
        return ""
    lo, hi = config.band_range or (-config.band, config.band)
    gap = lambda c: max(lo - c.scores["margin"], c.scores["margin"] - hi)  # noqa: E731
    near = sorted(outside, key=gap)[:shown]
    reach = (
        min(lo, *(c.scores["margin"] for c in near)),
        max(hi, *(c.scores["margin"] for c in near)),
    )
    texts = "; ".join(f"{c.text!r} (margin {c.scores['margin']:+.2f})" for c in near)
    return (
        f"Nearest outside the band [{lo:+.2f}, {hi:+.2f}]: {texts}; the band "
        f"[{reach[0]:+.2f}, {reach[1]:+.2f}] would take them in (band_range). "
    )


def harm_check_warnings(candidates: list[Candidate], shown: int = 5) -> list[str]:
    """One warning when the re-check dropped candidates the harm scorer called benign (the
    scorer missed them), with the first ``shown``."""
    dropped = [c for c in candidates if c.reason.startswith(HARM_CHECK_REASON)]
    if not dropped:
        return []
    texts = "; ".join(f"{c.text!r} ({c.reason})" for c in dropped[:shown])
    more = f"; and {len(dropped) - shown} more" if len(dropped) > shown else ""
    return [
        f"The harm check dropped {len(dropped)} candidate(s) inside the band that the harm "
        f"scorer judged benign: {texts}{more}."
    ]
