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

from refusal_lens.artifacts import atomic_path, write_json
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
            raise RefusalLensError(f"A direction is a 1-D vector [d_model]; got {shape}.")
        if not torch.isfinite(v).all():
            raise RefusalLensError(
                f"The {self.kind} direction has NaN or infinite entries; it cannot be used. "
                "Check the activations it was computed from (an empty prompt set gives NaN)."
            )
        if float(v.float().norm()) == 0.0:
            raise RefusalLensError(
                f"The {self.kind} direction has zero norm, so it defines no direction (e.g. the "
                "two prompt sets gave the same mean, or a direction was subtracted from itself)."
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
                f"0..{model.n_layers - 1}."
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
        """Write ``direction.safetensors`` and ``direction.json`` into folder ``out`` (each
        file atomically; other files in ``out``, such as selection reports, are kept)."""
        from safetensors.torch import save_file

        out = Path(out)
        with atomic_path(out / f"{TENSOR_NAME}.safetensors") as tmp:
            save_file({TENSOR_NAME: self.vector.contiguous()}, tmp)
        write_json(out / f"{TENSOR_NAME}.json", self.metadata())
        return out

    @classmethod
    def load(cls, folder: str | Path) -> Direction:
        """Read a direction saved by :meth:`save`."""
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path, tensor_path = (folder / f"{TENSOR_NAME}{s}" for s in (".json", ".safetensors"))
        if not (meta_path.is_file() and tensor_path.is_file()):
            raise RefusalLensError(
                f"{folder} is not a saved direction (it needs {meta_path.name} and "
                f"{tensor_path.name}); make one with `refusal-lens direction MODEL --out DIR`."
            )
        meta = json.loads(meta_path.read_text())
        return cls(
            load_file(tensor_path)[TENSOR_NAME],
            layer=int(meta["layer"]),
            position=int(meta["position"]),
            model=meta["model"],
            kind=meta.get("kind", "refusal"),
            scores=meta.get("scores", {}),
            config=meta.get("config", {}),
        )
