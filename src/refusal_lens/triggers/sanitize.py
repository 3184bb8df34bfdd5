"""Paper 2's trigger-matched benign data ``D_b``, built from trigger masks.

Each harmful query keeps its *triggers* and loses its *harmful cues*
(``refusal_lens.triggers.masks``): a cue is replaced by the benign word from ``substitutes``
that the base model finds most likely in its place (``rewrite="replace"``, the default), or
deleted (``rewrite="delete"``). A user with a stronger local chat model can pass
``rewriter(query, mask) -> str`` to write more fluent rewrites from the same masks (e.g.
:func:`refusal_lens.triggers.rewrite.model_rewriter`); then the rewriter alone writes the text
(``method="rewriter"``, ``removed`` = the harmful cues of the mask it was given,
``replacements`` empty). A rewriter with a batched form, ``rewriter.batch(queries, masks) ->
texts``, is called once for all masks instead of once per mask.

An item is kept only if it is benign by a documented judge (``refusal_lens.triggers.harm``, a
probe on the base model's residual stream), differs from the harmful query, is not itself a
refusal by the rewriter (a refusal phrase), and the base model answers it (greedy answer, no
refusal phrase); that answer is stored with it. The items that pass are then re-checked by a
second judge, ``harm_check`` (by default :data:`refusal_lens.triggers.harm.cue_check`, harm cue
words for phishing, malware, intrusion and credential theft): the probe alone, fitted as the run
fits it, calls such requests benign (``figures/harm_judge.md``). An item the re-check flags is
not kept (reason ``harm check (...)``) and is listed in :attr:`SanitizedData.dropped_by_harm_check`
(saved in ``sanitized.json``). Every item, kept or not, is exported with its mask and scores, so
the filtering can be audited:
:meth:`SanitizedData.save` writes ``sanitized.jsonl`` (kept items, a prompt set),
``rejected.jsonl`` and ``sanitized.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from refusal_lens.artifacts import (
    artifact_file,
    artifact_meta,
    json_writer,
    jsonl_writer,
    read_meta,
    save_artifact,
)
from refusal_lens.configs import StageConfig
from refusal_lens.errors import RefusalLensError
from refusal_lens.generation import generate
from refusal_lens.models import ModelHandle
from refusal_lens.scoring import is_refusal
from refusal_lens.triggers.harm import HarmJudge
from refusal_lens.triggers.harm_check import HarmCheck, cue_check, describe_check, run_check
from refusal_lens.triggers.masks import TriggerMask

KIND = "sanitized_data"
HARM_CHECK_REASON = "harm check"  # the reason prefix of an item the re-check dropped
KEPT_NAME = "sanitized.jsonl"  # kept items: a PromptSet (label "borderline"), usable as D_b
REJECTED_NAME = "rejected.jsonl"  # the other items, with their reasons
META_NAME = "sanitized.json"  # kind, format, config and the judge's description
METHODS = ("replace", "delete")
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


@dataclass(frozen=True)
class SanitizeConfig(StageConfig):
    """How :func:`sanitize` rewrites harmful cues and checks the base model's answer."""

    rewrite: str = "replace"  # "replace" (most likely benign substitute) or "delete"
    substitutes: tuple[str, ...] = SUBSTITUTES
    shortlist: int = 6  # substitutes rescored on the whole request
    max_new_tokens: int = 48  # base-model answer checked for refusal
    batch_size: int = 32

    def validate(self) -> None:
        if self.rewrite not in METHODS:
            raise RefusalLensError(
                f"SanitizeConfig.rewrite must be one of {METHODS}, not {self.rewrite!r}; pass a "
                "rewriter to sanitize() for other rewrites."
            )
        if not self.substitutes or not all(
            isinstance(w, str) and w.strip() for w in self.substitutes
        ):
            raise RefusalLensError(
                "SanitizeConfig.substitutes must be a non-empty tuple of non-empty words, not "
                f"{self.substitutes!r}; leave it out for the default SUBSTITUTES."
            )
        for name in ("shortlist", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise RefusalLensError(
                    f"SanitizeConfig.{name} must be an integer >= 1, not {value!r}; the "
                    f"default is {getattr(SanitizeConfig, name)}."
                )


@dataclass
class SanitizedItem:
    """One rewritten harmful query with the audit trail of how it was made and judged."""

    text: str
    original: str
    category: str
    method: str  # "replace", "delete" (substitute_cues) or "rewriter" (the user's rewriter)
    removed: list[str]  # harmful cues taken out (for "rewriter": the cues it was given)
    replacements: list[str]  # what each removed cue became ("" deleted; [] for "rewriter")
    triggers: list[str]
    word_kinds: list[str]
    refusal_score: float  # of the original, aligned model
    p_harmful: float  # of the rewrite, by the judge
    answer: str  # the base model's greedy answer to the rewrite
    kept: bool
    reason: str = ""


@dataclass
class SanitizedData:
    """The result of :func:`sanitize`: every item (kept or rejected), the config, the
    judge's :meth:`HarmJudge.describe` and the re-check's description (``harm_check``)."""

    items: list[SanitizedItem]
    config: SanitizeConfig = field(default_factory=SanitizeConfig)
    judge: dict[str, Any] = field(default_factory=dict)
    harm_check: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> list[SanitizedItem]:
        return [i for i in self.items if i.kept]

    @property
    def dropped_by_harm_check(self) -> list[dict[str, Any]]:
        """The items the probe passed and the re-check dropped: index, text, original,
        p(harmful) by the probe and the re-check's reason."""
        return [
            {
                "index": k,
                "text": i.text,
                "original": i.original,
                "p_harmful": i.p_harmful,
                "reason": i.reason,
            }
            for k, i in enumerate(self.items)
            if i.reason.startswith(HARM_CHECK_REASON)
        ]

    def save(self, folder: str | Path) -> Path:
        """Write ``sanitized.jsonl`` (kept items, loadable with ``PromptSet.load`` and usable
        as ``D_b``), ``rejected.jsonl`` (with reasons) and ``sanitized.json`` into ``folder``;
        other files there are kept. Each record carries its ``index`` in :attr:`items`."""
        records = [_record(k, item) for k, item in enumerate(self.items)]
        meta = artifact_meta(
            KIND,
            self.config,
            judge=self.judge,
            harm_check=self.harm_check,
            dropped_by_harm_check=self.dropped_by_harm_check,
        )
        return save_artifact(
            folder,
            {
                KEPT_NAME: jsonl_writer([r for r in records if r["kept"]]),
                REJECTED_NAME: jsonl_writer([r for r in records if not r["kept"]]),
                META_NAME: json_writer(meta),
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> SanitizedData:
        """Read data written by :meth:`save`: every item, kept and rejected, in order."""
        folder = Path(folder)
        meta = read_meta(folder, META_NAME, KIND)
        names = {f.name for f in fields(SanitizedItem)}
        rows = []
        for name in (KEPT_NAME, REJECTED_NAME):
            path = artifact_file(folder, name, META_NAME, "save the sanitized data again.")
            with open(path, encoding="utf-8") as f:
                rows += [json.loads(x) for x in f if x.strip()]
        rows.sort(key=lambda r: r["index"])
        items = [SanitizedItem(**{k: v for k, v in r.items() if k in names}) for r in rows]
        config = SanitizeConfig.from_dict(meta["config"])
        return cls(items, config, meta.get("judge", {}), meta.get("harm_check", {}))


def _record(index: int, item: SanitizedItem) -> dict[str, Any]:
    """An item as a prompt record (``label``, ``source``, ``trigger``) with its audit fields."""
    record = {"label": "borderline", "source": "sanitized", "index": index, **asdict(item)}
    record["trigger"] = item.triggers[0] if item.triggers else None
    return record


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
    harm_check: HarmCheck | None = cue_check,
) -> SanitizedData:
    """Rewrite each masked harmful query into trigger-matched benign data and filter it.

    Without ``rewriter``, :func:`substitute_cues` replaces (or deletes) each harmful cue; with
    one, ``rewriter(query, mask)`` alone writes the text and ``substitute_cues`` is not run.
    ``harm_check`` re-checks the items that pass every other filter (None: no re-check)."""
    config = config or SanitizeConfig()
    if not masks:
        raise RefusalLensError("sanitize needs at least one trigger mask.")
    if categories is not None and len(categories) != len(masks):
        raise RefusalLensError(
            f"sanitize got {len(categories)} categories for {len(masks)} masks; pass one "
            "category per mask or none."
        )
    rewrites = _rewrites(rewriter, masks) if rewriter is not None else [None] * len(masks)
    drafts = [_draft(base, mask, config, text) for mask, text in zip(masks, rewrites, strict=True)]
    texts = [d.text for d in drafts]
    p_harm = judge.p_harmful(base, texts).tolist()
    answers = generate(base, texts, config.max_new_tokens, config.batch_size, show_progress=False)
    items = []
    for k, (draft, p, answer) in enumerate(zip(drafts, p_harm, answers, strict=True)):
        draft.category = categories[k] if categories else ""
        draft.p_harmful, draft.answer = p, answer
        draft.reason = "; ".join(_reasons(draft, masks[k], judge.config.threshold))
        draft.kept = not draft.reason
        items.append(draft)
    if harm_check is not None:
        recheck(items, harm_check)
    return SanitizedData(items, config, judge.describe(), describe_check(harm_check))


def recheck(items: list[SanitizedItem], harm_check: HarmCheck) -> None:
    """Run ``harm_check`` on the kept items; one it flags is not kept (in place), its reason
    ``harm check (...)``."""
    kept = [i for i in items if i.kept]
    for item, why in zip(kept, run_check(harm_check, [i.text for i in kept]), strict=True):
        if why is not None:
            item.kept, item.reason = False, f"{HARM_CHECK_REASON} ({why})"


def _rewrites(rewriter: Rewriter, masks: list[TriggerMask]) -> list[str]:
    """The rewriter's text for each mask, checked: one call of ``rewriter.batch(queries,
    masks)`` when it has that batched form, else one call of ``rewriter(query, mask)`` each."""
    queries = [m.prompt for m in masks]
    batch = getattr(rewriter, "batch", None)
    if callable(batch):
        texts = batch(queries, masks)
        if not isinstance(texts, list | tuple) or len(texts) != len(masks):
            got = f"{len(texts)} rewrites" if isinstance(texts, list | tuple) else repr(texts)
            raise RefusalLensError(
                f"rewriter.batch returned {got} for {len(masks)} queries; it must return a "
                "list with one rewritten request per query, in order."
            )
    else:
        texts = [rewriter(q, m) for q, m in zip(queries, masks, strict=True)]
    for k, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise RefusalLensError(
                f"The rewriter returned an empty string (or no string: {text!r}) for query {k} "
                f"({queries[k]!r}); it must return the rewritten request. Fix the rewriter "
                "(e.g. more max_new_tokens), drop that mask, or leave rewriter out to replace "
                "the harmful cues word by word."
            )
    return list(texts)


def _draft(
    base: ModelHandle, mask: TriggerMask, config: SanitizeConfig, rewrite: str | None
) -> SanitizedItem:
    """The rewrite of one query and its audit trail, before judging (not kept yet):
    ``rewrite`` is the rewriter's text, or None to substitute the cues."""
    if rewrite is None:
        chosen = substitute_cues(base, mask, config)
        text = rewrite_text(mask, chosen)
        method, removed = config.rewrite, [mask.words[i] for i in sorted(chosen)]
        replacements = [chosen[i] for i in sorted(chosen)]
    else:
        text, method, removed, replacements = rewrite, "rewriter", mask.harmful_cues, []
    return SanitizedItem(
        text=text.strip(),
        original=mask.prompt,
        category="",
        method=method,
        removed=removed,
        replacements=replacements,
        triggers=mask.triggers,
        word_kinds=mask.kinds,
        refusal_score=mask.refusal_score,
        p_harmful=float("nan"),
        answer="",
        kept=False,
    )


def _reasons(item: SanitizedItem, mask: TriggerMask, threshold: float) -> list[str]:
    """Why ``item`` is rejected (empty: kept)."""
    reasons = []
    if not mask.harmful_cues and item.method != "rewriter":
        reasons.append("no harmful cue found")
    if item.text.lower() == mask.prompt.strip().lower():
        reasons.append("unchanged")
    if item.method == "rewriter" and is_refusal(item.text):
        reasons.append("the rewriter refused")
    if item.p_harmful >= threshold:
        reasons.append(f"judged harmful (p={item.p_harmful:.2f})")
    if is_refusal(item.answer):
        reasons.append("base model refuses")
    return reasons
