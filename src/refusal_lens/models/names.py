"""Names of a model that other tools understand, and whether two names mean the same model.

A :class:`~refusal_lens.models.ModelHandle`'s ``model_id`` is a short local name (the spec's
last path component: ``smollm2-135m``, a cache folder such as
``SmolLM2-135M-Instruct.Q4_1-bf3228430ce0db32``, an aligned organism's folder). Artifacts that
leave refusal-lens also record the model-hub id the model is, or was derived from:

>>> hub_id("smollm2-135m")
'HuggingFaceTB/SmolLM2-135M-Instruct'
>>> hub_id("runs/aligned/model")          # an aligned organism: its base model's hub id
>>> same_model({"smollm2-135m"}, {"SmolLM2-135M-Instruct.Q4_1-bf3228430ce0db32"})
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from refusal_lens.locations import CACHE_PLACEHOLDER, cache_dir
from refusal_lens.models.spec import BUNDLED

# The hub repositories the bundled GGUF files were quantized from.
BUNDLED_HUB_IDS: dict[str, str] = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "qwen2.5-coder-0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
}
ALIGN_META = "align.json"  # written into an aligned organism's folder by refusal_lens.alignment
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CACHE_KEY = re.compile(r"-[0-9a-f]{12,}$")  # the content key of a cache folder
_QUANT = re.compile(r"[.-](q\d[\w]*|iq\d[\w]*|f16|f32|bf16)$")  # a GGUF file's quantization


def _is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "~"))


def hub_id(spec: str | None, _depth: int = 0) -> str | None:
    """The model-hub id that ``spec`` is or comes from, when it can be told without loading
    weights: a hub id itself; a bundled model's source repository; for a local folder, its
    aligned organism's base (``align.json``), its bundled GGUF conversion or the hub id in its
    ``config.json``. ``None`` when unknown (a local model of unknown origin)."""
    if not spec or _depth > 3:
        return None
    spec = spec.strip()
    if spec.startswith(CACHE_PLACEHOLDER + "/"):
        spec = str(cache_dir() / spec.removeprefix(CACHE_PLACEHOLDER + "/"))
    if spec in BUNDLED:
        return BUNDLED_HUB_IDS.get(spec)
    path = Path(spec).expanduser()
    if path.exists():
        return _local_hub_id(path, _depth)
    return spec if _is_hub_id(spec) else None


def _local_hub_id(path: Path, depth: int) -> str | None:
    """:func:`hub_id` of a local folder or ``.gguf`` file."""
    for name, model in BUNDLED.items():  # a bundled model's converted copy in the cache
        if path.name.startswith(Path(model.gguf_file).stem):
            return BUNDLED_HUB_IDS.get(name)
    if not path.is_dir():
        return None
    for meta_name, key in ((ALIGN_META, "base"), ("config.json", "_name_or_path")):
        try:
            value = json.loads((path / meta_name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and value:
            found = hub_id(value, depth + 1) if key == "base" else value
            if found and _is_hub_id(found) and not Path(found).exists():
                return found
    return None


def base_specs(spec: str | None) -> list[str]:
    """The specs an aligned organism was aligned from, nearest first (its ``align.json``
    names its base; that base may be an organism too); empty for any other model."""
    found: list[str] = []
    while spec and len(found) < 4:
        path = Path(spec.replace(CACHE_PLACEHOLDER, str(cache_dir()), 1)).expanduser()
        try:
            spec = json.loads((path / ALIGN_META).read_text()).get("base")
        except (OSError, ValueError, AttributeError):
            break
        if not isinstance(spec, str) or not spec:
            break
        found.append(spec)
    return found


def normalized_name(name: str) -> str:
    """A model name without what differs between copies of one model: the folder path, the
    organisation of a hub id, letter case, a cache key and a GGUF quantization suffix
    (``$CACHE/models/SmolLM2-135M-Instruct.Q4_1-bf32…`` → ``smollm2-135m-instruct``)."""
    text = name.strip().rstrip("/").rsplit("/", 1)[-1].lower().removesuffix(".gguf")
    text = _CACHE_KEY.sub("", text)
    return _QUANT.sub("", text)


def model_names(*names: str | None) -> set[str]:
    """The normalized names of one model given any of its names (local id, spec, hub id),
    with a bundled model's short name and its hub id counted as one model."""
    out: set[str] = set()
    for name in filter(None, names):
        out.add(normalized_name(name))
        if name in BUNDLED_HUB_IDS:
            out.add(normalized_name(BUNDLED_HUB_IDS[name]))
    for short, hub in BUNDLED_HUB_IDS.items():
        if normalized_name(hub) in out:
            out.add(short)
    return out


def same_model(a: Iterable[str | None], b: Iterable[str | None]) -> bool:
    """Whether two sets of names (each the names of one model) share a normalized name."""
    return not model_names(*a).isdisjoint(model_names(*b))
