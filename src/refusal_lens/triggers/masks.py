"""Trigger masks: which words of a refused request drive the refusal, and which of those are
*harmful cues* and which are *non-harmful triggers* (paper 2, read off the models themselves).

The criterion, per word (a run of letters/digits, with inner ``-`` or ``'``), from two
deletion read-outs (``attribution.scores_without``; every token of the word deleted at once):

1. **Drive** ``d(w, q)``: the drop in the *aligned* model's refusal score (log-odds) when the
   word is deleted from request ``q``. The word drives the refusal when ``d ≥ drive_min``.
2. **Harm** ``h(w, q)``: the drop in the harm judge's logit (``refusal_lens.triggers.harm``: a
   probe on the *base* model's residual stream, which was never taught to refuse) when the word
   is deleted. The word carries the request's harm when ``h ≥ harm_min``.
3. A word that carries harm is a **harmful cue**, unless it is a function word or a
   request-frame word (``FRAME``: "write", "explain", "how", "my", …): deleting those breaks
   the request's grammar, which moves the probe without removing any harmful content. A word
   that drives the refusal without carrying harm is a **trigger**: the aligned model refuses
   on it, although it is not what makes the request harmful. Every other word is ``neutral``.

For the lexicon, every cue and trigger also gets a **carrier effect** ``c(w)``: the mean rise
in the aligned model's refusal score when the word is put into neutral benign carrier requests
("Give me three synonyms for '{w}'.", …) in place of filler words ("table", "garden", …).
Nothing in a carrier asks for harm, so a positive ``c`` is the word alone pulling the model
towards refusal: the over-refusal a trigger causes.

``trigger_masks`` returns one :class:`TriggerMask` per request (word and token kinds with the
numbers behind them) and the ranked trigger lexicon (a ``list[LexiconEntry]``) across the data;
:meth:`TriggerMasks.save` writes ``masks.jsonl``, ``lexicon.json`` and ``triggers.json``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from refusal_lens.artifacts import (
    artifact_meta,
    json_writer,
    jsonl_writer,
    read_meta,
    save_artifact,
)
from refusal_lens.attribution.methods import BatchScore, scores_without
from refusal_lens.configs import StageConfig
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import PromptSet
from refusal_lens.scoring import refusal_scores
from refusal_lens.triggers.harm import HarmJudge
from refusal_lens.verdicts import refused_by_score

WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")
CARRIERS = (
    "What does the word '{w}' mean?",
    "Give me three synonyms for '{w}'.",
    "Translate the word '{w}' into Spanish.",
    "How many syllables does '{w}' have?",
    "Write a short, cheerful sentence about gardening that uses the word '{w}'.",
    "Is '{w}' a noun, a verb or an adjective?",
)
FILLERS = ("table", "garden", "music", "river")
FRAME = frozenset(
    """a an the and or but if so of to in on at by for from with without into onto about as
    than then that this these those it its is are was were be been being do does did can could
    will would should shall may might must i me my mine you your he him his she her we us our
    they them their what which who whom whose when where why how write explain give draft
    describe create tell list provide show make generate compose produce outline suggest help
    please step steps""".split()  # noqa: SIM905
)
KINDS = ("neutral", "harmful_cue", "trigger")
KIND = "trigger_masks"
MASKS_NAME = "masks.jsonl"  # one TriggerMask per line
LEXICON_NAME = "lexicon.json"  # the ranked LexiconEntry list
META_NAME = "triggers.json"  # kind, format, model and config


@dataclass(frozen=True)
class TriggerConfig(StageConfig):
    """Thresholds of the split (module docstring) and the carrier measurement. The thresholds
    may be any number but NaN (``inf`` switches a kind off, as in :func:`reclassify`)."""

    drive_min: float = 0.25  # refusal log-odds drop on deleting the word: it drives refusal
    harm_min: float = 1.0  # harm-probe logit drop on deleting the word: it carries harm
    carriers: tuple[str, ...] = CARRIERS  # benign requests with a '{w}' slot
    fillers: tuple[str, ...] = FILLERS  # neutral words whose scores are the carriers' baseline
    batch_size: int = 32

    def validate(self) -> None:
        for name in ("drive_min", "harm_min"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value):
                raise RefusalLensError(
                    f"TriggerConfig.{name} must be a number (any real, or inf to switch its "
                    f"kind off), not {value!r}."
                )
        if not self.carriers or not all(_is_carrier(c) for c in self.carriers):
            raise RefusalLensError(
                f"TriggerConfig.carriers must be a non-empty tuple of strings that each contain "
                f"'{{w}}' and no other braces, not {self.carriers!r}; e.g. "
                f"{CARRIERS[0]!r}, or leave it out for the default CARRIERS."
            )
        if not self.fillers or not all(isinstance(f, str) and f.strip() for f in self.fillers):
            raise RefusalLensError(
                f"TriggerConfig.fillers must be a non-empty tuple of non-empty words, not "
                f"{self.fillers!r}; leave it out for the default FILLERS."
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise RefusalLensError(
                f"TriggerConfig.batch_size must be an integer >= 1, not {self.batch_size!r}; "
                "the default is 32."
            )


def _is_carrier(text: object) -> bool:
    if not isinstance(text, str) or "{w}" not in text:
        return False
    try:
        text.format(w="")
    except (KeyError, IndexError, ValueError):
        return False
    return True


@dataclass
class TriggerMask:
    """One request's words with their drive, carrier effect and kind, and the token mask."""

    prompt: str
    refusal_score: float
    words: list[str]
    spans: list[tuple[int, int]]  # character spans in ``prompt``
    word_tokens: list[list[int]]  # user-token indices of each word
    drive: list[float]
    harm: list[float]
    carrier: list[float | None]  # None for neutral words
    kinds: list[str]
    n_tokens: int
    threshold: float = 0.0  # the model's refusal threshold

    @property
    def refused(self) -> bool:
        return refused_by_score(self.refusal_score, self.threshold)

    @property
    def harmful_cues(self) -> list[str]:
        return [w for w, k in zip(self.words, self.kinds, strict=True) if k == "harmful_cue"]

    @property
    def triggers(self) -> list[str]:
        return [w for w, k in zip(self.words, self.kinds, strict=True) if k == "trigger"]

    def token_kinds(self) -> list[str]:
        """The kind of each user token (``neutral`` for tokens outside any word)."""
        out = ["neutral"] * self.n_tokens
        for tokens, kind in zip(self.word_tokens, self.kinds, strict=True):
            for i in tokens:
                out[i] = kind
        return out


