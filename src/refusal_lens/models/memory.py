"""What a model's weights take and whether a stage can run beside them, checked before loading.

Every stage of a run peaks at about :data:`STAGE_FACTOR` times the weights' bytes, plus a
fixed overhead for the interpreter and the libraries (``benchmarks/stage_memory.py``
measures both per stage). :func:`check_fits` refuses a model whose weights times that factor
exceed the memory found on its device, before a byte of it loads, instead of letting the
operating system kill the process part way through a run.

>>> weights_bytes("runs/aligned/model", torch.bfloat16)   # from the safetensors headers
>>> check_fits("org/model", path, torch.float32, torch.device("cpu"))
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from refusal_lens.errors import ModelSpecError

STAGE_FACTOR = 1.3  # a stage's peak over the weights (benchmarks/stage_memory.py)
SKIP_VARIABLE = "REFUSAL_LENS_NO_MEMORY_CHECK"  # set to 1 to load whatever the check says
GIB = 2**30


def weights_bytes(path: str | Path, dtype: torch.dtype) -> int | None:
    """The bytes of the tensors in the safetensors files of the model folder ``path``, loaded
    in ``dtype``; None when ``path`` is not a folder holding safetensors files (a hub id)."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if not files:
        return None
    n = 0
    for file in files:
        with safe_open(file, framework="pt") as f:
            n += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118
    return n * torch.empty((), dtype=dtype).element_size()


def _meminfo_bytes(field: str) -> int | None:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_room() -> int | None:
    """What the process's cgroup (v2) still allows: its memory limit minus its usage."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a model on ``device``: a GPU's free memory, or on the CPU the kernel's
    ``MemAvailable`` (within the cgroup's limit); None when it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    found = [b for b in (_meminfo_bytes("MemAvailable"), _cgroup_room()) if b is not None]
    return min(found) if found else None


def check_fits(spec: str, path: str, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse ``spec`` (its weights in the folder ``path``) when its weights times
    :data:`STAGE_FACTOR` exceed the memory available on ``device``; the error names both
    sizes and what helps. Skipped when the size or the memory cannot be told, or when
    ``REFUSAL_LENS_NO_MEMORY_CHECK=1``."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        return
    weights = weights_bytes(path, dtype)
    found = available_bytes(device) if weights is not None else None
    if weights is None or found is None or weights * STAGE_FACTOR <= found:
        return
    name = str(dtype).removeprefix("torch.")
    smaller = "" if dtype.itemsize <= 2 else " (--dtype bfloat16 halves float32's weights)"
    raise ModelSpecError(
        f"{spec} does not fit: its weights take {weights / GIB:.1f} GiB in {name}, and a "
        f"stage needs about {STAGE_FACTOR:g}× that ({weights * STAGE_FACTOR / GIB:.1f} GiB), "
        f"but {device} has {found / GIB:.1f} GiB available. Load it in a smaller dtype"
        f"{smaller}, split it over GPUs or offload layers to the CPU or disk (--device-map "
        f"auto), or free memory. Set {SKIP_VARIABLE}=1 to load it anyway."
    )


# glibc's mallopt parameter (malloc.h) and the value it is given back afterwards: the most
# the dynamic threshold grows to on 64-bit glibc (DEFAULT_MMAP_THRESHOLD_MAX)
_M_MMAP_THRESHOLD, _HELD, _AFTER = -3, 128 * 1024, 32 * 2**20


@contextlib.contextmanager
def allocator_returns_memory() -> Iterator[None]:
    """Inside, glibc maps every allocation over 128 KiB on its own and unmaps it when freed.

    By default glibc raises that threshold as blocks are freed, and serves later tensors of a
    few MiB from a heap that it keeps: a training loop, which frees and allocates a layer's
    activations at every step, then holds several times what it uses (SmolLM2's LoRA
    training: about 1 GiB more than with the threshold held). Mapping costs time (about 25 %
    in a training step on a CPU), so this is for the steps that train only. Afterwards the
    threshold is set to glibc's own upper bound, what the dynamic rule reaches in a long run.
    A no-op off glibc (CUDA memory is torch's own allocator's)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _HELD)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _AFTER)


def free_weights(model: Any) -> None:
    """Move the weights of ``model`` (a :class:`~refusal_lens.models.ModelHandle`) to the meta
    device, so that their memory is freed even where a reference to the handle remains (an
    argument still on a caller's stack); the handle cannot run afterwards. A model placed by
    a device map (accelerate's hooks) is left alone: dropping its references frees it."""
    hf_model = getattr(model.bridge, "original_model", None)
    if hf_model is None or getattr(hf_model, "hf_device_map", None):
        return
    hf_model.to("meta")


__all__ = [
    "STAGE_FACTOR",
    "allocator_returns_memory",
    "available_bytes",
    "check_fits",
    "free_weights",
    "weights_bytes",
]
