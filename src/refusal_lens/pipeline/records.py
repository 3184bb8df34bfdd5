"""Where the stages' results live in their folders: the typed results of the stages whose
outputs were plain JSON (each with ``save`` and ``load``), the file names of the others, and
the readers a later stage uses on an earlier stage's folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import write_json
from refusal_lens.boundary.geometry import META_NAME
from refusal_lens.boundary.refusal_fit import BoundaryFit
from refusal_lens.errors import RefusalLensError
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction
from refusal_lens.triggers.sanitize import KEPT_NAME

# The result files of the stages that write plain JSON (the others' are their classes').
FACTS_FILE = "model.json"  # step 0: the model's facts
FIT_FILE = "boundary_fit.json"  # step 7: the layer and band RASS selects in
CLAIM_FILE = "rass_claim.json"  # step 8: RASS's selected prompts answered, against XSTest-safe
MITIGATIONS_FILE = "mitigations.json"  # step 9: one row per condition
SEARCH_FILE = "search.json"  # step 10: the searches, the held-out comparison, the export
MULTILINGUAL_FILE = "multilingual.json"  # step 11: per language, answers, verdicts, margins
HARM_JUDGE_DIR, MASKS_DIR, SANITIZED_DIR = "harm_judge", "masks", "sanitized"  # step 6


def w_prime(folder: Path, lam: float) -> Direction:
    """The false-refusal vector w′ at ``lam`` in the direction stage's ``folder``."""
    return Direction.load(folder / f"w_prime_{lam:g}")


def kept_path(folder: Path) -> Path:
    """The sanitized D_b in the triggers stage's ``folder``."""
    return folder / SANITIZED_DIR / KEPT_NAME


def read_fit(folder: Path) -> BoundaryFit:
    """The layer and band the geometry stage (its ``folder``) chose for RASS."""
    return BoundaryFit.from_dict(json.loads((folder / FIT_FILE).read_text(encoding="utf-8")))


def reference_sets(folder: Path) -> tuple[PromptSet, PromptSet]:
    """The harmful and harmless prompts the geometry stage (its ``folder``) fitted its
    boundaries on."""
    texts = json.loads((folder / META_NAME).read_text(encoding="utf-8"))["texts"]
    return (
        PromptSet.from_texts(texts["harmful"], "harmful", "geometry"),
        PromptSet.from_texts(texts["harmless"], "harmless", "geometry"),
    )


def _read(path: Path, what: str) -> Any:
    if not path.is_file():
        raise RefusalLensError(
            f"{path} is missing: the folder holds no finished {what}. Rerun the stage that "
            "writes it (`refusal-lens run MODEL --force STAGE`)."
        )
    return json.loads(path.read_text(encoding="utf-8"))


class JsonRecord:
    """A stage's result kept as one JSON file (``FILE``) in its folder: ``save``, ``load``."""

    FILE = ""
    WHAT = "stage"  # what a missing file means was not finished

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def save(self, folder: Path) -> None:
        write_json(Path(folder) / self.FILE, self.to_dict())

    @classmethod
    def load(cls, folder: Path) -> Any:
        return cls(**_read(Path(folder) / cls.FILE, cls.WHAT))


@dataclass(frozen=True)
class Organism(JsonRecord):
    """Step 1's verdict: the model studied (the run's aligned organism, or the model as given),
    the refusal shares of the check and the refusal-score fits."""

    FILE = "organism.json"
    WHAT = "organism step"

    base: str
    model: str  # portable path of the model studied
    aligned: bool = False
    note: str | None = None  # set when the model was not checked
    threshold: float | None = None
    n_check: int | None = None
    before: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    base_calibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"base": self.base, "model": self.model, "aligned": self.aligned}
        if self.note is not None:
            return record | {"note": self.note}
        record |= {"threshold": self.threshold, "n_check": self.n_check, "before": self.before}
        record["calibration"] = self.calibration
        if self.aligned:
            record |= {"after": self.after, "base_calibration": self.base_calibration}
        return record

    @property
    def final(self) -> dict[str, Any]:
        """The check's refusal shares of the model studied."""
        return self.after if self.aligned else self.before


@dataclass(frozen=True)
class Interventions(JsonRecord):
    """Step 4: refusal under each edit on validation prompts, and the λ chosen there."""

    FILE = "interventions.json"
    WHAT = "interventions step"

    sets: dict[str, str]  # set name -> kind
    refusal: dict[str, Any]  # edit -> set -> judge -> share
    lam: float
    why: str
    kl_ablate_r: float
    refused: dict[str, Any] = field(default_factory=dict)  # edit -> set -> judge -> flags

    def to_dict(self) -> dict[str, Any]:
        return {
            "sets": self.sets,
            "refusal": self.refusal,
            "lambda": self.lam,
            "why": self.why,
            "kl_ablate_r": self.kl_ablate_r,
            "refused": self.refused,
        }

    @classmethod
    def load(cls, folder: Path) -> Interventions:
        data = _read(Path(folder) / cls.FILE, cls.WHAT)
        data["lam"] = data.pop("lambda")
        return cls(**data)


@dataclass(frozen=True)
class FalseRefusalPrompts:
    """The prompts that define w′ in step 3 (borderline and harmless, none a test prompt):
    later stages read them back to keep them out of their own samples and to rebuild w."""

    BORDERLINE_FILE = "w_prompts.json"
    HARMLESS_FILE = "w_harmless.json"

    borderline: list[str]
    harmless: list[str]

    def save(self, folder: Path) -> None:
        write_json(folder / self.BORDERLINE_FILE, self.borderline)
        write_json(folder / self.HARMLESS_FILE, self.harmless)

    @classmethod
    def load(cls, folder: Path) -> FalseRefusalPrompts:
        folder = Path(folder)
        return cls(
            _read(folder / cls.BORDERLINE_FILE, "direction step"),
            _read(folder / cls.HARMLESS_FILE, "direction step"),
        )


@dataclass(frozen=True)
class Mitigations(JsonRecord):
    """Step 9: every mitigation on the same held-out test prompts, the best, the paired tests
    and the export of the w′ edit."""

    FILE = MITIGATIONS_FILE
    WHAT = "mitigations step"

    judges: list[str]
    sets: list[dict[str, str]]  # name, kind
    rows: list[dict[str, Any]]  # condition, note, rates, combined
    best: str
    best_by: str
    export: str  # the exported model's folder, or why it was not written
    tests: list[dict[str, Any]] = field(default_factory=list)  # paired McNemar tests
    skipped: dict[str, str] = field(default_factory=dict)  # re-alignment -> why not trained


@dataclass(frozen=True)
class SearchSummary(JsonRecord):
    """Step 10: the searches on validation prompts, their re-judged winners, the held-out
    comparison, the chosen edit and its export: what the section, the figure and the
    README's table read."""

    FILE = SEARCH_FILE
    WHAT = "search step"

    validation: dict[str, int]  # validation set -> size
    unedited: dict[str, Any]
    floor: float
    kl_max: float
    searches: dict[str, Any]  # search name -> its trials, front, re-judged and winner
    fixed: dict[str, Any]  # Arditi's and Wang's edits, measured like a trial
    heldout: dict[str, Any]  # condition -> rates on the held-out test prompts
    heldout_folders: dict[str, str]
    chosen: dict[str, Any]
    export: dict[str, Any]
    seconds: float = 0.0
