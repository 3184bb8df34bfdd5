"""The ``Direction`` value: a residual-stream vector with where it came from.

>>> r = Direction.load("runs/direction")
>>> (0.5 * r).norm, r.unit().norm            # arithmetic returns new Directions
>>> r.check(model)                           # clear error on a model of another width

A direction is immutable, finite and non-zero (checked on construction). ``layer`` and
``position`` say where it was read (the residual stream before block ``layer``, at negative
``position`` of the chat template); ``scores`` holds its selection scores and ``config`` the
settings that produced it. ``save`` writes ``direction.safetensors`` + ``direction.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.artifacts import json_writer, load_safetensors, safetensors_writer, save_artifact
from refusal_lens.errors import RefusalLensError

TENSOR_NAME = "direction"


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

    def metadata(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "position": self.position,
            "model": self.model,
            "kind": self.kind,
            "d_model": self.d_model,
            "norm": self.norm,
            "scores": self.scores,
            "config": self.config,
        }

    def save(self, out: str | Path) -> Path:
        """Write ``direction.safetensors`` and ``direction.json`` into folder ``out`` (both or
        neither; other files in ``out``, such as selection reports, are kept)."""
        files = {
            f"{TENSOR_NAME}.safetensors": safetensors_writer({TENSOR_NAME: self.vector}),
            f"{TENSOR_NAME}.json": json_writer(self.metadata()),
        }
        return save_artifact(out, files)

    @classmethod
    def load(cls, folder: str | Path) -> Direction:
        """Read a direction saved by :meth:`save`."""
        folder = Path(folder)
        meta_path, tensor_path = (folder / f"{TENSOR_NAME}{s}" for s in (".json", ".safetensors"))
        if not (meta_path.is_file() and tensor_path.is_file()):
            raise RefusalLensError(
                f"{folder} is not a saved direction (it needs {meta_path.name} and "
                f"{tensor_path.name}); make one with `refusal-lens direction MODEL --out DIR`."
            )
        fix = "save it again, or make a new one with `refusal-lens direction MODEL --out DIR`."
        tensors = load_safetensors(tensor_path, fix)
        try:
            meta = json.loads(meta_path.read_text())
            fields = dict(
                layer=int(meta["layer"]), position=int(meta["position"]), model=meta["model"]
            )
            fields |= {k: meta[k] for k in ("kind", "scores", "config") if k in meta}
            vector = tensors[TENSOR_NAME]
        except (ValueError, TypeError, KeyError) as exc:  # JSON errors are ValueErrors
            raise RefusalLensError(
                f"{folder} does not hold a readable direction ({type(exc).__name__}: {exc}); "
                f"its files were edited or damaged: {fix}"
            ) from None
        return cls(vector, **fields)
