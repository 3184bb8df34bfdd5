"""What RASS found (:class:`RASSResult`): every candidate with the reason it was dropped,
the selected ones, and the files they are saved in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import (
    artifact_file,
    artifact_meta,
    json_writer,
    jsonl_writer,
    read_meta,
    save_artifact,
)
from refusal_lens.boundary.candidates import Candidate
from refusal_lens.boundary.rass_config import RASSConfig
from refusal_lens.prompts import PromptSet

KIND = "rass"
SELECTED_NAME = "rass.jsonl"  # the selected prompts, loadable by PromptSet.load
CANDIDATES_NAME = "rass_candidates.jsonl"  # every candidate, with the reason it was dropped
SUMMARY_NAME = "rass_summary.json"  # counts per language, method and coefficient
META_NAME = "rass.json"  # kind, format, config, model, direction, harm scorer, warnings
HARM_CHECK_REASON = "harm check"  # the reason prefix of a candidate the re-check dropped


@dataclass
class RASSResult:
    """All candidates (with the reason each was dropped) and the selected ones."""

    candidates: list[Candidate]
    config: RASSConfig
    model: str
    direction: dict[str, Any]
    harm_scorer: dict[str, Any] = field(default_factory=dict)  # HarmScorer.describe()
    warnings: list[str] = field(default_factory=list)
    # per direction ("en->fr"): texts translated, empty (source kept) and unchanged ones
    translations: dict[str, dict[str, int]] = field(default_factory=dict)
    harm_check: dict[str, Any] = field(default_factory=dict)  # describe_check(harm_check)

    @property
    def selected(self) -> list[Candidate]:
        return [c for c in self.candidates if c.reason == ""]

    @property
    def dropped_by_harm_check(self) -> list[dict[str, Any]]:
        """The candidates inside the band that the harm scorer passed and the re-check
        dropped: text (and its English), language, margin, p(harmful) and the reason."""
        return [
            {
                "text": c.text,
                "english": c.scores.get("english", c.text),
                "language": c.language,
                "margin": c.scores.get("margin"),
                "p_harmful": c.scores.get("p_harmful"),
                "reason": c.reason,
            }
            for c in self.candidates
            if c.reason.startswith(HARM_CHECK_REASON)
        ]

    def summary(self) -> dict[str, Any]:
        """Counts per method/coefficient: generated, each drop reason, selected; and per
        translation direction: texts, empty and unchanged translations."""
        groups: dict[str, dict[str, int]] = {}
        for c in self.candidates:
            key = f"{c.language} {c.method}" + (f" coef {c.coef:g}" if c.coef is not None else "")
            row = groups.setdefault(key, {"generated": 0, "selected": 0})
            row["generated"] += 1
            reason = c.reason.split(" (")[0] if c.reason else "selected"
            row[reason] = row.get(reason, 0) + 1
        return {
            "groups": groups,
            "selected": len(self.selected),
            "dropped_by_harm_check": self.dropped_by_harm_check,
            "translations": self.translations,
            "warnings": self.warnings,
        }

    def records(self, selected_only: bool = True) -> list[dict[str, Any]]:
        if selected_only:
            return [c.record() for c in self.selected]
        return [c.record(with_reason=True) for c in self.candidates]

    def prompts(self) -> PromptSet:
        return PromptSet.from_texts([c.text for c in self.selected], "borderline", "rass")

    def save(self, folder: str | Path) -> Path:
        """Write ``rass.jsonl`` (selected), ``rass_candidates.jsonl`` (all, with reasons),
        ``rass_summary.json`` and ``rass.json`` into ``folder``; other files there are kept."""
        meta = artifact_meta(
            KIND,
            self.config,
            model=self.model,
            direction=self.direction,
            harm_scorer=self.harm_scorer,
            warnings=self.warnings,
            translations=self.translations,
            harm_check=self.harm_check,
            dropped_by_harm_check=self.dropped_by_harm_check,
        )
        return save_artifact(
            folder,
            {
                SELECTED_NAME: jsonl_writer(self.records()),
                CANDIDATES_NAME: jsonl_writer(self.records(selected_only=False)),
                SUMMARY_NAME: json_writer(self.summary()),
                META_NAME: json_writer(meta),
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> RASSResult:
        """Read a result written by :meth:`save`: every candidate, selected or dropped."""
        meta = read_meta(folder, META_NAME, KIND)
        path = artifact_file(folder, CANDIDATES_NAME, META_NAME, "run RASS again.")
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return cls(
            [Candidate.from_record(row) for row in rows],
            RASSConfig.from_dict(meta["config"]),
            meta["model"],
            meta["direction"],
            meta.get("harm_scorer", {}),
            meta.get("warnings", []),
            meta.get("translations", {}),
            meta.get("harm_check", {}),
        )
