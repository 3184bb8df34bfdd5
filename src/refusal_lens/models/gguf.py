"""Dequantize a GGUF chat model into a plain safetensors HF model directory, once.

``transformers`` reads GGUF through the ``gguf`` package (~20-40 s for SmolLM2-135M on two
cores); the converted folder then loads in about a second. :func:`convert_gguf_apart` runs
the conversion in a separate process: dequantizing leaves about the weights' size of freed
memory that the allocator keeps (566 MiB after SmolLM2-135M's 513 MiB), which would otherwise
stay in the process that then loads the converted copy. Two fixes make the folder usable
by the rest of the toolkit: the ``quantization_config`` that GGUF loading leaves in the config
is dropped (the weights are plain floats by now, and while it stays every later
``save_pretrained`` of a fine-tuned copy refuses), and ``architectures`` is written in, since
GGUF-derived configs lack it and TransformerBridge needs it for some families.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from refusal_lens.artifacts import atomic_dir
from refusal_lens.errors import ModelSpecError

log = logging.getLogger(__name__)

# GGUF ``general.architecture`` -> HF class, for configs that come without ``architectures``.
_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}


def convert_gguf(
    gguf_path: Path, out_dir: Path, architecture: str | None = None, record: dict | None = None
) -> Path:
    """Write a float32 safetensors copy of ``gguf_path`` to ``out_dir`` (atomically), with a
    cache manifest of its files and of ``record`` (what its cache key hashed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refusal_lens.cache import write_manifest

    log.info(
        "Converting %s to %s (one time: ~30 s for 135M parameters, ~60 s for 0.5B)",
        gguf_path.name,
        out_dir,
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as exc:  # transformers raises many types for unsupported GGUF files
        raise ModelSpecError(
            f"transformers could not dequantize {gguf_path}: {exc}. If the file was cut short "
            "(an interrupted download or copy), download it again; otherwise check that the "
            "gguf package is installed and that transformers supports this GGUF architecture."
        ) from exc
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not getattr(model.config, "architectures", None):
        model.config.architectures = [
            architecture or _ARCHITECTURES.get(model.config.model_type, "LlamaForCausalLM")
        ]
    with atomic_dir(out_dir, marker="config.json") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp, record or {"source": gguf_path.name})
    return out_dir


ERROR_MARK = "refusal-lens-conversion-error: "


def convert_gguf_apart(
    gguf_path: Path, out_dir: Path, architecture: str | None = None, record: dict | None = None
) -> Path:
    """:func:`convert_gguf` in a new Python process, so that its memory leaves with it; its
    errors come back as the same :class:`ModelSpecError`."""
    log.info("Converting %s in a separate process (one time)", Path(gguf_path).name)
    args = [str(gguf_path), str(out_dir), architecture or "", json.dumps(record)]
    done = subprocess.run(
        [sys.executable, "-m", __name__, *args], capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return out_dir
    marked = [x for x in done.stderr.splitlines() if x.startswith(ERROR_MARK)]
    if marked:
        raise ModelSpecError(json.loads(marked[-1].removeprefix(ERROR_MARK)))
    raise ModelSpecError(
        f"Converting {gguf_path} failed in its process (exit {done.returncode}):\n"
        f"{done.stderr[-2000:]}"
    )


def _main(argv: list[str]) -> int:
    gguf_path, out_dir, architecture, record = argv
    try:
        convert_gguf(Path(gguf_path), Path(out_dir), architecture or None, json.loads(record))
    except ModelSpecError as exc:
        sys.stderr.write(ERROR_MARK + json.dumps(str(exc)) + "\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
