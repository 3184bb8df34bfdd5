"""The search space of ``refusal-lens mitigate``: one Optuna parameter per dimension.

=================  ===========================================  ===========================
parameter          values                                       asked when
=================  ===========================================  ===========================
``kind``           ``ablate``, ``add``                          always
``directions``     ``w_prime``, ``r``, ``probe``,               kind = ablate
                   ``r+w_prime``, ``w_prime+probe``
``add_direction``  ``w_prime``, ``r``, ``probe``                kind = add
``lam``            λ ∈ [0, 1] of ``w′ = w − λ r̂ r̂ᵀ w``          w′ is used
``probe_layer``    1 … L − 1 (the geometry stage's layers)      the probe's normal is used
``where``          ``all`` layers, or a ``kernel``              kind = ablate
``peak``           α ∈ [0, 1], the share of the projection      kind = ablate
``centre``         [0, L − 1], the kernel's peak layer          where = kernel
``width``          [1, L], layers from the peak to zero         where = kernel
``layer``          0 … L − 1, where the vector is added         kind = add
``coef``           [−2, 0], times the direction as stored       kind = add
=================  ===========================================  ===========================

``r+w_prime`` and ``w_prime+probe`` ablate the plane the two span (``project_out``). What each
setting does is in :mod:`refusal_lens.mitigation.edits`.
"""

from __future__ import annotations

from typing import Any

from refusal_lens.mitigation.edits import KINDS, EditConfig

ABLATE_DIRECTIONS = ("w_prime", "r", "probe", "r+w_prime", "w_prime+probe")
ADD_DIRECTIONS = ("w_prime", "r", "probe")
COEF_RANGE = (-2.0, 0.0)


def suggest_edit(trial: Any, n_layers: int, kinds: tuple[str, ...] = KINDS) -> EditConfig:
    """The edit an Optuna ``trial`` proposes (parameters asked in a fixed order)."""
    kind = trial.suggest_categorical("kind", list(kinds))
    fields: dict[str, Any] = {"kind": kind}
    if kind == "ablate":
        directions = trial.suggest_categorical("directions", list(ABLATE_DIRECTIONS)).split("+")
        fields["where"] = trial.suggest_categorical("where", ["all", "kernel"])
        fields["peak"] = trial.suggest_float("peak", 0.0, 1.0)
        if fields["where"] == "kernel":
            fields["centre"] = trial.suggest_float("centre", 0.0, n_layers - 1.0)
            fields["width"] = trial.suggest_float("width", 1.0, float(n_layers))
    else:
        directions = [trial.suggest_categorical("add_direction", list(ADD_DIRECTIONS))]
        fields["layer"] = trial.suggest_int("layer", 0, n_layers - 1)
        fields["coef"] = trial.suggest_float("coef", *COEF_RANGE)
    if "w_prime" in directions:
        fields["lam"] = trial.suggest_float("lam", 0.0, 1.0)
    if "probe" in directions:
        fields["probe_layer"] = trial.suggest_int("probe_layer", 1, max(1, n_layers - 1))
    return EditConfig(directions=tuple(directions), **fields)


def wang_params(lam: float) -> dict[str, Any]:
    """The trial parameters of Wang et al.'s recipe: ablate w′ at λ fully, at every layer."""
    return {"kind": "ablate", "directions": "w_prime", "where": "all", "peak": 1.0, "lam": lam}


def wang_edit(lam: float) -> EditConfig:
    return EditConfig(directions=("w_prime",), lam=lam)


def arditi_edit() -> EditConfig:
    """Arditi et al.'s recipe: ablate r fully, at every layer."""
    return EditConfig(directions=("r",))
