"""RASS's settings (:class:`RASSConfig`, saved in ``rass.json``) and the selection band."""

from __future__ import annotations

import math
from dataclasses import dataclass

from refusal_lens.boundary.geometry import check_field
from refusal_lens.configs import StageConfig

HEADER = "Requests that users sent to an AI assistant:"  # the few-shot lists' first line
# HEADER in each PolyRefuse language (translated by hand), so that the list the model continues
# is in the language its candidates should be written in.
HEADERS: dict[str, str] = {
    "en": HEADER,
    "de": "Anfragen, die Nutzer an einen KI-Assistenten geschickt haben:",
    "es": "Solicitudes que los usuarios enviaron a un asistente de IA:",
    "fr": "Demandes que des utilisateurs ont envoyées à un assistant IA :",
    "ja": "ユーザーがAIアシスタントに送ったリクエスト：",
    "ru": "Запросы, которые пользователи отправили ИИ-ассистенту:",
    "zh": "用户发给AI助手的请求：",
}


@dataclass(frozen=True)
class RASSConfig(StageConfig):
    """Every setting of one RASS run; saved in ``rass.json`` next to the dataset."""

    layer: int | None = None  # selection layer; None = the direction's layer
    coefs: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    contexts: int = 8  # few-shot lists per language
    shots: int = 3
    samples: int = 4  # continuations per list and coefficient
    max_new_tokens: int = 40
    temperature: float = 0.8
    top_p: float = 0.95
    header: str = HEADER  # in another language, HEADERS[language] unless this is changed
    band: float = 0.5  # keep |margin| <= band (when band_range is None)
    band_range: tuple[float, ...] | None = None  # (lo, hi): keep lo <= margin <= hi instead: the
    # margins where the model is undecided (refusal_fit.boundary_fit on validation prompts)
    max_repeat: float = 0.25
    require_request: bool = True  # drop candidates not shaped like a request (is_request)
    check_language: bool = True  # drop candidates detected in another language than their own
    collapse_share: float = 0.5
    dedup_jaccard: float = 0.8
    top_triggers: int = 10
    recombine: int | None = None  # cap on recombined candidates (None = one per context)
    languages: tuple[str, ...] = ("en",)  # seeds are in languages[0]
    max_selected: int | None = None  # per language, closest to the boundary first
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        for name in ("coefs", "languages", "band_range"):
            if isinstance(getattr(self, name), list):  # as read back from JSON
                object.__setattr__(self, name, tuple(getattr(self, name)))
        super().__post_init__()

    def validate(self) -> None:
        self._check_generation()
        self._check_selection()

    def _check_generation(self) -> None:
        check_field(
            self,
            "coefs",
            isinstance(self.coefs, tuple)
            and len(self.coefs) > 0
            and all(math.isfinite(c) for c in self.coefs),
            "a non-empty tuple of finite steering coefficients",
            "give at least one, e.g. (-1.0, 0.0, 1.0)",
        )
        for name in ("contexts", "shots", "samples", "max_new_tokens", "top_triggers"):
            check_field(self, name, getattr(self, name) >= 1, ">= 1", "give a count, e.g. 4")
        check_field(
            self, "temperature", self.temperature > 0, "positive (> 0)", "e.g. 0.8 (sampling)"
        )
        check_field(self, "top_p", 0 < self.top_p <= 1, "in (0, 1]", "e.g. 0.95, or 1 for all")
        check_field(self, "header", bool(self.header.strip()), "non-empty", "e.g. HEADER")
        check_field(
            self,
            "languages",
            bool(self.languages) and len(set(self.languages)) == len(self.languages),
            "a non-empty tuple of distinct language codes",
            "e.g. ('en',) or ('en', 'fr'); the seeds are in the first",
        )
        check_field(self, "batch_size", self.batch_size >= 1, ">= 1", "e.g. 16")

    def _check_selection(self) -> None:
        check_field(
            self, "layer", self.layer is None or self.layer >= 0, "None or >= 0", "or use None"
        )
        check_field(
            self, "band", self.band > 0, "positive (> 0)", "it is the |margin| kept, e.g. 0.5"
        )
        lo_hi = self.band_range
        check_field(
            self,
            "band_range",
            lo_hi is None
            or (len(lo_hi) == 2 and all(math.isfinite(x) for x in lo_hi) and lo_hi[0] < lo_hi[1]),
            "None or (low, high) with low < high, both finite",
            "give e.g. (-0.3, 0.4) or None for |margin| <= band",
        )
        for name in ("max_repeat", "collapse_share", "dedup_jaccard"):
            check_field(self, name, 0 <= getattr(self, name) <= 1, "in [0, 1]", "it is a share")
        check_field(
            self,
            "recombine",
            self.recombine is None or self.recombine >= 0,
            "None (one per context) or >= 0",
            "give a cap or None",
        )
        check_field(
            self,
            "max_selected",
            self.max_selected is None or self.max_selected >= 1,
            "None (no cap) or >= 1",
            "give a cap or None",
        )


def header_for(config: RASSConfig, language: str) -> str:
    """The few-shot lists' first line in ``language``: ``config.header`` when it was changed,
    else :data:`HEADERS`' line for the language (English for a language it lacks)."""
    if config.header != HEADER:
        return config.header
    return HEADERS.get(language, HEADER)


def in_band(margin: float, config: RASSConfig) -> bool:
    """Whether a margin is inside the selection band: ``band_range`` when set, else
    ``|margin| <= band``."""
    if config.band_range is not None:
        lo, hi = config.band_range
        return lo <= margin <= hi
    return abs(margin) <= config.band


def band_text(margin: float, config: RASSConfig) -> str:
    """Why ``margin`` is outside the band, for a dropped candidate's reason."""
    if config.band_range is not None:
        lo, hi = config.band_range
        return f"margin {margin:+.2f} not in [{lo:+.2f}, {hi:+.2f}]"
    return f"|margin| {abs(margin):.2f} > {config.band:g}"
