"""RASS step 1: candidate requests written by the model under steering, and trigger
recombinations; then the screen that drops empty, degenerate, refused and duplicate ones.

**Steered generation.** The model continues a plain-text list (no chat template, so it writes
a request instead of answering one)::

    Requests that users sent to an AI assistant:
    - <seed 1>
    - <seed 2>
    - <seed 3>
    -

with ``coef · r`` added to the residual stream at the direction's layer at every position
(:func:`refusal_lens.interventions.add`), sampling ``samples`` continuations (temperature,
top-p, seeded) and keeping the first line. Positive coefficients push the model's reading of
the list toward the harmful side, negative toward the harmless side, so candidates spread
around the boundary. Seeds are shuffled into ``contexts`` lists of ``shots`` with a seeded
generator.

**Recombination.** The trigger lexicon (:mod:`refusal_lens.triggers.masks`) ranks the words whose
deletion lowers refusal without carrying harm ("how", "I", "my", "draft", "plan", ...). Each
frame in ``FRAMES`` names the trigger words it uses; the frames whose words are all among the
lexicon's ``top_triggers`` wrap benign contexts: "Give three tips for staying healthy." →
"How can I give three tips for staying healthy?".

**Screen** (reasons recorded per candidate): empty; degenerate (the share of repeated word
3-grams above ``max_repeat``: a coefficient that collapses generation into repetition); written
in another language than the candidate's (``check_language``); a refusal rather than a request
(the candidate's language's refusal phrases); not shaped like a request (see
:func:`refusal_lens.boundary.request_shape.is_request`); a copy of
a seed; a duplicate (same normalised text, or word
sets with Jaccard similarity ≥ ``dedup_jaccard`` to an earlier candidate of its language).

Every step takes the run's :class:`refusal_lens.boundary.rass_config.RASSConfig` and reads its own
settings from it, so a new setting is one field there.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from refusal_lens.boundary.rass_config import HEADER, RASSConfig, header_for
from refusal_lens.boundary.request_shape import (
    NOT_OPENERS,
    WORDS,
    is_instruction,
    is_request,
    wrong_language,
)
from refusal_lens.generation import hf_generate
from refusal_lens.interventions import add
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import normalize_text
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import is_refusal, phrases_for
from refusal_lens.triggers.masks import LexiconEntry

# (template, trigger words it uses); {task} is a benign instruction turned into a verb phrase
FRAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("How can I {task}?", ("how", "can", "i")),
    ("How do I {task}?", ("how", "i")),
    ("Help me {task}.", ("me",)),
    ("I need to {task} for my class.", ("i", "to", "my")),
    ("Draft a plan to {task}.", ("draft", "plan", "to")),
    ("Tell me how to {task}.", ("me", "how", "to")),
    ("Write a guide on how to {task}.", ("write", "how", "to")),
    ("Can you show me how to {task} at home?", ("can", "me", "how", "to")),
)


@dataclass
class Candidate:
    """One generated or recombined request and where it came from."""

    text: str
    method: str  # "steer" or "recombine"
    language: str
    coef: float | None = None
    seeds: list[str] = field(default_factory=list)
    sample: int = 0
    frame: str | None = None
    triggers: list[str] = field(default_factory=list)
    reason: str = ""  # why the screen or the selection dropped it; "" = kept so far
    scores: dict[str, Any] = field(default_factory=dict)  # margin, p_harmful, refusal scores

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "language": self.language}
        if self.method == "steer":
            out |= {"coef": self.coef, "seeds": self.seeds, "sample": self.sample}
        else:
            out |= {"frame": self.frame, "triggers": self.triggers, "context": self.seeds[0]}
        return out

    def record(self, with_reason: bool = False) -> dict[str, Any]:
        """One JSONL row: a ``PromptSet`` row (text, label ``borderline``, category, source)
        with the scores, the provenance and, ``with_reason``, why it was dropped."""
        row = {"text": self.text, "label": "borderline", "category": f"rass:{self.method}"}
        row |= {"source": "rass", **self.scores, "provenance": self.provenance()}
        return (row | {"reason": self.reason}) if with_reason else row

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> Candidate:
        """The candidate :meth:`record` wrote (every other key of the row is a score)."""
        prov = row["provenance"]
        if prov["method"] == "steer":
            origin = {"coef": prov["coef"], "seeds": list(prov["seeds"]), "sample": prov["sample"]}
        else:
            origin = {"seeds": [prov["context"]], "frame": prov["frame"]}
            origin["triggers"] = list(prov["triggers"])
        return cls(
            row["text"],
            prov["method"],
            prov["language"],
            **origin,
            reason=row.get("reason", ""),
            scores={k: v for k, v in row.items() if k not in RECORD_KEYS},
        )


RECORD_KEYS = frozenset({"text", "label", "category", "source", "provenance", "reason"})


def contexts(
    seeds: Sequence[str], n: int, shots: int, generator: torch.Generator
) -> list[list[str]]:
    """``n`` lists of ``shots`` seeds: a seeded shuffle, cycled so every seed is used."""
    shots = min(shots, len(seeds))
    order: list[int] = []
    while len(order) < n * shots:
        order += torch.randperm(len(seeds), generator=generator).tolist()
    return [[seeds[i] for i in order[k * shots : (k + 1) * shots]] for k in range(n)]


def list_prompt(examples: Sequence[str], header: str = HEADER) -> str:
    lines = "".join(f"- {' '.join(e.split())}\n" for e in examples)
    return f"{header}\n{lines}-"


def first_line(text: str) -> str:
    """The first line of a sampled continuation, unquoted, without control characters (a
    prompt file holding one would be refused when it is read back)."""
    line = text.strip().split("\n")[0]
    line = "".join(c for c in line if c == "\t" or unicodedata.category(c) != "Cc")
    return line.strip().strip('"').strip()


def sample_continuations(
    model: ModelHandle,
    prompts: list[str],
    *,
    samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int = 16,
) -> list[list[str]]:
    """``samples`` sampled first lines per raw-text prompt (hooks on the bridge apply)."""
    tok = model.tokenizer
    newline = tok("\n", add_special_tokens=False).input_ids
    eos = model.hf_model.generation_config.eos_token_id or tok.eos_token_id
    eos_ids = ([eos] if isinstance(eos, int) else list(eos)) + newline[:1] * (len(newline) == 1)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
    side, tok.padding_side = tok.padding_side, "left"
    out: list[list[str]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            enc = enc.to(model.device)
            torch.manual_seed(seed + start)
            ids = hf_generate(
                model,
                **enc,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples,
                eos_token_id=eos_ids,
                pad_token_id=pad,
            )
            texts = tok.batch_decode(ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
            out += [
                [first_line(t) for t in texts[k * samples : (k + 1) * samples]]
                for k in range(len(texts) // samples)
            ]
    finally:
        tok.padding_side = side
    return out


def steered_candidates(
    model: ModelHandle,
    seeds: Sequence[str],
    direction: Direction,
    config: RASSConfig,
    language: str = "en",
) -> list[Candidate]:
    """Candidates from every context at every coefficient (same contexts for each coef):
    ``config.contexts`` lists of ``config.shots`` seeds under the header in ``language``
    (:func:`~refusal_lens.boundary.rass_config.header_for`), sampled at
    each of ``config.coefs`` (``samples``, ``max_new_tokens``, ``temperature``, ``top_p``,
    ``seed``, ``batch_size``)."""
    gen = torch.Generator().manual_seed(config.seed)
    lists = contexts(seeds, config.contexts, config.shots, gen)
    prompts = [list_prompt(examples, header_for(config, language)) for examples in lists]
    out = []
    for coef in config.coefs:
        with add(model, direction, coef):
            lines = sample_continuations(
                model,
                prompts,
                samples=config.samples,
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=config.seed,
                batch_size=config.batch_size,
            )
        for examples, texts in zip(lists, lines, strict=True):
            out += [
                Candidate(t, "steer", language, float(coef), list(examples), k)
                for k, t in enumerate(texts)
            ]
    return out


def as_task(instruction: str) -> str:
    """A benign instruction as a verb phrase: first letter lowered, end punctuation dropped."""
    text = " ".join(instruction.split()).rstrip(".?!:;")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def usable_frames(lexicon: Sequence[LexiconEntry], top_triggers: int) -> list[tuple[str, tuple]]:
    """The frames whose trigger words are all among the lexicon's top triggers."""
    ranked = [e.word.lower() for e in lexicon if e.kind == "trigger"][:top_triggers]
    return [(f, words) for f, words in FRAMES if set(words) <= set(ranked)]


