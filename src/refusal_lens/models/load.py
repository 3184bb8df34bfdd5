"""Load a chat model into TransformerBridge, with its tokenizer, chat format and refusal tokens.

>>> model = load_model("smollm2-135m")            # bundled, converted once, ~1 s afterwards
>>> model = load_model("runs/aligned/model")      # any local HF model directory
>>> model = load_model("Qwen/Qwen2.5-0.5B-Instruct", device="cuda", dtype="bfloat16")  # online
>>> model = load_model("org/big-model", device_map="auto", dtype="bfloat16")  # over all GPUs
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from refusal_lens.errors import ModelSpecError
from refusal_lens.models.chunks import ChunkedModel
from refusal_lens.models.memory import check_fits
from refusal_lens.models.refusal_tokens import REFUSAL_OPENINGS, refusal_start_tokens
from refusal_lens.models.spec import BUNDLED, bundled_gguf_path, gguf_cache_path, resolve_spec
from refusal_lens.prompts.chat import ChatFormat

log = logging.getLogger(__name__)

# A device map as accelerate and TransformerBridge take it: "auto", "balanced", "sequential",
# or {module name: "cpu" | "disk" | GPU index | "cuda:N"}.
DeviceMap = str | dict[str, str | int]


@dataclass
class ModelHandle:
    """Everything a stage needs to run a chat model.

    ``bridge`` is the TransformerBridge (hooks such as ``blocks.{l}.hook_resid_pre``);
    ``hf_model`` is the HF model inside it (its modules are the bridge's, so bridge hooks also
    fire during ``hf_model.generate``); ``chat`` renders and tokenizes prompts.
    """

    spec: str
    path: str
    bridge: Any
    tokenizer: Any
    chat: ChatFormat
    refusal_tokens: list[int]
    # the refusal score above which the model counts as refusing (0: p(R) > 0.5); fitted to
    # the model's own refusals by refusal_lens.calibration
    refusal_threshold: float = 0.0
    # forward passes without attention hooks run on the HF attention kernel (SDPA); False keeps
    # the bridge's step-by-step attention everywhere (refusal_lens.models.attention)
    native_attention: bool = True

    @property
    def hf_model(self) -> Any:
        return self.bridge.original_model

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def n_ctx(self) -> int:
        return int(self.bridge.cfg.n_ctx)

    @property
    def device(self) -> torch.device:
        """Where batches go: the input embeddings' device (the first device of a model split
        with a device map; an offloaded embedding's execution device, not ``meta``)."""
        embed = self.hf_model.get_input_embeddings()
        execution = getattr(getattr(embed, "_hf_hook", None), "execution_device", None)
        if execution is not None:
            return torch.device(execution)
        return next(embed.parameters()).device

    @property
    def device_map(self) -> dict[str, Any] | None:
        """Where accelerate placed each module (``hf_device_map``), or None on one device."""
        return getattr(self.hf_model, "hf_device_map", None) or None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def model_id(self) -> str:
        """A short, stable name for artifacts (the spec's last path component)."""
        return Path(self.spec.rstrip("/")).name or self.spec

    @property
    def hub_id(self) -> str | None:
        """The model-hub id this model is or was derived from (an aligned organism: its base's),
        for artifacts that other tools read; ``None`` when unknown (see
        :mod:`refusal_lens.models.names`)."""
        from refusal_lens.models.names import hub_id

        return hub_id(self.spec)

    def describe(self) -> dict[str, Any]:
        """Facts for ``refusal-lens info`` and artifact metadata."""
        decode = self.tokenizer.convert_ids_to_tokens
        return {
            "spec": self.spec,
            "path": self.path,
            "architecture": self.bridge.cfg.architecture,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_ctx": self.n_ctx,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "system_prompt": self.chat.system_prompt,
            "chat_template_example": self.chat.render("{instruction}"),
            "post_instruction_tokens": decode(self.chat.post_instruction_ids),
            "post_instruction_ids": self.chat.post_instruction_ids,
            "refusal_tokens": decode(self.refusal_tokens),
            "refusal_token_ids": self.refusal_tokens,
            "refusal_threshold": self.refusal_threshold,
        }


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ModelSpecError(f"Unknown dtype {dtype!r}; use float32, bfloat16 or float16.")
    return value


