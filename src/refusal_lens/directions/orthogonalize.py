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
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from refusal_lens.artifacts import atomic_dir, portable_path, write_json
from refusal_lens.errors import RefusalLensError
from refusal_lens.interventions import as_direction, orthonormal_basis
from refusal_lens.models import ModelHandle
from refusal_lens.residual_direction import Direction

log = logging.getLogger(__name__)
MARKER = "orthogonalized.json"
POST_NORM_MARKERS = ("post_feedforward_layernorm", "post_attn_norm", "post_mlp_norm")


BLOCK = 4096  # rows or columns edited at a time in float64 (a whole embedding would double)


def _project_rows_out(weight: Tensor, q: Tensor, share: float) -> None:
    """Rows are vectors in the residual stream (an embedding matrix): w ← w − a (w Qᵀ) Q."""
    for rows in weight.split(BLOCK, dim=0):  # views: edited in place, block by block
        edited = rows.double()
        edited.sub_(share * (edited @ q.T) @ q)
        rows.copy_(edited.to(rows.dtype))


def _project_output_out(weight: Tensor, q: Tensor, share: float) -> None:
    """Outputs land in the residual stream (``nn.Linear`` weight [d_model, d_in])."""
    for columns in weight.split(BLOCK, dim=1):
        edited = columns.double()
        edited.sub_(share * q.T @ (q @ edited))
        columns.copy_(edited.to(columns.dtype))


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
def orthogonalize_model(
    hf_model: nn.Module,
    vectors: Float[Tensor, "*k d_model"],
    shares: Float[Tensor, " n_layers"] | None = None,
) -> nn.Module:
    """Remove the span of ``vectors`` (one ``[d_model]`` or rows ``[k, d_model]``) from every
    residual-stream write of ``hf_model``, in place. With ``shares``, layer ``l``'s attention
    and MLP outputs lose only the share ``shares[l]`` of their component in the span (the
    embedding counts as layer 0); by default all of it."""
    writers = _writers(hf_model)
    embed = hf_model.get_input_embeddings()
    q = orthonormal_basis(list(vectors.reshape(-1, vectors.shape[-1]))).double()
    q = q.to(embed.weight.device)
    n_layers = len(writers) // 2
    shares = torch.ones(n_layers) if shares is None else shares
    if len(shares) != n_layers:
        raise RefusalLensError(f"shares has {len(shares)} values for {n_layers} layers.")
    if hf_model.get_output_embeddings() is not None and getattr(
        hf_model.config, "tie_word_embeddings", False
    ):
        hf_model.lm_head.weight = nn.Parameter(embed.weight.detach().clone())
        hf_model.config.tie_word_embeddings = False
    edits = [(embed.weight, _project_rows_out, float(shares[0]))]
    edits += [(w.weight, _project_output_out, float(shares[i // 2])) for i, w in enumerate(writers)]
    for weight, project, share in edits:
        if share != 0:
            project(weight, q, share)
    for i, w in enumerate(writers):
        if w.bias is not None and float(shares[i // 2]) != 0:
            removed = float(shares[i // 2]) * q.T @ (q @ w.bias.double())
            w.bias.sub_(removed.to(w.bias.dtype))
    return hf_model


def orthogonalize_weights(
    model: ModelHandle, direction: Direction | Tensor, out: str | Path
) -> Path:
    """Write a copy of ``model`` with ``direction`` orthogonalized out of its weights to
    folder ``out`` (an HF model directory that :func:`refusal_lens.load_model` loads)."""
    direction = as_direction(model, direction)
    record = {"direction": direction.metadata()}
    return write_orthogonalized(model, direction.vector, None, out, record)


def write_orthogonalized(
    model: ModelHandle,
    vectors: Float[Tensor, "*k d_model"],
    shares: Float[Tensor, " n_layers"] | None,
    out: str | Path,
    record: dict[str, Any],
) -> Path:
    """:func:`orthogonalize_model` on a float32 copy of ``model``'s weights, saved with its
    tokenizer to ``out`` (written whole or not at all); ``record`` goes into
    ``orthogonalized.json`` beside the weights."""
    from transformers import AutoModelForCausalLM

    if not Path(model.path).is_dir():
        raise RefusalLensError(
            f"{model.spec} was not loaded from a local directory, so there are no weights to "
            "copy; save the model with save_pretrained and load it from that directory."
        )
    hf_model = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
    orthogonalize_model(hf_model, vectors, shares)
    out = Path(out)
    with atomic_dir(out, marker=MARKER) as tmp:
        hf_model.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)
        write_json(tmp / MARKER, {"source": portable_path(model.path), **record})
    log.info("Wrote the orthogonalized model to %s", out)
    return out