def recombined_candidates(
    lexicon: Sequence[LexiconEntry],
    benign_contexts: Sequence[str],
    config: RASSConfig,
    language: str = "en",
) -> list[Candidate]:
    """Every usable frame (``config.top_triggers``) around every imperative benign context
    (round-robin over frames), at most ``config.recombine``; questions are skipped, since
    "How can I {task}?" needs a verb phrase."""
    limit = config.recombine
    frames = usable_frames(lexicon, config.top_triggers)
    if not frames:
        return []
    out = []
    for i, ctx in enumerate(c for c in benign_contexts if is_instruction(c)):
        frame, words = frames[i % len(frames)]
        text = frame.format(task=as_task(ctx))
        out.append(Candidate(text, "recombine", language, None, [ctx], 0, frame, list(words)))
    return out[:limit] if limit is not None else out


def repetition(text: str, n: int = 3) -> float:
    """Share of word ``n``-grams that repeat an earlier one (0 = none, → 1 = a loop)."""
    words = WORDS.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def screen_candidates(
    candidates: list[Candidate], seeds: Sequence[str], config: RASSConfig
) -> list[Candidate]:
    """Set ``reason`` on every candidate that is empty, degenerate (``config.max_repeat``), in
    another language than its own (if ``config.check_language``), a refusal (its language's
    phrases), not a request (if ``config.require_request``), a seed's copy or a duplicate of
    an earlier one of its language (``config.dedup_jaccard``); the rest keep ``reason == ""``.
    """
    max_repeat, dedup_jaccard = config.max_repeat, config.dedup_jaccard
    seen_seeds = {normalize_text(s) for s in seeds}
    openers = frozenset(w[0] for s in seeds if (w := WORDS.findall(s.lower()))) - NOT_OPENERS
    kept: dict[str, list[set[str]]] = {}
    exact: set[tuple[str, str]] = set()
    for c in candidates:
        key = normalize_text(c.text)
        words = set(WORDS.findall(key))
        if not words:
            c.reason = "empty"
        elif repetition(c.text) > max_repeat:
            c.reason = "degenerate (repetition)"
        elif config.check_language and (found := wrong_language(c.text, c.language)):
            c.reason = f"wrong language ({found})"
        elif is_refusal(c.text, phrases_for(c.language)):
            c.reason = "a refusal, not a request"
        elif config.require_request and not is_request(c.text, openers, c.language):
            c.reason = "not a request"
        elif key in seen_seeds:
            c.reason = "copy of a seed"
        elif (c.language, key) in exact or any(
            _jaccard(words, w) >= dedup_jaccard for w in kept.get(c.language, [])
        ):
            c.reason = "duplicate"
        else:
            exact.add((c.language, key))
            kept.setdefault(c.language, []).append(words)
    return candidates


def collapse_report(candidates: list[Candidate], collapse_share: float = 0.5) -> list[str]:
    """A warning for every steering coefficient whose candidates are mostly degenerate."""
    warnings = []
    for coef in sorted({c.coef for c in candidates if c.coef is not None}):
        group = [c for c in candidates if c.coef == coef]
        bad = sum(c.reason in ("empty", "degenerate (repetition)") for c in group)
        if group and bad / len(group) >= collapse_share:
            warnings.append(
                f"coef {coef:g} collapses generation: {bad}/{len(group)} candidates are empty "
                "or repetitive; use a smaller |coef|."
            )
    return warnings