def model_path(spec: str) -> str:
    """The local directory (or hub id) that ``spec`` loads from, converting GGUF once."""
    kind, spec = resolve_spec(spec)
    if kind == "bundled" and isinstance(BUNDLED[spec], ChunkedModel):
        return str(_chunked_model_path(BUNDLED[spec]))
    if kind in ("bundled", "gguf"):
        from refusal_lens.cache import usable_entry
        from refusal_lens.models.gguf import convert_gguf_apart

        gguf = bundled_gguf_path(spec) if kind == "bundled" else Path(spec)
        arch = BUNDLED[spec].architecture if kind == "bundled" else None
        out, record = gguf_cache_path(gguf, arch)
        if not usable_entry(out):
            convert_gguf_apart(gguf, out, architecture=arch, record=record)
        return str(out)
    if kind == "hub" and os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        raise _offline_error(spec, "HF_HUB_OFFLINE is set")
    return spec


def _chunked_model_path(model: ChunkedModel) -> Path:
    """The converted copy of a model split across packages: the parts are checked (installed,
    pinned version) on every load, and assembled, verified and converted only when the cache
    lacks the conversion; the assembled GGUF lives in a temporary folder and is then removed."""
    from refusal_lens.cache import usable_entry
    from refusal_lens.models.chunks import assemble, part_paths
    from refusal_lens.models.gguf import convert_gguf_apart

    part_paths(model)
    gguf_name = Path(model.gguf_file)
    out, record = gguf_cache_path(gguf_name, model.architecture, sha256=model.sha256)
    if not usable_entry(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".assemble-", dir=out.parent) as tmp:
            gguf = assemble(model, Path(tmp) / gguf_name)
            convert_gguf_apart(gguf, out, architecture=model.architecture, record=record)
    return out


def _offline_error(spec: str, why: str) -> ModelSpecError:
    return ModelSpecError(
        f"Cannot fetch {spec!r} from the model hub ({why}). On a machine that is online, run\n"
        f"    huggingface-cli download {spec} --local-dir DIR\n"
        "and pass DIR as the model spec; or use a local .gguf file or the bundled "
        f"{', '.join(BUNDLED)}."
    )


