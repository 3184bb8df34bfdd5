"""``PromptSet``: labelled prompts, the unit every stage consumes.

Each prompt has a ``label`` (``harmful``, ``harmless`` or ``borderline``), a ``category``, and
for borderline prompts the ``trigger``: the word that makes a benign request look unsafe
(XSTest calls it the *focus*). The package ships three sets written for this project; see
:func:`refusal_lens.prompts.load_prompts` for those and the public benchmarks.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, overload

from refusal_lens.artifacts import atomic_path
from refusal_lens.errors import PromptError

Label = Literal["harmful", "harmless", "borderline"]
LABELS: tuple[str, ...] = ("harmful", "harmless", "borderline")


@dataclass(frozen=True)
class Prompt:
    """One user request."""

    text: str
    label: str  # one of LABELS, checked below
    category: str = ""
    trigger: str | None = None
    source: str = ""
    language: str = ""  # ISO 639-1 code of a translated prompt ("" : not recorded, English)
    original: str | None = None  # a translated prompt's English original

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise PromptError(
                f"A prompt's text must be a string, not {type(self.text).__name__} "
                f"({self.text!r}); quote it."
            )
        if self.label not in LABELS:
            raise PromptError(f"Unknown label {self.label!r}; use one of {LABELS}.")


FIELDS = tuple(f.name for f in fields(Prompt))
# Fields written only when set, so prompt files of English sets keep their format.
_OPTIONAL = {"language": "", "original": None}


def prompt_record(prompt: Prompt) -> dict:
    """The JSON record of ``prompt``: its fields, the language fields only when set."""
    row = asdict(prompt)
    return {k: v for k, v in row.items() if k not in _OPTIONAL or v != _OPTIONAL[k]}


@dataclass(frozen=True)
class PromptSet:
    """An ordered, immutable collection of :class:`Prompt`."""

    prompts: tuple[Prompt, ...]
    name: str = "prompts"
    meta: dict[str, str] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    @overload
    def __getitem__(self, i: int) -> Prompt: ...
    @overload
    def __getitem__(self, i: slice) -> PromptSet: ...
    def __getitem__(self, i: int | slice) -> Prompt | PromptSet:
        if isinstance(i, slice):
            return replace(self, prompts=self.prompts[i])
        return self.prompts[i]

    def __add__(self, other: PromptSet) -> PromptSet:
        return PromptSet(self.prompts + other.prompts, name=f"{self.name}+{other.name}")

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.prompts]

    @property
    def originals(self) -> list[str]:
        """Each prompt's English original (its own text when it is not a translation)."""
        return [p.original or p.text for p in self.prompts]

    def filter(self, label: str | None = None, category: str | None = None) -> PromptSet:
        """The prompts with this label and/or category."""
        kept = tuple(
            p
            for p in self.prompts
            if (label is None or p.label == label) and (category is None or p.category == category)
        )
        return replace(self, prompts=kept)

    def sample(self, n: int, seed: int = 0) -> PromptSet:
        """``n`` prompts drawn without replacement, reproducibly (all of them if ``n`` ≥ size)."""
        if n >= len(self):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return replace(self, prompts=tuple(self.prompts[i] for i in idx))

    def split(self, n_first: int, seed: int = 0) -> tuple[PromptSet, PromptSet]:
        """A reproducible shuffle cut into ``n_first`` prompts and the rest (e.g. train/val)."""
        if not 0 < n_first < len(self):
            raise PromptError(f"Cannot split {len(self)} prompts into {n_first} and the rest.")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        pick = lambda ids: replace(self, prompts=tuple(self.prompts[i] for i in sorted(ids)))  # noqa: E731
        return pick(order[:n_first]), pick(order[n_first:])

    def save(self, path: str | Path) -> None:
        """Write one JSON object per prompt (JSONL), atomically."""
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for p in self.prompts:
                f.write(json.dumps(prompt_record(p), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> PromptSet:
        """Read a JSONL file with at least ``text`` and ``label`` keys per line; other keys
        (e.g. the masks and scores of a sanitized data file) are ignored."""
        path = Path(path)
        prompts = []
        try:
            with open(path, encoding="utf-8") as f:
                lines = list(enumerate(f, 1))
        except UnicodeDecodeError as exc:
            raise PromptError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8.") from None
        for n, line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise TypeError(f"a JSON {type(row).__name__}, not an object")
                prompts.append(Prompt(**{k: v for k, v in row.items() if k in FIELDS}))
            except (json.JSONDecodeError, TypeError, PromptError) as exc:
                raise PromptError(
                    f"{path}:{n} is not a prompt record ({exc}); each line needs a JSON "
                    "object with 'text' and 'label' (and optionally 'category', 'trigger')."
                ) from exc
        return cls(tuple(prompts), name=name or path.stem)

    @classmethod
    def from_texts(cls, texts: list[str], label: str, name: str = "prompts") -> PromptSet:
        return cls(tuple(Prompt(t, label) for t in texts), name=name)


def normalize_text(text: str) -> str:
    """Lower-case with whitespace folded: the identity used to compare prompts across sets."""
    return " ".join(text.lower().split())


def check_disjoint(train: list[str], evaluation: list[str], what: str) -> None:
    """Fail when a training prompt also appears in an evaluation set."""
    shared = {normalize_text(t) for t in train} & {normalize_text(t) for t in evaluation}
    if shared:
        raise PromptError(
            f"{len(shared)} prompts of {what} are also training prompts, e.g. "
            f"{next(iter(shared))!r}. Evaluate on held-out prompts."
        )
