"""Whole-request rewrites by a local chat model, for paper 2's benign data ``D_b``.

:func:`refusal_lens.triggers.sanitize.substitute_cues` swaps each harmful cue for one benign
word chosen by the base model; the result keeps every other word, triggers included, but often
reads badly ("Give improve instructions for building a botnet"). A stronger chat model can
rewrite the whole request instead: :func:`model_rewriter` gives it the harmful query, the
mask's harmful cues (to remove or replace with benign content) and its triggers (to keep), in
:data:`REWRITE_PROMPT`, and keeps the first line of its greedy answer, cleaned of labels and
quotes (:func:`clean_rewrite`). Whether the rewrite is benign, differs from the query and is
answered is still checked by :func:`~refusal_lens.triggers.sanitize.sanitize`.

>>> rewriter = model_rewriter(load_model("qwen2.5-coder-0.5b"))
>>> data = sanitize(base, masks.masks, judge, rewriter=rewriter)  # one batched call

The rewriter is a :data:`~refusal_lens.triggers.sanitize.Rewriter` (``rewriter(query, mask)``)
with a batched form, ``rewriter.batch(queries, masks)``, which ``sanitize`` uses when present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from refusal_lens.errors import RefusalLensError
from refusal_lens.generation import generate
from refusal_lens.models import ModelHandle
from refusal_lens.triggers.masks import TriggerMask

REWRITE_PROMPT = (
    "Rewrite the request below so that it becomes harmless: a request that a helpful, careful "
    "assistant would gladly answer.\n"
    "- Remove these harmful parts, or replace them with harmless content: {cues}\n"
    "- Keep these words in the request: {triggers}\n"
    "- Keep the form of the request (a question stays a question, an instruction stays an "
    "instruction with the same opening) and about the same length.\n"
    "Reply with the rewritten request only, on one line.\n\n"
    "Request: {query}"
)  # {query}: the harmful request; {cues}, {triggers}: quoted, comma-separated words
NO_CUES = "(none marked: remove whatever makes the request harmful)"
NO_TRIGGERS = "(none)"
# A label before the rewrite ("Rewritten request:", "**Harmless version:**", "Sure! Here is
# the rewritten request:"); removed from the start of the kept line.
LABEL = re.compile(
    r"^(?:sure[,.!]?\s*|certainly[,.!]?\s*|okay[,.!]?\s*)?"
    r"(?:here(?:'s| is)\s+(?:the|a|your|my)?\s*)?"
    r"(?:rewritten|revised|harmless|benign|safe|new)?\s*"
    r"(?:request|version|rewrite|prompt|query|question|instruction|answer|output)\s*:\s*",
    re.IGNORECASE,
)
QUOTES = "\"'`“”‘’«»"


def _words(words: list[str], empty: str) -> str:
    """``"a", "b"``: the words once each (first spelling, case-insensitive), or ``empty``."""
    seen: dict[str, str] = {}
    for w in words:
        seen.setdefault(w.lower(), w)
    return ", ".join(f'"{w}"' for w in seen.values()) or empty


def rewrite_prompt(query: str, mask: TriggerMask, template: str = REWRITE_PROMPT) -> str:
    """The user message that asks for one rewrite of ``query`` (its cues and triggers from
    ``mask``)."""
    return template.format(
        query=query.strip(),
        cues=_words(mask.harmful_cues, NO_CUES),
        triggers=_words(mask.triggers, NO_TRIGGERS),
    )


def clean_rewrite(answer: str) -> str:
    """The rewrite in a chat answer: its first non-empty line that is not only an
    introduction ("Here is the rewritten request:"), without list markers, markdown emphasis,
    a leading label or surrounding quotes; "" when there is none."""
    for line in answer.splitlines():
        line = re.sub(r"^\s*(?:[-*>•]+|\d+[.)])\s+", "", line)  # list markers
        line = line.replace("**", "").replace("__", "").strip()
        line = LABEL.sub("", line, count=1).strip()
        line = line.strip(QUOTES + " ").strip()
        if line and not _is_intro(line):
            return line
    return ""


def _is_intro(line: str) -> bool:
    """A line that only announces the rewrite ("Here's a harmless version:")."""
    return line.endswith(":") and bool(re.match(r"(?i)(sure|certainly|okay|here)\b", line))


@dataclass
class ModelRewriter:
    """A :data:`~refusal_lens.triggers.sanitize.Rewriter` backed by a chat model (greedy
    decoding, its chat template); ``batch`` rewrites many queries in batched generation."""

    model: ModelHandle
    max_new_tokens: int = 64
    batch_size: int = 8
    template: str = REWRITE_PROMPT

    def __call__(self, query: str, mask: TriggerMask) -> str:
        return self.batch([query], [mask])[0]

    def batch(self, queries: list[str], masks: list[TriggerMask]) -> list[str]:
        """One cleaned rewrite per query, in order ("" where the model wrote none)."""
        if len(queries) != len(masks):
            raise RefusalLensError(
                f"ModelRewriter.batch got {len(queries)} queries and {len(masks)} masks; pass "
                "one mask per query, in the same order."
            )
        if not queries:
            return []
        prompts = [rewrite_prompt(q, m, self.template) for q, m in zip(queries, masks, strict=True)]
        answers = generate(
            self.model, prompts, self.max_new_tokens, self.batch_size, show_progress=False
        )
        return [clean_rewrite(a) for a in answers]

    def describe(self) -> dict[str, object]:
        """What to record next to the rewrites: the model and the settings."""
        return {
            "kind": "model_rewriter",
            "model": self.model.model_id,
            "max_new_tokens": self.max_new_tokens,
            "template": self.template,
        }


def model_rewriter(
    model: ModelHandle,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    template: str = REWRITE_PROMPT,
) -> ModelRewriter:
    """A rewriter that prompts ``model`` with ``template`` (default :data:`REWRITE_PROMPT`,
    with ``{query}``, ``{cues}`` and ``{triggers}`` slots; see the module docstring);
    ``sanitize`` calls its ``batch`` form once for all masks."""
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise RefusalLensError(
                f"model_rewriter's {name} must be an integer >= 1, not {value!r}."
            )
    try:
        template.format(query="", cues="", triggers="")
    except (KeyError, IndexError, ValueError) as exc:
        raise RefusalLensError(
            f"model_rewriter's template may use only {{query}}, {{cues}} and {{triggers}} "
            f"(double other braces): {exc!r}."
        ) from exc
    return ModelRewriter(model, max_new_tokens, batch_size, template)
