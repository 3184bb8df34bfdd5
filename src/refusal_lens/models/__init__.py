"""Model specs, the bundled SmolLM2 chat model, and loading into TransformerBridge."""

from refusal_lens.models.load import ModelHandle, load_model, model_path, wrap_hf_model
from refusal_lens.models.refusal_tokens import REFUSAL_OPENINGS, refusal_start_tokens
from refusal_lens.models.spec import BUNDLED, cache_dir, resolve_spec

__all__ = [
    "BUNDLED",
    "REFUSAL_OPENINGS",
    "ModelHandle",
    "cache_dir",
    "load_model",
    "model_path",
    "refusal_start_tokens",
    "resolve_spec",
    "wrap_hf_model",
]
