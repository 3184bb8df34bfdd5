"""Translation hooks for multilingual RASS: ``translator(texts, language) -> texts``.

``model_translator(model)`` asks a chat model (greedy, one request per text, batched) with
:data:`PROMPT` and keeps the first line of its answer, cleaned of a language label and quotes
(:func:`clean_translation`); an empty answer stays empty. The model can be the studied model
or a stronger local one (``refusal-lens rass --translator qwen2.5-coder-0.5b``); any callable
with the same signature (a dictionary, a human-made table) can be passed instead.

What RASS does with the answers (:func:`check_translations`): a translator that returns
anything but a list of strings, one per text, is an error; an empty translation is replaced
by its source text, and empty and unchanged translations are counted per direction
(``en->fr``, ``fr->en``) in the run's summary (``RASSResult.translations``) and warned about.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from refusal_lens.errors import RefusalLensError
from refusal_lens.generation import generate
from refusal_lens.models import ModelHandle

LANGUAGES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "zh": "Chinese",
    "ja": "Japanese",
    "ru": "Russian",
}
PROMPT = (
    "Translate this text into {language}. Output only the {language} translation.\n\n"
    "Text: {text}\n{language}:"
)  # the "Text:"/"{language}:" frame keeps a 0.5B model translating instead of answering
QUOTES = "\"'`“”‘’«»„"


def clean_translation(answer: str, language: str) -> str:
    """The first non-empty line of ``answer`` without a leading ``{language}:`` or
    ``Translation:`` label and surrounding quotes; "" when there is none."""
    label = re.compile(rf"^(?:{re.escape(language)}|translation)\s*(?:translation)?\s*:\s*", re.I)
    for line in answer.splitlines():
        line = label.sub("", line.replace("**", "").strip(), count=1).strip(QUOTES + " ")
        if line:
            return line
    return ""


def model_translator(
    model: ModelHandle, max_new_tokens: int = 96, batch_size: int = 16
) -> Callable[[list[str], str], list[str]]:
    """A translator that prompts ``model`` (its chat template, greedy decoding) with
    :data:`PROMPT` and keeps the cleaned first line of each answer ("" when the model wrote
    nothing: RASS counts it and keeps the source text)."""

    def translate(texts: list[str], language: str) -> list[str]:
        if not texts:
            return []
        name = LANGUAGES.get(language, language)
        prompts = [PROMPT.format(language=name, text=t.strip()) for t in texts]
        out = generate(model, prompts, max_new_tokens, batch_size, show_progress=False)
        return [clean_translation(o, name) for o in out]

    return translate


def check_translations(out: object, texts: list[str], language: str) -> list[str]:
    """``out``, a translator's answer to ``texts``, checked: a list (or tuple) of strings,
    one per text; raises :class:`RefusalLensError` otherwise."""
    if not isinstance(out, list | tuple):
        raise RefusalLensError(
            f"The translator returned {type(out).__name__} for {len(texts)} texts into "
            f"{language!r}; it must return a list with one translation per text, in order."
        )
    if len(out) != len(texts):
        raise RefusalLensError(
            f"The translator returned {len(out)} translations for {len(texts)} texts into "
            f"{language!r}; it must return exactly one per text, in order (translator(texts, "
            "language) -> list[str])."
        )
    for k, t in enumerate(out):
        if not isinstance(t, str):
            raise RefusalLensError(
                f"The translator returned {t!r} for text {k} into {language!r} "
                f"({texts[k][:60]!r}); each translation must be a string."
            )
    return list(out)
