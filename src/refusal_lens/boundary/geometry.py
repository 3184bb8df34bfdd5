"""The safety decision boundary, layer by layer (paper 1's picture of over-refusal).

At every layer ``ℓ`` the residual stream at one template position (``resid_pre``, the last
token by default) of three prompt sets, harmful, harmless and borderline, is read once, and:

- **projection** ``x · r̂_ℓ`` on the refusal direction: a given :class:`Direction` (its unit
  vector at every layer) or, by default, the layer's own difference of means
  ``mean(harmful_train) − mean(harmless_train)``;
- **probe**: a logistic probe harmful vs harmless (:func:`refusal_lens.probes.fit_probe`) fitted
  on a seeded ``1 − val_frac`` split of each class, with its accuracy on the held-out rest;
- **margin**: each prompt's signed distance to the probe's hyperplane,
  ``d(x) = logit(x) / ‖w‖`` in residual units (``w`` the probe's normal in raw coordinates),
  divided by half the gap between the two training classes' mean distances, so that at
  every layer the harmless training mean sits near −1, the harmful near +1 and the boundary
  at 0. Positive = harmful side;
- **2-D view**: ``(x − μ) · r̂_ℓ`` against the top principal component of what is left after
  removing that projection (``μ`` the mean of all prompts). The boundary drawn there is the
  trace of the probe's hyperplane in that plane through ``μ``; a point's margin is the full
  distance, which also counts the dimensions the plane does not show.

Borderline prompts are split by whether the model refuses them: refusal score above the
model's threshold unless the caller passes its own ``refused`` flags (e.g. from a generation judge).

>>> geo = boundary_geometry(model, harmful, harmless, borderline)
>>> geo.summary()[20]["borderline_harmful_share"], geo.save("runs/geometry")

Saved as ``geometry.safetensors`` (every tensor) and ``geometry.json`` (kind, format, config,
texts, summary); :meth:`Geometry.load` reads them back.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from refusal_lens.activations import HOOK_POINTS, TENSOR_NAME, CollectConfig, collect_residuals
from refusal_lens.artifacts import (
    artifact_meta,
    load_tensor_artifact,
    save_tensor_artifact,
)
from refusal_lens.boundary.rows import (
    Rows,
    labelled_chunks,
    mean_rows,
    split_by_layer,
    top_eigenvector,
)
from refusal_lens.configs import StageConfig
from refusal_lens.errors import RefusalLensError
from refusal_lens.models import ModelHandle
from refusal_lens.probes import MIN_PER_CLASS, LinearProbe, auroc, fit_probe_chunks
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import refusal_scores
from refusal_lens.verdicts import refused_by_score

SETS = ("harmful", "harmless", "borderline")
KIND = "geometry"
TENSORS_NAME = "geometry.safetensors"  # projections, margins, views, accuracy, lines, flags
META_NAME = "geometry.json"  # kind, format, config, model, layers, texts, direction, summary
TENSOR_GROUPS = ("projection", "margin", "view")  # per prompt set, saved as "<group>.<set>"


def check_field(config: object, name: str, ok: bool, allowed: str, fix: str) -> None:
    """Raise :class:`RefusalLensError` naming ``config``'s field ``name``, the values it
    allows and how to fix it, unless ``ok``."""
    if not ok:
        value = getattr(config, name)
        raise RefusalLensError(
            f"{type(config).__name__}.{name} must be {allowed}, not {value!r}; {fix}."
        )


@dataclass(frozen=True)
class GeometryConfig(StageConfig):
    """What to read and how to fit; saved with every geometry artifact."""

    layers: tuple[int, ...] | None = None  # None = every layer from 1 (layer 0's last token
    # has seen no other token, so it is the same vector for every prompt)
    position: int = -1  # template position, counted back from the last token (-1)
    hook: str = "resid_pre"  # one of activations.HOOK_POINTS
    val_frac: float = 0.25  # held-out share of each class for the probe's accuracy
    l2: float = 1e-2  # L2 penalty of the logistic probe
    seed: int = 0  # of the held-out split (plus the layer)
    batch_size: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        super().__post_init__()

    def validate(self) -> None:
        layers = self.layers
        check_field(
            self,
            "layers",
            layers is None
            or (isinstance(layers, tuple) and bool(layers) and all(i >= 0 for i in layers)),
            "None (every layer from 1) or a non-empty tuple of layer indices >= 0",
            "give e.g. (4, 8, 16) or leave it None",
        )
        check_field(
            self, "position", self.position < 0, "negative", "-1 is the last template token"
        )
        check_field(
            self, "hook", self.hook in HOOK_POINTS, f"one of {HOOK_POINTS}", "use resid_pre"
        )
        check_field(
            self,
            "val_frac",
            0 < self.val_frac < 1,
            "in (0, 1) (exclusive)",
            "it is the share of each class held out, e.g. 0.25",
        )
        check_field(
            self,
            "l2",
            self.l2 >= 0 and math.isfinite(self.l2),
            "a finite number >= 0",
            "use 0 for no penalty or e.g. 1e-2",
        )
        check_field(self, "batch_size", self.batch_size >= 1, ">= 1", "e.g. 16")


@dataclass
class LayerBoundary:
    """One layer's probe and the frame of its 2-D view."""

    layer: int
    probe: LinearProbe
    accuracy: float  # held-out, harmful vs harmless
    scale: float  # residual units per margin unit
    direction: Float[Tensor, " d_model"]  # unit refusal direction r̂
    pc: Float[Tensor, " d_model"]  # unit top PC of the rest
    origin: Float[Tensor, " d_model"]  # μ, the view's origin

    def distance(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, " n"]:
        """Signed distance to the hyperplane in residual units (positive = harmful side)."""
        return self.probe.logits(x) / self.probe.direction().norm()

    def margin(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, " n"]:
        return self.distance(x) / self.scale

    def view(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n 2"]:
        centered = x.float() - self.origin
        return torch.stack([centered @ self.direction, centered @ self.pc], dim=-1)

    def line(self) -> tuple[float, float, float]:
        """``(A, B, C)`` with ``A·u + B·v + C = 0`` the boundary's trace in the view."""
        w = self.probe.direction()
        c = float(self.probe.logits(self.origin[None])[0])
        return float(w @ self.direction), float(w @ self.pc), c


@dataclass
class Geometry:
    """Per-layer projections, margins and views of every prompt set."""

    layers: list[int]
    texts: dict[str, list[str]]
    projection: dict[str, Float[Tensor, "n layer"]]
    margin: dict[str, Float[Tensor, "n layer"]]
    view: dict[str, Float[Tensor, "n layer 2"]]
    accuracy: Float[Tensor, " layer"]
    lines: Float[Tensor, "layer 3"]
    refused: Bool[Tensor, " n_borderline"]
    refusal_score: Float[Tensor, " n_borderline"]
    config: GeometryConfig
    model: str = ""
    direction: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """Per layer: probe accuracy, where the borderline prompts sit, split by refusal."""
        rows = []
        m = self.margin["borderline"]
        for i, layer in enumerate(self.layers):
            col = m[:, i]
            ref, ans = col[self.refused], col[~self.refused]
            rows.append(
                {
                    "layer": layer,
                    "probe_accuracy": float(self.accuracy[i]),
                    "borderline_harmful_share": float((col > 0).float().mean()),
                    "refused_harmful_share": _share(ref > 0),
                    "answered_harmful_share": _share(ans > 0),
                    "refused_margin_median": _median(ref),
                    "answered_margin_median": _median(ans),
                    "margin_auroc_refused": auroc(ref, ans),
                    **{
                        f"projection_mean_{name}": float(p[:, i].mean())
                        for name, p in self.projection.items()
                    },
                }
            )
        return rows

    def layer_index(self, layer: int) -> int:
        if layer not in self.layers:
            raise RefusalLensError(f"Layer {layer} was not read; this geometry has {self.layers}.")
        return self.layers.index(layer)

    def save(self, folder: str | Path) -> Path:
        """Write ``geometry.safetensors`` (every tensor) and ``geometry.json`` (kind, format,
        config, texts, summary) into ``folder``; other files there are kept."""

        tensors = {"accuracy": self.accuracy, "lines": self.lines}
        tensors |= {"refused": self.refused.to(torch.uint8), "refusal_score": self.refusal_score}
        for group in TENSOR_GROUPS:
            tensors |= {f"{group}.{k}": v for k, v in getattr(self, group).items()}
        tensors = {k: v.float().contiguous() for k, v in tensors.items()}
        meta = artifact_meta(
            KIND,
            self.config,
            model=self.model,
            layers=self.layers,
            texts=self.texts,
            direction=self.direction,
            summary=self.summary(),
        )
        return save_tensor_artifact(folder, (TENSORS_NAME, META_NAME), tensors, meta)

    @classmethod
    def load(cls, folder: str | Path) -> Geometry:
        """Read a geometry written by :meth:`save`."""
        fix = "save the geometry again (`refusal-lens geometry`)."
        meta, t = load_tensor_artifact(folder, (TENSORS_NAME, META_NAME), KIND, fix)
        per_set = {g: {k: t[f"{g}.{k}"] for k in meta["texts"]} for g in TENSOR_GROUPS}
        return cls(
            layers=meta["layers"],
            texts=meta["texts"],
            **per_set,
            accuracy=t["accuracy"],
            lines=t["lines"],
            refused=t["refused"].bool(),
            refusal_score=t["refusal_score"],
            config=GeometryConfig.from_dict(meta["config"]),
            model=meta["model"],
            direction=meta["direction"],
        )


def _share(flags: Tensor) -> float | None:
    return float(flags.float().mean()) if flags.numel() else None


def _median(x: Tensor) -> float | None:
    return float(x.median()) if x.numel() else None


def heldout_split(n: int, val_frac: float, generator: torch.Generator) -> Bool[Tensor, " n"]:
    """A seeded mask of ``round(val_frac · n)`` held-out rows (at least one)."""
    val = torch.zeros(n, dtype=torch.bool)
    val[torch.randperm(n, generator=generator)[: max(1, round(val_frac * n))]] = True
    return val


def fit_layer(
    harmful: Float[Tensor, "n_h d"],
    harmless: Float[Tensor, "n_b d"],
    everything: Float[Tensor, "n d"],
    layer: int,
    direction: Float[Tensor, " d"] | None,
    config: GeometryConfig,
) -> LayerBoundary:
    """One layer's boundary from its training rows; ``everything`` fixes the view's frame."""
    sets = (Rows.of(harmful), Rows.of(harmless), [Rows.of(everything)])
    return fit_rows(*sets, layer, direction, config)


def fit_rows(
    harmful: Rows,
    harmless: Rows,
    everything: Sequence[Rows],
    layer: int,
    direction: Float[Tensor, " d"] | None,
    config: GeometryConfig,
) -> LayerBoundary:
    """:func:`fit_layer` reading each set a chunk at a time: memory holds one chunk and
    ``[d_model, d_model]`` moments, whatever the number of prompts. The view's frame comes
    from the rows of every set in ``everything``."""
    gen = torch.Generator().manual_seed(config.seed + layer)
    val_h, val_b = (heldout_split(x.n, config.val_frac, gen) for x in (harmful, harmless))
    train = [(harmful, ~val_h, True), (harmless, ~val_b, False)]
    probe = fit_probe_chunks(lambda: labelled_chunks(train), l2=config.l2)
    held_out = labelled_chunks([(harmful, val_h, True), (harmless, val_b, False)])
    accuracy = sum(int((probe.predict(x) == y).sum()) for x, y in held_out)
    accuracy /= int(val_h.sum() + val_b.sum())
    between = (mean_rows([(harmful, ~val_h)]) - mean_rows([(harmless, ~val_b)])).float()
    direction = between if direction is None else direction
    r = direction.float() / direction.float().norm().clamp(min=1e-12)
    frame = [(rows, None) for rows in everything]
    origin = mean_rows(frame)
    # the view's second axis: the first principal component of the centred rows less their r
    # component, from the [d, d] second moments (the same as an SVD of the rows)
    centred = (x.double() - origin for part, _ in frame for x in part.chunks())
    moments = sum(x.T @ x for x in centred)
    keep = torch.eye(len(r), dtype=torch.float64) - torch.outer(r, r).double()
    w = probe.direction()
    scale = abs(float(between @ w / w.norm() / 2)) or 1.0
    pc = top_eigenvector(keep @ moments @ keep)
    return LayerBoundary(layer, probe, accuracy, scale, r, pc, origin.float())


def layer_list(model: ModelHandle, config: GeometryConfig) -> list[int]:
    """The layers ``config`` reads: its own, or every layer from 1."""
    return list(config.layers) if config.layers else list(range(1, model.n_layers))


def read_layers(
    model: ModelHandle,
    prompts: PromptSet | list[str],
    config: GeometryConfig,
    out: Path | None = None,
) -> Float[Tensor, "n layer d_model"]:
    """The residual stream of ``prompts`` at the geometry's layers and position; with ``out``
    (a folder) they are streamed there as a residuals artifact as they are computed."""
    collect = CollectConfig(
        layers=tuple(layer_list(model, config)),
        positions=(config.position,),
        hook=config.hook,
        batch_size=config.batch_size,
    )
    res = collect_residuals(model, prompts, collect, out=out, show_progress=False)
    return torch.as_tensor(res.acts[:, :, 0]).float()


def stream_layers(
    model: ModelHandle, prompts: PromptSet, config: GeometryConfig, folder: Path, out: Path | None
) -> list[Rows]:
    """:func:`read_layers` without holding the rows: streamed to ``out`` (a residuals
    artifact; default: inside ``folder``, removed after), then split into one float32 file per
    layer in ``folder`` (``[n, d_model]``, in the prompts' order), a chunk at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    source = out or folder / "all"
    read_layers(model, prompts, config, source)  # memory-mapped, unread
    rows = split_by_layer(source / f"{TENSOR_NAME}.safetensors", TENSOR_NAME, folder)
    if out is None:
        shutil.rmtree(source)
    return rows


def place(boundary: LayerBoundary, rows: Rows) -> dict[str, Tensor]:
    """Every row's projection, margin and view at ``boundary``'s layer, a chunk at a time."""
    parts: dict[str, list[Tensor]] = {group: [] for group in TENSOR_GROUPS}
    for x in rows.chunks():
        parts["projection"].append(x @ boundary.direction)
        parts["margin"].append(boundary.margin(x))
        parts["view"].append(boundary.view(x))
    return {group: torch.cat(values) for group, values in parts.items()}


def check_sets(
    harmful: PromptSet,
    harmless: PromptSet,
    borderline: PromptSet,
    config: GeometryConfig,
    refused: Sequence[bool] | None,
) -> None:
    """Enough prompts per class for the probe, a borderline set, one flag per prompt."""
    n_val = lambda n: max(1, round(config.val_frac * n))  # noqa: E731
    needed = next(n for n in range(MIN_PER_CLASS, 10**6) if n - n_val(n) >= MIN_PER_CLASS)
    for name, ps in (("harmful", harmful), ("harmless", harmless)):
        if len(ps) < needed:
            raise RefusalLensError(
                f"The {name} set has {len(ps)} prompts; the probe needs at least "
                f"{MIN_PER_CLASS} training prompts per class plus {config.val_frac:.0%} held "
                f"out, so give at least {needed} per class."
            )
    if len(borderline) == 0:
        raise RefusalLensError("The borderline set is empty; give at least one prompt.")
    if refused is not None and len(refused) != len(borderline):
        raise RefusalLensError(
            f"refused has {len(refused)} flags for {len(borderline)} borderline prompts."
        )


def refusal_flags(
    model: ModelHandle,
    borderline: PromptSet,
    config: GeometryConfig,
    refused: Sequence[bool] | None,
) -> tuple[Bool[Tensor, " n"], Float[Tensor, " n"]]:
    """The borderline prompts' refusal flags and scores: score above the model's threshold
    (:func:`~refusal_lens.verdicts.refused_by_score`), or the caller's flags (scores NaN)."""
    if refused is not None:
        flags = torch.tensor(list(refused), dtype=torch.bool)
        return flags, torch.full((len(borderline),), float("nan"))
    scores = refusal_scores(model, borderline, config.batch_size, show_progress=False)
    return refused_by_score(scores, model.refusal_threshold), scores


def boundary_geometry(
    model: ModelHandle,
    harmful: PromptSet,
    harmless: PromptSet,
    borderline: PromptSet,
    direction: Direction | None = None,
    config: GeometryConfig | None = None,
    refused: Sequence[bool] | None = None,
    residuals_out: str | Path | None = None,
) -> Geometry:
    """Read the three sets at every layer and place each prompt relative to the boundary.

    With ``residuals_out`` (a folder), the residuals read are kept there, one residuals
    artifact per set (``harmful/``, ``harmless/``, ``borderline/``), streamed as computed.
    Either way they are read back from disk a chunk at a time (one file per layer in a
    temporary folder, ``$TMPDIR``), so memory does not grow with the number of prompts beyond
    the per-prompt results (a few numbers per prompt and layer)."""
    config = config or GeometryConfig()
    check_sets(harmful, harmless, borderline, config, refused)
    if direction is not None:
        direction.check(model)
    sets = {"harmful": harmful, "harmless": harmless, "borderline": borderline}
    keep = None if residuals_out is None else Path(residuals_out)
    layers = layer_list(model, config)
    vector = None if direction is None else direction.vector
    placed: dict[str, dict[str, list[Tensor]]] = {g: {k: [] for k in sets} for g in TENSOR_GROUPS}
    boundaries = []
    with tempfile.TemporaryDirectory(prefix="refusal-lens-geometry-") as tmp:
        rows = {
            name: stream_layers(model, ps, config, Path(tmp) / name, keep / name if keep else None)
            for name, ps in sets.items()
        }
        for i, layer in enumerate(layers):
            at = {name: r[i] for name, r in rows.items()}
            b = fit_rows(at["harmful"], at["harmless"], list(at.values()), layer, vector, config)
            boundaries.append(b)
            for name, r in at.items():
                for group, values in place(b, r).items():
                    placed[group][name].append(values)
    flags, scores = refusal_flags(model, borderline, config, refused)
    per_layer = {
        group: {name: torch.stack(v, dim=1) for name, v in by_set.items()}
        for group, by_set in placed.items()
    }
    return Geometry(
        layers=layers,
        texts={name: ps.texts for name, ps in sets.items()},
        **per_layer,
        accuracy=torch.tensor([b.accuracy for b in boundaries]),
        lines=torch.tensor([b.line() for b in boundaries]),
        refused=flags,
        refusal_score=scores,
        config=config,
        model=model.model_id,
        direction=direction.metadata() if direction is not None else {"kind": "per-layer"},
    )


def layer_boundary(
    model: ModelHandle,
    harmful: PromptSet,
    harmless: PromptSet,
    layer: int,
    direction: Direction | None = None,
    config: GeometryConfig | None = None,
) -> LayerBoundary:
    """The boundary at one layer alone (what RASS selects against)."""
    config = (config or GeometryConfig()).replace(layers=(layer,))
    h, b = (read_layers(model, ps, config)[:, 0] for ps in (harmful, harmless))
    vector = None if direction is None else direction.vector
    return fit_layer(h, b, torch.cat([h, b]), layer, vector, config)
