"""Weight orthogonalization: bake directional ablation into a new HF model directory.

Every write to the residual stream (the token embedding, each attention output projection and
each MLP down projection) has the direction removed, ``W_out ← W_out − r̂ r̂ᵀ W_out``
(Arditi et al.). In a pre-norm transformer (Llama, Qwen2/3, Mistral, SmolLM2 ...) the
residual stream then never holds the direction, which is exactly what the hook-based
:func:`refusal_lens.interventions.ablate` does, so the two give the same logits within float
tolerance. Tied input/output embeddings are untied, so the unembedding keeps its original
weights. Post-norm architectures (Gemma-2/3 normalise each block output before adding it) are
refused: there the weights alone cannot express the ablation; use the hooks.

>>> path = orthogonalize_weights(model, r, "runs/smollm2-no-refusal")
>>> ablated = load_model(str(path))
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from refusal_lens.artifacts import atomic_dir, write_json
from refusal_lens.direction import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.interventions import as_direction
from refusal_lens.models import ModelHandle

log = logging.getLogger(__name__)
POST_NORM_MARKERS = ("post_feedforward_layernorm", "post_attn_norm", "post_mlp_norm")


def _project_rows_out(weight: Tensor, r: Tensor) -> None:
    """Rows are vectors in the residual stream (an embedding matrix): w ← w − (w·r̂) r̂."""
    weight.sub_(torch.outer(weight @ r, r))


def _project_output_out(weight: Tensor, r: Tensor) -> None:
    """Outputs land in the residual stream (``nn.Linear`` weight [d_model, d_in])."""
    weight.sub_(torch.outer(r, r @ weight))


def _writers(hf_model: nn.Module) -> list[nn.Linear]:
    layers = getattr(getattr(hf_model, "model", None), "layers", None)
    names = {name.rsplit(".", 1)[-1] for name, _ in hf_model.named_modules()}
    if layers is None or names & set(POST_NORM_MARKERS):
        raise RefusalLensError(
            f"Weight orthogonalization supports pre-norm decoder models (Llama, Qwen, Mistral "
            f"...); {type(hf_model).__name__} is not one (post-norms or an unknown layout), so "
            "its weights cannot express the ablation. Use the hook-based `ablate` instead."
        )
    out = []
    for layer in layers:
        try:
            out += [layer.self_attn.o_proj, layer.mlp.down_proj]
        except AttributeError as exc:
            raise RefusalLensError(
                f"{type(hf_model).__name__} has no self_attn.o_proj / mlp.down_proj; weight "
                "orthogonalization does not know where it writes to the residual stream. Use "
                "the hook-based `ablate` instead."
            ) from exc
    return out


@torch.no_grad()
def orthogonalize_model(hf_model: nn.Module, vector: Tensor) -> nn.Module:
    """Remove ``vector``'s direction from every residual-stream write of ``hf_model``, in place."""
    writers = _writers(hf_model)
    embed = hf_model.get_input_embeddings()
    r = (vector / vector.norm()).to(embed.weight.device, torch.float64)
    if hf_model.get_output_embeddings() is not None and getattr(
        hf_model.config, "tie_word_embeddings", False
    ):
        hf_model.lm_head.weight = nn.Parameter(embed.weight.detach().clone())
        hf_model.config.tie_word_embeddings = False
    for weight, project in [(embed.weight, _project_rows_out)] + [
        (w.weight, _project_output_out) for w in writers
    ]:
        edited = weight.double()
        project(edited, r)
        weight.copy_(edited.to(weight.dtype))
    for w in writers:
        if w.bias is not None:
            w.bias.sub_((r @ w.bias.double() * r).to(w.bias.dtype))
    return hf_model


def orthogonalize_weights(
    model: ModelHandle, direction: Direction | Tensor, out: str | Path
) -> Path:
    """Write a copy of ``model`` with ``direction`` orthogonalized out of its weights to
    folder ``out`` (an HF model directory that :func:`refusal_lens.load_model` loads)."""
    from transformers import AutoModelForCausalLM

    direction = as_direction(model, direction)
    if not Path(model.path).is_dir():
        raise RefusalLensError(
            f"{model.spec} was not loaded from a local directory, so there are no weights to "
            "copy; save the model with save_pretrained and load it from that directory."
        )
    hf_model = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
    orthogonalize_model(hf_model, direction.vector)
    out = Path(out)
    with atomic_dir(out, marker="orthogonalized.json") as tmp:
        hf_model.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)
        write_json(
            tmp / "orthogonalized.json",
            {"source": model.path, "direction": direction.metadata()},
        )
    log.info("Wrote the orthogonalized model to %s", out)
    return out