@dataclass
class LexiconEntry:
    """One word of the trigger lexicon, with one kind (``trigger`` or ``harmful_cue``): its
    carrier effect and its mean drive and harm over the requests where it has that kind."""

    word: str  # lower-cased
    kind: str
    carrier_effect: float
    n_requests: int  # requests in which the word has this kind
    mean_drive: float
    mean_harm: float


@dataclass
class TriggerMasks:
    """The result of :func:`trigger_masks`: one mask per request, the lexicon, the config and
    the aligned model's id."""

    masks: list[TriggerMask]
    lexicon: list[LexiconEntry]  # ranked: triggers first, by frequency then carrier effect
    config: TriggerConfig = field(default_factory=TriggerConfig)
    model: str = ""

    def save(self, folder: str | Path) -> Path:
        """Write ``masks.jsonl``, ``lexicon.json`` and ``triggers.json`` into ``folder``;
        other files there are kept."""
        return save_artifact(
            folder,
            {
                MASKS_NAME: jsonl_writer([asdict(m) for m in self.masks]),
                LEXICON_NAME: json_writer(self.lexicon),
                META_NAME: json_writer(artifact_meta(KIND, self.config, model=self.model)),
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> TriggerMasks:
        """Read masks written by :meth:`save`."""
        folder = Path(folder)
        meta = read_meta(folder, META_NAME, KIND)
        for name in (MASKS_NAME, LEXICON_NAME):
            if not (folder / name).is_file():
                raise RefusalLensError(
                    f"{folder} has {META_NAME} but not {name}; save the trigger masks again."
                )
        with open(folder / MASKS_NAME, encoding="utf-8") as f:
            rows = [json.loads(x) for x in f if x.strip()]
        masks = [TriggerMask(**{**r, "spans": [tuple(s) for s in r["spans"]]}) for r in rows]
        lexicon = load_lexicon(folder / LEXICON_NAME)
        return cls(masks, lexicon, TriggerConfig.from_dict(meta["config"]), meta["model"])


def load_lexicon(path: str | Path) -> list[LexiconEntry]:
    """The ``lexicon.json`` of saved trigger masks as ``LexiconEntry`` rows."""
    names = {f.name for f in fields(LexiconEntry)}
    rows = json.loads(Path(path).read_text())
    if not isinstance(rows, list) or not all(isinstance(r, dict) and names <= set(r) for r in rows):
        raise RefusalLensError(
            f"{path} is not a trigger lexicon: it needs a list of objects with keys "
            f"{sorted(names)}. Pass the lexicon.json that TriggerMasks.save wrote."
        )
    return [LexiconEntry(**{k: r[k] for k in names}) for r in rows]


def token_spans(model: ModelHandle, token_ids: list[int]) -> list[tuple[int, int]]:
    """Character span of each user token in the decoded user text."""
    ends = [len(model.tokenizer.decode(token_ids[: i + 1])) for i in range(len(token_ids))]
    return list(zip([0, *ends[:-1]], ends, strict=True))


def words_of(
    text: str, spans: list[tuple[int, int]]
) -> list[tuple[str, tuple[int, int], list[int]]]:
    """``(word, char span, token indices)`` for each word of ``text``."""
    out = []
    for m in WORD.finditer(text):
        tokens = [i for i, (a, b) in enumerate(spans) if a < m.end() and b > m.start()]
        if tokens:
            out.append((m.group(), m.span(), tokens))
    return out


def word_deletions(
    model: ModelHandle, prompt: str, score: BatchScore | None = None
) -> tuple[float, list, list[float], list[int]]:
    """The score of ``prompt`` (default: refusal score), its words, the drop in score when each
    word is deleted, and the user-token ids."""
    batch = model.chat.tokenize([prompt])
    ids = batch.input_ids[0][batch.user_mask[0]].tolist()
    if not ids:
        raise RefusalLensError(f"Prompt {prompt!r} has no user tokens.")
    words = words_of(model.tokenizer.decode(ids), token_spans(model, ids))
    scores = scores_without(model, prompt, [[]] + [w[2] for w in words], score)
    base = float(scores[0])
    return base, words, (base - scores[1:]).tolist(), ids


def carrier_effects(
    model: ModelHandle, words: list[str], config: TriggerConfig
) -> dict[str, float]:
    """Mean rise in refusal score when each word replaces the fillers in the carriers."""
    if not words:
        return {}
    fill = [c.format(w=f) for c in config.carriers for f in config.fillers]
    base = refusal_scores(model, fill, config.batch_size, show_progress=False)
    base = base.view(len(config.carriers), len(config.fillers)).mean(1)
    texts = [c.format(w=w) for w in words for c in config.carriers]
    got = refusal_scores(model, texts, config.batch_size, show_progress=False)
    rise = got.view(len(words), len(config.carriers)) - base
    return {w: float(r) for w, r in zip(words, rise.mean(1), strict=True)}


def trigger_masks(
    model: ModelHandle,
    prompts: PromptSet | list[str],
    base: ModelHandle,
    judge: HarmJudge,
    config: TriggerConfig | None = None,
) -> TriggerMasks:
    """Masks for refused requests (typically the harmful queries of the alignment data):
    ``model`` is the aligned model, ``base`` the model ``judge`` was fitted on."""
    config = config or TriggerConfig()
    texts = list(getattr(prompts, "texts", prompts))
    if not texts:
        raise RefusalLensError("trigger_masks needs at least one prompt.")
    model.chat.token_lengths(texts)  # validates every prompt before any work
    masks = [_mask(model, base, judge, text, config) for text in texts]
    return _with_carriers(masks, model, config)


def _mask(
    model: ModelHandle, base: ModelHandle, judge: HarmJudge, text: str, config: TriggerConfig
) -> TriggerMask:
    """One request's mask without carrier effects (``carrier`` all ``None``)."""
    score, words, drive, ids = word_deletions(model, text)
    _, _, harm, base_ids = word_deletions(base, text, judge.batch_logits)
    if base_ids != ids:
        raise RefusalLensError(
            "The aligned and the base model tokenize the request differently; trigger "
            "masks need two models with the same tokenizer."
        )
    names = [w[0] for w in words]
    return TriggerMask(
        prompt=text,
        refusal_score=score,
        threshold=model.refusal_threshold,
        words=names,
        spans=[w[1] for w in words],
        word_tokens=[w[2] for w in words],
        drive=drive,
        harm=harm,
        carrier=[None] * len(words),
        kinds=classify(names, drive, harm, config),
        n_tokens=len(ids),
    )


def classify(
    words: list[str], drive: list[float], harm: list[float], config: TriggerConfig
) -> list[str]:
    """The documented rule (module docstring): harmful cue, trigger or neutral, per word."""
    return [
        "harmful_cue"
        if h >= config.harm_min and w.lower() not in FRAME
        else "trigger"
        if d >= config.drive_min
        else "neutral"
        for w, d, h in zip(words, drive, harm, strict=True)
    ]


def reclassify(masks: TriggerMasks, model: ModelHandle, config: TriggerConfig) -> TriggerMasks:
    """The same masks under other thresholds, without recomputing any deletion: only the
    carrier effects of the words that become cues or triggers are measured (on ``model``, the
    aligned model the masks were made with)."""
    out = [
        replace(m, kinds=classify(m.words, m.drive, m.harm, config), carrier=[None] * len(m.words))
        for m in masks.masks
    ]
    return _with_carriers(out, model, config)


def _with_carriers(
    masks: list[TriggerMask], model: ModelHandle, config: TriggerConfig
) -> TriggerMasks:
    flagged = sorted(
        {w.lower() for m in masks for w, k in zip(m.words, m.kinds, strict=True) if k != "neutral"}
    )
    effect = carrier_effects(model, flagged, config)
    for m in masks:
        m.carrier = [
            None if k == "neutral" else effect[w.lower()]
            for w, k in zip(m.words, m.kinds, strict=True)
        ]
    return TriggerMasks(masks, build_lexicon(masks), config, model.model_id)


def build_lexicon(masks: list[TriggerMask]) -> list[LexiconEntry]:
    """Every cue and trigger across the masks. Triggers come first, ranked by how many
    requests they drive, then by carrier effect; harmful cues follow, ranked the same way."""
    seen: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for m in masks:
        for w, d, h, c, k in zip(m.words, m.drive, m.harm, m.carrier, m.kinds, strict=True):
            if k != "neutral":
                seen.setdefault((w.lower(), k), []).append((d, h, c))
    entries = [
        LexiconEntry(
            w,
            k,
            v[0][2],
            len(v),
            sum(x[0] for x in v) / len(v),
            sum(x[1] for x in v) / len(v),
        )
        for (w, k), v in seen.items()
    ]
    return sorted(
        entries, key=lambda e: (e.kind != "trigger", -e.n_requests, -e.carrier_effect, e.word)
    )