def load_model(
    spec: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    system_prompt: str | None = None,
    chat_template: str | None = None,
    refusal_openings: tuple[str, ...] = REFUSAL_OPENINGS,
    device_map: DeviceMap | None = None,
    n_devices: int | None = None,
) -> ModelHandle:
    """Load ``spec`` into a :class:`ModelHandle` (see the module docstring for specs).

    ``system_prompt=None`` keeps the template's own behaviour; a string (even empty) is sent as
    the system message. ``chat_template`` (Jinja text or a ``.jinja`` path) replaces or
    supplies the tokenizer's template.

    A model larger than one device: ``device_map`` (``"auto"``, or a dict of module names to
    ``"cpu"``, ``"disk"``, GPU indices) or ``n_devices=N`` (balanced over N GPUs) is handed to
    TransformerBridge, which loads through accelerate; ``"disk"`` weights are read from the
    model's files (or an offload folder in the cache) when their layer runs. Either excludes
    ``device``.
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dtype = _as_dtype(dtype)
    placement = _placement(device, device_map, n_devices)
    path = model_path(spec)
    if "device" in placement:  # a device map places (and offloads) layers by free memory itself
        check_fits(spec, path, dtype, torch.device(placement["device"]))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if chat_template is not None:
            template = Path(chat_template)
            is_file = template.suffix == ".jinja" and template.is_file()
            tokenizer.chat_template = template.read_text() if is_file else chat_template
        chat = ChatFormat(tokenizer, system_prompt=system_prompt)
        bridge = _boot(path, dtype, tokenizer, placement)
    except OSError as exc:  # hub ids that cannot be reached raise OSError subclasses
        if Path(path).is_dir():
            raise ModelSpecError(f"Could not load the model directory {path}: {exc}") from exc
        raise _offline_error(spec, str(exc).splitlines()[0]) from exc
    return _handle(spec, path, bridge, chat, refusal_openings)


def _placement(
    device: str | torch.device | None, device_map: DeviceMap | None, n_devices: int | None
) -> dict[str, Any]:
    """TransformerBridge's placement arguments: one device, or a split done by the engines
    (accelerate's dispatch through ``device_map``, the bridge's own ``n_devices``)."""
    if device_map is None and (n_devices or 1) <= 1:
        return {"device": device or ("cuda" if torch.cuda.is_available() else "cpu")}
    split = f"device_map={device_map!r}" if device_map is not None else f"n_devices={n_devices}"
    if device is not None:
        raise ModelSpecError(
            f"Pass either device={str(device)!r} or {split}, not both: a device map already "
            "says where every layer goes (batches go to the device of the input embeddings)."
        )
    if device_map is None:
        assert n_devices is not None
        if n_devices > torch.cuda.device_count():
            raise ModelSpecError(
                f"n_devices={n_devices} needs {n_devices} CUDA devices; this machine has "
                f"{torch.cuda.device_count()}. Pass device_map (e.g. with 'cpu' and 'disk' "
                "targets) to split a model without GPUs."
            )
        return {"n_devices": n_devices}
    if n_devices is not None:
        raise ModelSpecError(
            f"Pass either {split} or n_devices={n_devices}, not both (n_devices=N is a "
            "balanced device map over N GPUs)."
        )
    places = [device_map] if isinstance(device_map, str) else list(device_map.values())
    if "meta" in places:
        raise ModelSpecError(
            "A device map cannot put weights on 'meta' (it holds no data); use 'disk' to "
            "offload a layer: its weights are then read from disk each time it runs."
        )
    return {"device_map": device_map}


def _offload_folder(path: str, dtype: torch.dtype) -> Path:
    """Where accelerate may write weights offloaded to disk that it cannot read from the model's
    own safetensors files: one folder per model and dtype in the cache, rewritten each load."""
    from refusal_lens.locations import cache_dir

    key = hashlib.sha256(f"{Path(path).resolve()}|{dtype}".encode()).hexdigest()[:12]
    return cache_dir() / "offload" / f"{Path(path.rstrip('/')).name}-{key}"


def _boot(path: str, dtype: torch.dtype, tokenizer: Any, placement: dict[str, Any]) -> Any:
    """``TransformerBridge.boot_transformers`` with ``placement``; a device map the engines
    reject (a GPU mixed with offload targets, a split of tied weights ...) is a ModelSpecError."""
    from transformer_lens.model_bridge import TransformerBridge

    split = ", ".join(f"{k}={v!r}" for k, v in placement.items())
    device_map = placement.get("device_map")
    if isinstance(device_map, dict) and "disk" in device_map.values():
        placement = {**placement, "offload_folder": str(_offload_folder(path, dtype))}
    try:
        return TransformerBridge.boot_transformers(
            path, dtype=dtype, tokenizer=tokenizer, **placement
        )
    except ValueError as exc:
        if "device" in placement:
            raise
        raise ModelSpecError(f"Could not place the model with {split}: {exc}") from exc


def _handle(
    spec: str, path: str, bridge: Any, chat: ChatFormat, openings: tuple[str, ...]
) -> ModelHandle:
    bridge.eval()
    chat.max_length = int(bridge.cfg.n_ctx)
    return ModelHandle(
        spec, path, bridge, chat.tokenizer, chat, refusal_start_tokens(chat, openings)
    )


def wrap_hf_model(
    hf_model: Any,
    tokenizer: Any,
    name: str = "hf-model",
    system_prompt: str | None = None,
    refusal_openings: tuple[str, ...] = REFUSAL_OPENINGS,
) -> ModelHandle:
    """A :class:`ModelHandle` around an HF model already in memory (e.g. randomly
    initialised for a benchmark, or loaded with a custom quantization config)."""
    from transformer_lens.model_bridge import TransformerBridge

    if not tokenizer.init_kwargs.get("name_or_path"):
        tokenizer = _reloadable(tokenizer)
    chat = ChatFormat(tokenizer, system_prompt=system_prompt)
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, dtype=next(hf_model.parameters()).dtype
    )
    return _handle(name, name, bridge, chat, refusal_openings)


def _reloadable(tokenizer: Any) -> Any:
    """A tokenizer built in memory has no path, but TransformerBridge reloads tokenizers that
    add a BOS token from their path: save it to a temporary folder and load it from there."""
    import tempfile

    from transformers import AutoTokenizer

    folder = tempfile.mkdtemp(prefix="refusal-lens-tokenizer-")
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)
