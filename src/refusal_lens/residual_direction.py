"""The ``Direction`` value: a residual-stream vector with where it came from.

>>> r = Direction.load("runs/direction")
>>> (0.5 * r).norm, r.unit().norm            # arithmetic returns new Directions
>>> r.check(model)                           # clear error on a model of another width,
...                                          # ModelMismatchWarning on another model of this width
>>> Direction.load("runs/direction/direction.safetensors")   # the file alone: its metadata

A direction is immutable, finite and non-zero (checked on construction). ``layer`` and
``position`` say where it was read (the residual stream before block ``layer``, at negative
``position`` of the chat template); ``scores`` holds its selection scores and ``config`` the
settings that produced it. ``model`` is the local name of the model it was read from and
``base_model`` the model-hub id that model is or was derived from, when known.

``save`` writes ``direction.safetensors`` + ``direction.json``. The safetensors file describes
itself too: its metadata holds the layer, hook name, position, kind, model, base model,
d_model and refusal-lens version, so the file alone loads (``Direction.load(path)``), and
other tools can read where it applies. Exports to llama.cpp and steering libraries are in
:mod:`refusal_lens.directions.export`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.artifacts import (
    ARTIFACT_FORMAT,
    json_writer,
    load_safetensors,
    read_safetensors_header,
    safetensors_writer,
    save_artifact,
)
from refusal_lens.errors import ModelMismatchWarning, RefusalLensError

TENSOR_NAME = "direction"
ARTIFACT = "refusal-lens.direction"  # the ``artifact`` value in a direction file's metadata
_REMAKE = "make a new one with `refusal-lens direction MODEL --out DIR`."


@dataclass(frozen=True)
class Direction:
    """A direction in the residual stream of one model (see the module docstring)."""

    vector: Tensor  # [d_model]; checked by hand so that a wrong shape gets a clear error
    layer: int
    position: int
    model: str
    kind: str = "refusal"
    scores: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None  # the hub id of the model (or of the base it was aligned from)

    def __post_init__(self) -> None:
        v = self.vector
        if not isinstance(v, Tensor) or v.ndim != 1 or v.numel() == 0:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise RefusalLensError(
                f"A direction is a 1-D vector [d_model]; got {shape}. Pass one vector (index "
                "or squeeze the tensor)."
            )
        if not torch.isfinite(v).all():
            raise RefusalLensError(
                f"The {self.kind} direction has NaN or infinite entries; it cannot be used. "
                "Check the activations it was computed from (an empty prompt set gives NaN)."
            )
        if float(v.float().norm()) == 0.0:
            raise RefusalLensError(
                f"The {self.kind} direction has zero norm, so it defines no direction (e.g. the "
                "two prompt sets gave the same mean, or a direction was subtracted from itself). "
                "Extract it from prompt sets that differ, at a layer after 0."
            )
        object.__setattr__(self, "vector", v.detach().to("cpu", torch.float32))

    @property
    def d_model(self) -> int:
        return self.vector.shape[0]

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def unit(self) -> Direction:
        """The same direction with norm 1."""
        return replace(self, vector=self.vector / self.vector.norm())

    def unit_vector(self, device: Any = None, dtype: Any = None) -> Float[Tensor, " d_model"]:
        return (self.vector / self.vector.norm()).to(device=device, dtype=dtype)

    def cosine(self, other: Direction) -> float:
        self._same_width(other)
        return float(torch.nn.functional.cosine_similarity(self.vector, other.vector, dim=0))

    def orthogonalize(self, against: Direction, coef: float = 1.0) -> Direction:
        """``v − coef · r̂ r̂ᵀ v``: remove ``coef`` of this vector's component along ``against``."""
        self._same_width(against)
        r = against.vector / against.vector.norm()
        return replace(self, vector=self.vector - coef * (r @ self.vector) * r)

    # Arithmetic: new Directions that keep the left operand's layer, position and model.
    def __add__(self, other: Direction) -> Direction:
        self._same_width(other)
        return self._derived(self.vector + other.vector, f"{self.kind}+{other.kind}")

    def __sub__(self, other: Direction) -> Direction:
        self._same_width(other)
        return self._derived(self.vector - other.vector, f"{self.kind}-{other.kind}")

    def __mul__(self, coef: float | int) -> Direction:
        if not isinstance(coef, int | float):
            return NotImplemented
        return self._derived(self.vector * coef, self.kind)

    __rmul__ = __mul__

    def __truediv__(self, coef: float | int) -> Direction:
        return self * (1.0 / coef)

    def __neg__(self) -> Direction:
        return self * -1.0

    def _derived(self, vector: Tensor, kind: str) -> Direction:
        return replace(self, vector=vector, kind=kind, scores={})

    def _same_width(self, other: Direction) -> None:
        if not isinstance(other, Direction):
            raise RefusalLensError(f"Expected a Direction, got {type(other).__name__}.")
        if other.d_model != self.d_model:
            raise RefusalLensError(
                f"Directions of different widths: {self.d_model} ({self.model}) and "
                f"{other.d_model} ({other.model})."
            )

    def check(self, model: Any) -> None:
        """Raise a clear error unless this direction fits ``model`` (a ModelHandle)."""
        if self.d_model != model.d_model:
            raise RefusalLensError(
                f"This {self.kind} direction has d_model {self.d_model} (from {self.model}), but "
                f"{model.model_id} has d_model {model.d_model}. Extract a direction from this "
                "model with `refusal-lens direction`."
            )
        if not 0 <= self.layer < model.n_layers:
            raise RefusalLensError(
                f"This direction was read at layer {self.layer}, but {model.model_id} has layers "
                f"0..{model.n_layers - 1}; it comes from another model. Extract a direction "
                "from this model with `refusal-lens direction`."
            )
        self._warn_if_other_model(model)

    def _warn_if_other_model(self, model: Any) -> None:
        """Warn when ``model`` has none of this direction's model names. Names are compared
        normalized (no folder, cache key or quantization suffix; a bundled name and its hub id
        are one model), and an aligned organism counts as its base model too (its handle's
        ``hub_id`` is the base's, and its ``align.json`` names the base), so a base model's
        direction moves to its organism quietly."""
        from refusal_lens.models.names import base_specs, same_model

        spec = getattr(model, "spec", None)
        theirs = (model.model_id, spec, getattr(model, "hub_id", None), *base_specs(spec))
        if same_model((self.model, self.base_model), theirs):
            return
        ours = self.model + (f" ({self.base_model})" if self.base_model else "")
        hub = getattr(model, "hub_id", None)
        name = model.model_id + (f" ({hub})" if hub else "")
        warnings.warn(
            f"This {self.kind} direction was extracted from {ours} but is used on {name}. "
            f"Both have d_model {self.d_model}, so it runs, but a direction seldom carries "
            "over between models: extract one from this model with `refusal-lens direction`.",
            ModelMismatchWarning,
            stacklevel=3,
        )

    @property
    def hook(self) -> str:
        """The TransformerLens hook the direction was read at (``blocks.{layer}.hook_resid_pre``
        unless its config names another residual point)."""
        from refusal_lens.hooks import RESIDUAL_POINTS, hook_name

        point = self.config.get("hook", "resid_pre")
        return hook_name(self.layer, point if point in RESIDUAL_POINTS else "resid_pre")

    def metadata(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "position": self.position,
            "model": self.model,
            "base_model": self.base_model,
            "kind": self.kind,
            "d_model": self.d_model,
            "norm": self.norm,
            "scores": self.scores,
            "config": self.config,
        }

    def file_metadata(self) -> dict[str, str]:
        """The safetensors metadata (strings only) that makes ``direction.safetensors`` readable
        without its JSON sidecar: where the vector was read and from which model."""
        from refusal_lens import __version__

        meta = {
            "artifact": ARTIFACT,
            "format": str(ARTIFACT_FORMAT),
            "tensor": TENSOR_NAME,
            "layer": str(self.layer),
            "hook": self.hook,
            "position": str(self.position),
            "kind": self.kind,
            "model": self.model,
            "d_model": str(self.d_model),
            "refusal_lens_version": __version__,
        }
        return meta | ({"base_model": self.base_model} if self.base_model else {})

    def save(self, out: str | Path) -> Path:
        """Write ``direction.safetensors`` (with :meth:`file_metadata`) and ``direction.json``
        into folder ``out`` (both or neither; other files in ``out``, such as selection
        reports, are kept)."""
        files = {
            f"{TENSOR_NAME}.safetensors": safetensors_writer(
                {TENSOR_NAME: self.vector}, self.file_metadata()
            ),
            f"{TENSOR_NAME}.json": json_writer(self.metadata()),
        }
        return save_artifact(out, files)

    @classmethod
    def load(cls, path: str | Path) -> Direction:
        """Read a direction saved by :meth:`save`: its folder, or its ``.safetensors`` file.

        The JSON sidecar is read when it is there (scores and config included); without it the
        file's own metadata says where the vector applies (scores and config are then empty).
        Files saved before the metadata existed need their sidecar.
        """
        tensor_path, meta_path = _direction_files(Path(path))
        fix = f"save it again, or {_REMAKE}"
        tensors = load_safetensors(tensor_path, fix)
        header = read_safetensors_header(tensor_path, fix)[0].get("__metadata__") or {}
        if not meta_path.is_file() and header.get("artifact") != ARTIFACT:
            raise RefusalLensError(
                f"{tensor_path} has no {meta_path.name} beside it and no refusal-lens metadata "
                "inside (written by another tool, or by a refusal-lens older than the "
                "metadata), so where it applies is unknown. Put its "
                f"{meta_path.name} back beside it, or {_REMAKE}"
            )
        where = meta_path if meta_path.is_file() else tensor_path
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else header
            fields = _sidecar_fields(meta)
            vector = tensors[header.get("tensor", TENSOR_NAME)]
        except (ValueError, TypeError, KeyError) as exc:  # JSON errors are ValueErrors
            raise RefusalLensError(
                f"{where} does not hold a readable direction ({type(exc).__name__}: {exc}); "
                f"its files were edited or damaged: {fix}"
            ) from None
        return cls(vector, **fields)


def _direction_files(path: Path) -> tuple[Path, Path]:
    """``(tensor file, JSON sidecar)`` of a saved direction given its folder or tensor file."""
    if path.is_file() and path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    tensor_path = path / f"{TENSOR_NAME}.safetensors"
    if not tensor_path.is_file():
        raise RefusalLensError(
            f"{path} is not a saved direction (it needs {tensor_path.name}, and "
            f"{TENSOR_NAME}.json unless the file was saved with its metadata); make one with "
            "`refusal-lens direction MODEL --out DIR`."
        )
    return tensor_path, path / f"{TENSOR_NAME}.json"


def _sidecar_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """Constructor fields from ``direction.json`` or the file metadata (numbers as strings)."""
    fields = dict(layer=int(meta["layer"]), position=int(meta["position"]), model=meta["model"])
    fields |= {k: meta[k] for k in ("kind", "scores", "config", "base_model") if k in meta}
    return fields
