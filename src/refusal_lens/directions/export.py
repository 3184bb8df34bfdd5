"""Export a direction to tools outside refusal-lens: llama.cpp and the steering-vectors library.

>>> r = Direction.load("runs/smollm2-135m/direction")
>>> export_gguf(r, "refusal.gguf", scale=-1.0)             # llama.cpp / repeng control vector
>>> export_steering_vectors(r, "refusal.pt", layers=range(8, 12))

Both formats add ``scale · vector`` (the saved vector, not normalized: ``scale=1`` is what
``refusal-lens steer --add 1`` adds; a negative scale pushes away from refusal) to the
residual stream at every token, at the direction's own layer or at every layer in ``layers``.

**Layer mapping.** A refusal-lens ``layer`` ℓ is the residual stream *before* block ℓ
(``blocks.ℓ.hook_resid_pre``), which is the *output* of decoder block ℓ − 1. Both targets add
their vector to the output of a decoder block, numbered from 0 like ``model.layers``:

- llama.cpp's control vector tensor ``direction.N`` is added to the output of block ``N``
  (its loader puts ``direction.N`` in ``cvec.tensors[N]``, which the graph adds after block
  ``N``; ``direction.0`` is rejected). So ℓ is written as ``direction.{ℓ-1}`` and ℓ ≥ 2.
- steering-vectors' ``SteeringVector.layer_activations[K]`` is added by a forward hook on
  decoder block ``K``'s output, so ℓ is key ``ℓ - 1`` and ℓ ≥ 1.

ℓ = 0 (the embeddings) has no block before it and cannot be exported to either.

**Loading the files.**

- llama.cpp: ``llama-cli -m MODEL.gguf --control-vector refusal.gguf`` (or
  ``--control-vector-scaled refusal.gguf 0.5`` for another strength;
  ``--control-vector-layer-range`` takes llama.cpp's block numbers, i.e. ℓ − 1). repeng reads
  the same file: ``ControlVector.import_gguf("refusal.gguf")``.
- steering-vectors: ``SteeringVector(**torch.load("refusal.pt", weights_only=True))``, then
  ``with vector.apply(hf_model): ...``. The file is a dict holding exactly that class's two
  fields, ``layer_activations`` ({block: tensor [d_model]}) and ``layer_type``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from refusal_lens.artifacts import atomic_path
from refusal_lens.errors import RefusalLensError
from refusal_lens.residual_direction import Direction

GGUF_ARCH = "controlvector"
# what each format calls the first layer it can steer (in refusal-lens layers)
FIRST_LAYER = {"gguf": 2, "steering-vectors": 1}
FORMATS = tuple(FIRST_LAYER)


def block_index(layer: int) -> int:
    """The decoder block whose output is the residual stream before block ``layer``."""
    return layer - 1


def export_layers(direction: Direction, layers: Iterable[int] | None, fmt: str) -> list[int]:
    """The refusal-lens layers to export (default: the direction's own), sorted and checked
    against what format ``fmt`` can steer."""
    chosen = sorted({direction.layer} if layers is None else {int(x) for x in layers})
    if not chosen:
        raise RefusalLensError("No layers to export; pass at least one layer (e.g. --layers 8).")
    first = FIRST_LAYER[fmt]
    bad = [x for x in chosen if x < first]
    if bad:
        why = "the embeddings (layer 0) have no block before them"
        if fmt == "gguf":
            why += ", and llama.cpp never steers the output of block 0 (layer 1)"
        raise RefusalLensError(
            f"Cannot export layers {bad} as {fmt}: {why}. Export layers ≥ {first}."
        )
    return chosen


def scaled_vectors(
    direction: Direction, layers: list[int], scale: float
) -> dict[int, Float[Tensor, " d_model"]]:
    """``{decoder block: scale · vector}`` for each refusal-lens layer in ``layers``."""
    if not math.isfinite(scale) or scale == 0:
        raise RefusalLensError(
            f"The scale must be a finite, non-zero number, not {scale}; 1 adds the direction "
            "as saved, -1 subtracts it."
        )
    return {block_index(x): direction.vector * scale for x in layers}


def export_gguf(
    direction: Direction,
    out: str | Path,
    layers: Iterable[int] | None = None,
    scale: float = 1.0,
    model_hint: str | None = None,
) -> Path:
    """Write a llama.cpp control vector (``general.architecture = controlvector``): tensors
    ``direction.{ℓ-1}`` (float32 [d_model]) for each layer ℓ, ``controlvector.model_hint``
    (default: the direction's hub id, else its model) and ``controlvector.layer_count``, plus
    ``refusal_lens.*`` keys saying where the vector came from (llama.cpp ignores them)."""
    from gguf import GGUFWriter

    from refusal_lens import __version__

    chosen = export_layers(direction, layers, "gguf")
    vectors = scaled_vectors(direction, chosen, scale)
    out = Path(out)
    with atomic_path(out) as tmp:
        writer = GGUFWriter(tmp, arch=GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", model_hint or _hint(direction))
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(vectors))
        for key, value in _provenance(direction, chosen, scale, __version__).items():
            add = writer.add_string if isinstance(value, str) else writer.add_float32
            add(f"refusal_lens.{key}", value)
        for block, vector in vectors.items():
            writer.add_tensor(f"direction.{block}", vector.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def export_steering_vectors(
    direction: Direction,
    out: str | Path,
    layers: Iterable[int] | None = None,
    scale: float = 1.0,
) -> Path:
    """Write the fields of a steering-vectors ``SteeringVector`` with ``torch.save``:
    ``{"layer_activations": {ℓ-1: scale · vector}, "layer_type": "decoder_block"}``."""
    chosen = export_layers(direction, layers, "steering-vectors")
    data = {
        "layer_activations": scaled_vectors(direction, chosen, scale),
        "layer_type": "decoder_block",
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(data, tmp)
    return out


EXPORTERS: dict[str, Callable[..., Path]] = {
    "gguf": export_gguf,
    "steering-vectors": export_steering_vectors,
}


def export_direction(
    direction: Direction,
    out: str | Path,
    fmt: str,
    layers: Iterable[int] | None = None,
    scale: float = 1.0,
) -> Path:
    """Export ``direction`` as ``fmt`` (one of :data:`FORMATS`) to file ``out``."""
    if fmt not in EXPORTERS:
        raise RefusalLensError(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
    return EXPORTERS[fmt](direction, out, layers=layers, scale=scale)


def read_gguf(path: str | Path) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """A control-vector GGUF read back: ``({refusal-lens layer ℓ: vector}, {key: value})``
    (tensor ``direction.N`` is layer ``N + 1``; values of the metadata keys as Python
    values). For checking an export, or reading one made by llama.cpp or repeng."""
    from gguf import GGUFReader

    reader = GGUFReader(Path(path))
    meta = {name: field.contents() for name, field in reader.fields.items()}
    if meta.get("general.architecture") != GGUF_ARCH:
        raise RefusalLensError(
            f"{path} is not a control vector (general.architecture is "
            f"{meta.get('general.architecture')!r}, not {GGUF_ARCH!r})."
        )
    vectors = {
        int(t.name.split(".", 1)[1]) + 1: np.array(t.data, dtype=np.float32)
        for t in reader.tensors
        if t.name.startswith("direction.")
    }
    return vectors, meta


def _hint(direction: Direction) -> str:
    return direction.base_model or direction.model


def _provenance(
    direction: Direction, layers: list[int], scale: float, version: str
) -> dict[str, str | float]:
    """The ``refusal_lens.*`` keys of a GGUF export (strings and one float)."""
    return {
        "model": direction.model,
        "base_model": direction.base_model or "",
        "kind": direction.kind,
        "hook": direction.hook,
        "layer": str(direction.layer),
        "position": str(direction.position),
        "layers": ",".join(map(str, layers)),
        "scale": float(scale),
        "version": version,
    }
