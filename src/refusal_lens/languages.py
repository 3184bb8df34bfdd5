"""The language an answer is written in, for the judges that read text.

A maintained detector (py3langid, a naive Bayes model over byte n-grams) restricted to the
languages the toolkit has refusal phrases for. A text it cannot place with confidence (empty,
code, numbers, a few words) is :data:`UNKNOWN`, never an error.

>>> detect_language("Извините, я не могу помочь с этим.")
'ru'
>>> detect_language("12345")
'unknown'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

UNKNOWN = "unknown"
# The languages told apart: English and PolyRefuse's six.
DETECTED: tuple[str, ...] = ("en", "de", "es", "fr", "ja", "ru", "zh")
# Below this normalised probability the language is UNKNOWN. On the 560 answers of
# experiments/languages.py, 544 are placed above 0.99 and 4 below 0.5: a "1. 1. 1." loop, a
# password string and two lists of names; one-word or mixed answers fall between.
MIN_CONFIDENCE = 0.5
_SPECIAL = re.compile(r"<\|[^|>]{0,40}\|>|</?s>|<unk>|<pad>")


@functools.lru_cache(maxsize=4)
def _identifier(languages: tuple[str, ...]):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(languages))
    return identifier


def language_scores(text: str, languages: Sequence[str] = DETECTED) -> tuple[str, float]:
    """The most likely language of ``text`` among ``languages`` and its probability."""
    code, p = _identifier(tuple(languages)).classify(_SPECIAL.sub(" ", text))
    return str(code), float(p)


def detect_language(
    text: str, languages: Sequence[str] = DETECTED, min_confidence: float = MIN_CONFIDENCE
) -> str:
    """The ISO 639-1 code of ``text``'s language among ``languages``, or :data:`UNKNOWN` when
    the text has no letters or the detector's probability is below ``min_confidence``."""
    if not any(c.isalpha() for c in text):
        return UNKNOWN
    code, p = language_scores(text, languages)
    return code if p >= min_confidence else UNKNOWN


__all__ = ["DETECTED", "MIN_CONFIDENCE", "UNKNOWN", "detect_language", "language_scores"]
