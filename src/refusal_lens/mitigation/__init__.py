"""Mitigation by search: the residual-stream edit that removes over-refusal and keeps refusal.

>>> vectors = Vectors.build(model, r, w, harmful, harmless)
>>> objective = Objective(model, ValidationSets(benign, harmful_sets, plain))
>>> result = search_edits(objective, vectors, SearchConfig(trials=60, seed=0))
>>> edit = resolve(EditConfig.from_dict(result.best()["edit"]), vectors)
>>> with apply_edit(model, edit):
...     completions = generate(model, prompts)
>>> export_edit(model, edit, "out/")          # out/edit (always), out/model (weights)
"""

from refusal_lens.mitigation.edits import Edit, EditConfig, apply_edit, resolve
from refusal_lens.mitigation.export import Export, export_edit
from refusal_lens.mitigation.objective import Measured, Objective, ValidationSets
from refusal_lens.mitigation.search import SearchConfig, SearchResult, search_edits
from refusal_lens.mitigation.vectors import Vectors

__all__ = [
    "Edit",
    "EditConfig",
    "Export",
    "Measured",
    "Objective",
    "SearchConfig",
    "SearchResult",
    "ValidationSets",
    "Vectors",
    "apply_edit",
    "export_edit",
    "resolve",
    "search_edits",
]
