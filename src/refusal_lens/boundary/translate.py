"""Translation hooks for multilingual RASS: ``translator(texts, language) -> texts``.

``model_translator(model)`` asks the chat model itself (greedy, one request per text). Small
models translate poorly; any callable with the same signature (a larger local model, a
dictionary, a human-made table) can be passed instead.
"""

from __future__ import annotations

from collections.abc import Callable

from refusal_lens.boundary.candidates import first_line
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
PROMPT = "Translate the following text into {language}. Reply with the translation only.\n\n{text}"


def model_translator(
    model: ModelHandle, max_new_tokens: int = 96, batch_size: int = 16
) -> Callable[[list[str], str], list[str]]:
    """A translator that prompts ``model`` (its chat template, greedy decoding) and keeps the
    first line of the answer; an empty answer keeps the original text."""

    def translate(texts: list[str], language: str) -> list[str]:
        name = LANGUAGES.get(language, language)
        prompts = [PROMPT.format(language=name, text=t) for t in texts]
        out = generate(model, prompts, max_new_tokens, batch_size, show_progress=False)
        return [first_line(o) or t for o, t in zip(out, texts, strict=True)]

    return translate
