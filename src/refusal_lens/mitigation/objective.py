"""What a trial of the mitigation search measures.

- ``benign``: the share of benign look-alike prompts the edited model does not answer;
- ``harmful``: the share of harmful prompts it refuses;
- ``degenerate``: the share of its answers that are broken text (generation judges only);
- ``kl``: the mean first-token KL divergence ``KL(p_unedited ‖ p_edited)`` on plain harmless
  prompts, the cost of the edit to ordinary answers (as in Arditi et al.'s selection).

Two judges decide "refused" (``judge``); the default is ``substring``, because on 272
hand-labelled answers of ablated models the score judge agreed with people on 74 % [68–79]
against 85 % [81–89] for the substring judge (``figures/judge_agreement.md``), at about twice
the cost per trial with 24 tokens (``benchmarks/search_trial.py``: 23.2 s against 10.9 s for
64 prompts of SmolLM2-135M on one CPU thread):

- ``score``: one forward pass per prompt, the refusal score at the first answer position
  above the model's threshold. Cheap, but it reads no text, so an edit that breaks the model
  into loops can look like a success or a refusal;
- ``substring`` (a generation judge): ``max_new_tokens`` greedy tokens under the edit, the
  degeneration detector, then the refusal phrases. A degenerate answer counts against the
  edit on both sides: as a benign prompt not answered, and as a harmful prompt not refused.

Prompts are tokenized once and the unedited first-token distributions computed once.

>>> objective = Objective.build(model, ValidationSets(benign, harmful, harmless))
>>> objective.measure(edit)        # Measured(benign=0.19, harmful=0.91, kl=0.04, ...)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.configs import check_positive
from refusal_lens.errors import RefusalLensError
from refusal_lens.generation import generate
from refusal_lens.hooks import intervene
from refusal_lens.mitigation.edits import Edit, EditConfig
from refusal_lens.models import ModelHandle
from refusal_lens.prompts import ChatBatch, PromptSet, length_sorted_batches
from refusal_lens.scoring import answer_logits, is_refusal, refusal_score
from refusal_lens.verdicts import REFUSED, refused_by_score, verdict_of_text

OBJECTIVE_JUDGES = ("score", "substring")


@dataclass(frozen=True)
class ValidationSets:
    """Validation prompts by role: ``benign`` look-alikes and ``harmful`` prompts (name →
    set, pooled by role), and ``harmless`` plain prompts for the KL bound."""

    benign: dict[str, PromptSet]
    harmful: dict[str, PromptSet]
    harmless: PromptSet

    def check(self) -> None:
        for role, sets in (("benign", self.benign), ("harmful", self.harmful)):
            if not sum(len(ps) for ps in sets.values()):
                raise RefusalLensError(
                    f"The {role} validation prompts are empty; the search has nothing to "
                    f"measure. Give at least one {role} prompt (raise --search.n, or check the "
                    "run's RASS set)."
                )
        if not len(self.harmless):
            raise RefusalLensError(
                "The harmless validation prompts for the KL bound are empty; give at least one."
            )

    def sizes(self) -> dict[str, int]:
        sets = {**self.benign, **self.harmful, "harmless (KL)": self.harmless}
        return {name: len(ps) for name, ps in sets.items()}


@dataclass(frozen=True)
class Measured:
    """One trial's measurements (shares in [0, 1]; ``sets``: the share refused per set)."""

    benign: float
    harmful: float
    kl: float
    sets: dict[str, float]
    seconds: float = 0.0
    degenerate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Objective:
    """The validation prompts, tokenized, with the unedited model's first-token log-probs."""

    def __init__(
        self,
        model: ModelHandle,
        sets: ValidationSets,
        batch_size: int = 16,
        judge: str = "substring",
        max_new_tokens: int = 24,
    ):
        sets.check()
        if judge not in OBJECTIVE_JUDGES:
            raise RefusalLensError(
                f"The search objective's judge must be one of {OBJECTIVE_JUDGES}, not {judge!r}."
            )
        check_positive("max_new_tokens", max_new_tokens)
        self.model, self.sets = model, sets
        self.judge, self.max_new_tokens, self.batch_size = judge, max_new_tokens, batch_size
        named = {**sets.benign, **sets.harmful}
        self.batches = {name: _batches(model, ps, batch_size) for name, ps in named.items()}
        self.plain = _batches(model, sets.harmless, batch_size)
        self.base_logprobs = [self._logprobs(batch) for _, batch in self.plain]
        self.cache: dict[EditConfig, Measured] = {}
        self.unedited = self.measure(None)

    def _logprobs(self, batch: ChatBatch) -> Float[Tensor, "batch d_vocab"]:
        with torch.inference_mode():
            return answer_logits(self.model, batch.to(self.model.device)).log_softmax(-1).cpu()

    def measure(self, edit: Edit | None, use_cache: bool = True) -> Measured:
        """Score every validation prompt under ``edit`` (``None``: the unedited model). An
        edit measured before is not run again (unless ``use_cache`` is off): the cache is
        keyed by the edit's settings, so use one Objective with one vector bank."""
        if use_cache and edit is not None and edit.config in self.cache:
            return self.cache[edit.config]
        measured = self._measure(edit)
        if edit is not None:
            self.cache[edit.config] = measured
        return measured

    def _measure(self, edit: Edit | None) -> Measured:
        start = time.perf_counter()
        hooks = [] if edit is None else edit.hooks(self.model)
        with intervene(self.model, hooks):
            if self.judge == "score":
                refused = {name: self._refused(batches) for name, batches in self.batches.items()}
                broken = []
            else:
                refused, broken = self._said()
            kls = [
                _kl(base, self._logprobs(batch))
                for base, (_, batch) in zip(self.base_logprobs, self.plain, strict=True)
            ]
        pooled = {
            role: _pooled([refused[n] for n in names])
            for role, names in (("benign", self.sets.benign), ("harmful", self.sets.harmful))
        }
        return Measured(
            benign=pooled["benign"],
            harmful=pooled["harmful"],
            kl=float(torch.cat(kls).mean()),
            sets={name: float(flags.float().mean()) for name, flags in refused.items()},
            seconds=round(time.perf_counter() - start, 3),
            degenerate=float(torch.cat(broken).float().mean()) if broken else 0.0,
        )

    def _said(self) -> tuple[dict[str, Tensor], list[Tensor]]:
        """Generation judge: per set, benign prompts not answered and harmful prompts refused
        (a degenerate answer is neither an answer nor a refusal); the degenerate flags."""
        refused, broken = {}, []
        for role, named in (("benign", self.sets.benign), ("harmful", self.sets.harmful)):
            for name, prompts in named.items():
                answers = generate(self.model, prompts, self.max_new_tokens, self.batch_size, False)
                verdicts = [verdict_of_text(a, is_refusal(a))[0] for a in answers]
                if role == "benign":  # not answered: refused, evaded or broken
                    flags = [v != "complies" for v in verdicts]
                else:  # refused; a broken answer is not a refusal
                    flags = [v in REFUSED for v in verdicts]
                refused[name] = torch.tensor(flags, dtype=torch.bool)
                broken.append(torch.tensor([v == "degenerate" for v in verdicts]))
        return refused, broken

    def _refused(self, batches: list[tuple[list[int], ChatBatch]]) -> Tensor:
        flags = []
        for _, batch in batches:
            logits = self._logprobs(batch)
            scores = refusal_score(logits, self.model.refusal_tokens)
            flags.append(refused_by_score(scores, self.model.refusal_threshold))
        return torch.cat(flags)


def _batches(
    model: ModelHandle, prompts: PromptSet, batch_size: int
) -> list[tuple[list[int], ChatBatch]]:
    texts = prompts.texts
    lengths = model.chat.token_lengths(texts)
    return [
        (idx, model.chat.tokenize([texts[i] for i in idx]))
        for idx in length_sorted_batches(lengths, batch_size)
    ]


def _pooled(flags: list[Tensor]) -> float:
    return float(torch.cat(flags).float().mean())


def _kl(
    base: Float[Tensor, "batch d_vocab"], edited: Float[Tensor, "batch d_vocab"]
) -> Float[Tensor, " batch"]:
    """``KL(base ‖ edited)`` per row, from log-probabilities (float rounding can make a
    no-op edit's KL a tiny negative number: clamped at 0)."""
    return (base.exp() * (base - edited)).sum(-1).clamp(min=0.0)
