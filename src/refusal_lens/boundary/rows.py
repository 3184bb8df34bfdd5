"""Rows of residuals read a chunk at a time, so the geometry's memory stays flat in N.

:class:`Rows` is one prompt set's residuals at one layer, ``[n, d_model]``, held as a tensor or
as a float32 file; :func:`split_by_layer` turns a streamed residuals artifact
``[n, layer, 1, d_model]`` into one such file per layer; the reductions here (means, labelled
chunks for the probe, the top eigenvector of a moment matrix) read :data:`CHUNK` rows at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from refusal_lens.artifacts import read_safetensors_header

CHUNK = 1024  # rows read at a time: memory holds one chunk of a layer, whatever the prompt count


@dataclass
class Rows:
    """One prompt set's residuals at one layer, ``[n, d_model]``, read :data:`CHUNK` rows at a
    time: from a tensor, or from a float32 file by plain reads (reading through a memory map
    would keep every page read in the process's memory)."""

    n: int
    d: int
    tensor: Tensor | None = None
    path: Path | None = None

    @classmethod
    def of(cls, x: Float[Tensor, "n d"]) -> Rows:
        return cls(x.shape[0], x.shape[1], tensor=x)

    def chunks(self, mask: Bool[Tensor, " n"] | None = None) -> Iterator[Float[Tensor, "k d"]]:
        """The rows in order (those ``mask`` keeps), :data:`CHUNK` at a time, as float32."""
        for start in range(0, self.n, CHUNK):
            stop = min(start + CHUNK, self.n)
            if self.tensor is not None:
                x = self.tensor[start:stop].float()
            else:
                count, offset = (stop - start) * self.d, 4 * start * self.d
                x = torch.from_numpy(np.fromfile(self.path, np.float32, count, offset=offset))
                x = x.view(stop - start, self.d)
            yield x if mask is None else x[mask[start:stop]]


def mean_rows(parts: Sequence[tuple[Rows, Tensor | None]]) -> Float[Tensor, " d"]:
    """The float64 mean of the rows of every ``(rows, mask)`` part."""
    total = sum(x.double().sum(0) for rows, mask in parts for x in rows.chunks(mask))
    return total / sum(rows.n if mask is None else int(mask.sum()) for rows, mask in parts)


def labelled_chunks(
    parts: Sequence[tuple[Rows, Tensor, bool]],
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(rows, labels)`` chunk by chunk over every ``(rows, mask, label)`` part."""
    for rows, mask, label in parts:
        for x in rows.chunks(mask):
            yield x, torch.full((len(x),), label)


def top_eigenvector(m: Float[Tensor, "d d"]) -> Float[Tensor, " d"]:
    """Unit eigenvector of the symmetric ``m``'s largest eigenvalue (for ``m = xᵀx``, the first
    principal component of ``x``'s rows), sign fixed so that its largest-magnitude coordinate
    is positive (deterministic across runs)."""
    _, vectors = torch.linalg.eigh(m.double())
    pc = vectors[:, -1].float()
    return pc * torch.sign(pc[pc.abs().argmax()])


def split_by_layer(path: Path, name: str, folder: Path) -> list[Rows]:
    """One float32 file per layer in ``folder`` (``[n, d_model]``, in row order) from the
    streamed ``[n, layer, 1, d_model]`` tensor ``name`` of the safetensors file ``path``,
    copied a chunk at a time."""
    header, offset = read_safetensors_header(path)
    n, n_layers, _, d = header[name]["shape"]
    offset += header[name]["data_offsets"][0]
    rows = [Rows(n, d, path=folder / f"layer-{i}.f32") for i in range(n_layers)]
    files = [open(r.path, "wb") for r in rows]  # noqa: SIM115 - closed below
    try:
        for start in range(0, n, CHUNK):
            k = min(CHUNK, n - start)
            at = offset + 4 * start * n_layers * d
            block = np.fromfile(path, np.float32, k * n_layers * d, offset=at)
            for i, f in enumerate(files):
                f.write(block.reshape(k, n_layers, d)[:, i].tobytes())
    finally:
        for f in files:
            f.close()
    return rows
