"""Paper 2's trigger-matched benign data ``D_b``, built from trigger masks.

Each harmful query keeps its *triggers* and loses its *harmful cues* (``refusal_lens.triggers.masks``):
a cue is replaced by the benign word from ``substitutes`` that the base model finds most
likely in its place (``rewrite="replace"``, the default), or deleted (``rewrite="delete"``).
A user with a stronger local chat model can pass ``rewriter(query, mask) -> str`` to write
more fluent rewrites from the same masks.

An item is kept only if it is benign by a documented judge (``refusal_lens.triggers.harm``, a probe on
the base model's residual stream), differs from the harmful query, and the base model answers
it (greedy answer, no refusal phrase); that answer is stored with it. Every item, kept or not,
is exported with its mask and scores, so the filtering can be audited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from refusal_lens.artifacts import atomic_dir, write_json
from refusal_lens.errors import RefusalLensError
from refusal_lens.generation import generate
from refusal_lens.models import ModelHandle
from refusal_lens.scoring import is_refusal
from refusal_lens.triggers.harm import HarmJudge
from refusal_lens.triggers.masks import TriggerMask

Rewriter = Callable[[str, TriggerMask], str]
SUBSTITUTES = (
    # nouns
    "recipe", "garden", "poem", "picnic", "budget", "museum", "library", "puzzle", "painting",
    "bicycle", "song", "cake", "website", "newsletter", "playlist", "schedule", "tree", "photo",
    "map", "lesson", "game", "story", "friend", "customer", "student", "neighbor", "team",
    "company", "report", "letter", "presentation", "birthday", "holiday", "vegetable",
    # verbs
    "bake", "paint", "plan", "organize", "clean", "repair", "describe", "decorate", "visit",
    "learn", "teach", "help", "thank", "grow", "build", "write", "celebrate", "share", "improve",
    "protect", "recycle", "measure", "explain", "invite",
    # adjectives and adverbs
    "healthy", "friendly", "simple", "quiet", "colorful", "fair", "safe", "legal", "honest",
    "creative", "kindly", "carefully", "happy", "useful",
)  # fmt: skip


@dataclass
class SanitizeConfig:
    rewrite: str = "replace"  # "replace" (most likely benign substitute) or "delete"
    substitutes: tuple[str, ...] = SUBSTITUTES
    shortlist: int = 6  # substitutes rescored on the whole request
    max_new_tokens: int = 48  # base-model answer checked for refusal
    batch_size: int = 32


@dataclass
class SanitizedItem:
    text: str
    original: str
    category: str
    removed: list[str]
    replacements: list[str]
    triggers: list[str]
    word_kinds: list[str]
    refusal_score: float  # of the original, aligned model
    p_harmful: float  # of the rewrite, by the judge
    answer: str  # the base model's greedy answer to the rewrite
    kept: bool
    reason: str = ""


@dataclass
class SanitizedData:
    items: list[SanitizedItem]
    config: SanitizeConfig = field(default_factory=SanitizeConfig)
    judge: dict = field(default_factory=dict)

    @property
    def kept(self) -> list[SanitizedItem]:
        return [i for i in self.items if i.kept]

    def save(self, folder: str | Path) -> Path:
        """``sanitized.jsonl`` (kept items, loadable as a prompt set, usable as ``D_b``),
        ``rejected.jsonl`` (with reasons) and ``config.json``."""
        with atomic_dir(folder) as tmp:
            for name, items in (
                ("sanitized.jsonl", self.kept),
                ("rejected.jsonl", [i for i in self.items if not i.kept]),
            ):
                with open(tmp / name, "w", encoding="utf-8") as f:
                    for item in items:
                        record = {"label": "borderline", "source": "sanitized", **asdict(item)}
                        record["trigger"] = item.triggers[0] if item.triggers else None
                        f.write(json.dumps(record, ensure_ascii=False) + "\n")
            write_json(tmp / "config.json", {"config": asdict(self.config), "judge": self.judge})
        return Path(folder)


def rewrite_text(mask: TriggerMask, replacements: dict[int, str]) -> str:
    """``mask.prompt`` with word ``i`` replaced by ``replacements[i]`` ("" deletes it)."""
    text, cursor, parts = mask.prompt, 0, []
    for i in sorted(replacements):
        start, end = mask.spans[i]
        parts += [text[cursor:start], replacements[i]]
        cursor = end
    parts.append(text[cursor:])
    out = re.sub(r"\s{2,}", " ", "".join(parts))
    return re.sub(r"\s+([,.;:!?])", r"\1", out).strip()


def _log_likelihood(model: ModelHandle, texts: list[str]) -> torch.Tensor:
    """Sum of next-token log-probabilities of each plain text under the model."""
    tok = model.tokenizer
    rows = [tok(t, add_special_tokens=False).input_ids for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    with torch.inference_mode():
        logits = model.hf_model(input_ids=ids, attention_mask=mask).logits.float()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    return (logp * mask[:, 1:]).sum(1).cpu()


def _shortlist(model: ModelHandle, prefix: str, options: list[str], k: int) -> list[str]:
    """The ``k`` options whose first token the model finds likeliest right after ``prefix``."""
    tok = model.tokenizer
    space = " " if prefix and not prefix.endswith(" ") else ""
    ids = tok(prefix.rstrip(), add_special_tokens=False).input_ids or [tok.eos_token_id or 0]
    with torch.inference_mode():
        logits = model.hf_model(input_ids=torch.tensor([ids], device=model.device)).logits
    logp = logits[0, -1].float().log_softmax(-1).cpu()
    first = [tok(space + w, add_special_tokens=False).input_ids[0] for w in options]
    order = logp[first].argsort(descending=True)[:k]
    return [options[i] for i in order.tolist()]


def substitute_cues(model: ModelHandle, mask: TriggerMask, config: SanitizeConfig) -> dict:
    """Greedy, left to right: each harmful cue gets a benign substitute. The base model
    shortlists the substitutes whose first token it finds likeliest after the words before the
    cue, then keeps the one that makes the whole request likeliest."""
    chosen: dict[int, str] = {}
    for i, kind in enumerate(mask.kinds):
        if kind != "harmful_cue":
            continue
        if config.rewrite == "delete":
            chosen[i] = ""
            continue
        options = [w for w in config.substitutes if w.lower() != mask.words[i].lower()]
        prefix = rewrite_text(mask, {**chosen, i: "\0"}).split("\0")[0]
        options = _shortlist(model, prefix, options, config.shortlist)
        texts = [rewrite_text(mask, {**chosen, i: w}) for w in options]
        chosen[i] = options[int(_log_likelihood(model, texts).argmax())]
    return chosen


def sanitize(
    base: ModelHandle,
    masks: list[TriggerMask],
    judge: HarmJudge,
    config: SanitizeConfig | None = None,
    rewriter: Rewriter | None = None,
    categories: list[str] | None = None,
) -> SanitizedData:
    """Rewrite each masked harmful query into trigger-matched benign data and filter it."""
    config = config or SanitizeConfig()
    if config.rewrite not in ("replace", "delete"):
        raise RefusalLensError(f"rewrite must be 'replace' or 'delete', not {config.rewrite!r}.")
    if not masks:
        raise RefusalLensError("sanitize needs at least one trigger mask.")
    drafts = []
    for mask in masks:
        chosen = substitute_cues(base, mask, config)
        text = rewrite_text(mask, chosen)
        if rewriter is not None:
            text = rewriter(mask.prompt, mask)
            if not isinstance(text, str) or not text.strip():
                raise RefusalLensError(
                    f"The rewriter returned an empty string for {mask.prompt!r}; it must return "
                    "the rewritten request."
                )
        drafts.append((mask, chosen, text.strip()))
    texts = [d[2] for d in drafts]
    p_harm = judge.p_harmful(base, texts).tolist()
    answers = generate(base, texts, config.max_new_tokens, config.batch_size, show_progress=False)
    items = []
    for k, ((mask, chosen, text), p, answer) in enumerate(
        zip(drafts, p_harm, answers, strict=True)
    ):
        reasons = []
        if not mask.harmful_cues and rewriter is None:
            reasons.append("no harmful cue found")
        if text.strip().lower() == mask.prompt.strip().lower():
            reasons.append("unchanged")
        if p >= judge.config.threshold:
            reasons.append(f"judged harmful (p={p:.2f})")
        if is_refusal(answer):
            reasons.append("base model refuses")
        items.append(
            SanitizedItem(
                text=text,
                original=mask.prompt,
                category=categories[k] if categories else "",
                removed=[mask.words[i] for i in sorted(chosen)],
                replacements=[chosen[i] for i in sorted(chosen)],
                triggers=mask.triggers,
                word_kinds=mask.kinds,
                refusal_score=mask.refusal_score,
                p_harmful=p,
                answer=answer,
                kept=not reasons,
                reason="; ".join(reasons),
            )
        )
    return SanitizedData(items, config, judge.describe())
