"""Export an edit: always its config and vectors, and where the weights can express it, an HF
model directory with the edit baked in.

>>> export = export_edit(model, edit, "runs/smollm2-135m/10-search/export")
>>> export.model          # ".../export/model": load_model(...) gives the edited logits
>>> export.why            # why there are no weights, when there are none
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from refusal_lens.artifacts import write_json
from refusal_lens.directions.orthogonalize import MARKER, write_orthogonalized
from refusal_lens.errors import RefusalLensError
from refusal_lens.mitigation.edits import Edit
from refusal_lens.models import ModelHandle

EDIT_DIR = "edit"
MODEL_DIR = "model"
EXPORT_FILE = "export.json"
HOOKS_INSTEAD = "Apply the saved edit with refusal_lens.mitigation.apply_edit instead."


@dataclass(frozen=True)
class Export:
    """Where the edit went: ``edit`` (always), ``model`` (weights, or ``None``) and ``why``
    there are no weights."""

    edit: Path
    model: Path | None
    why: str = ""


def why_not_weights(edit: Edit) -> str:
    """Why the weights cannot hold ``edit`` (empty when they can, architecture permitting)."""
    if edit.config.kind == "add":
        return (
            "an addition puts the same vector into the residual stream at every position, "
            "which weights can only express as a bias on a residual-stream write; the "
            "supported pre-norm architectures (Llama, Qwen, Mistral) have none there. Apply "
            "the saved edit with refusal_lens.mitigation.apply_edit(model, Edit.load(...))."
        )
    return ""


def export_edit(model: ModelHandle, edit: Edit, out: str | Path) -> Export:
    """Write ``edit`` to ``out/edit`` and, when the weights can express it, the edited model
    to ``out/model``; ``out/export.json`` says which, and why not."""
    out = Path(out)
    edit.check(model)
    edit_dir = edit.save(out / EDIT_DIR)
    why = why_not_weights(edit)
    weights = None
    if not why:
        record = {"edit": edit.config.to_dict(), "label": edit.config.label()}
        try:
            weights = write_orthogonalized(
                model, edit.vectors, edit.weights, out / MODEL_DIR, record
            )
        except RefusalLensError as exc:
            why = str(exc).replace("Use the hook-based `ablate` instead.", HOOKS_INSTEAD)
    stale = out / MODEL_DIR
    if weights is None and (stale / MARKER).is_file():  # an earlier export's weights: ours
        shutil.rmtree(stale)
    write_json(
        out / EXPORT_FILE,
        {"edit": EDIT_DIR, "model": MODEL_DIR if weights else None, "why": why or None},
    )
    return Export(edit_dir, weights, why)
