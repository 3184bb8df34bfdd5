"""Independent references: the same weights run by plain transformers, no bridge, no hooks of
the package's. Generation with HF ``generate``, refusal scores written out from the logits, and
the interventions as HF forward pre-hooks.

A helper module for the tests that check a trusted path against HF (``test_hf_equivalence.py``,
``test_edits.py``, ``test_notebooks.py``); not a test file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from refusal_lens.generation import cut_at_stop

_LOADED: dict[tuple[str, str], torch.nn.Module] = {}


def plain_hf(model):
    """The same weights as ``model``, loaded afresh by transformers alone (once per test
    process: callers add and remove hooks, never change the weights)."""
    from transformers import AutoModelForCausalLM

    key = (str(model.path), str(model.dtype))
    if key not in _LOADED:
        hf = AutoModelForCausalLM.from_pretrained(model.path, dtype=model.dtype)
        _LOADED[key] = hf.eval()
    return _LOADED[key]


def stop_ids(model) -> set[int]:
    eos = model.hf_model.generation_config.eos_token_id or model.tokenizer.eos_token_id
    return {eos} if isinstance(eos, int) else set(eos)


def hf_greedy(hf, model, text: str, max_new_tokens: int) -> list[int]:
    """Plain HF ``generate``, one prompt, no padding, default cache."""
    ids = model.chat.tokenize([text]).input_ids
    stops = stop_ids(model)
    with torch.inference_mode():
        out = hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(stops),
            pad_token_id=min(stops),
        )
    return cut_at_stop(out[0, ids.shape[1] :].tolist(), stops)


def hf_answer(hf, model, text: str, max_new_tokens: int) -> str:
    """:func:`hf_greedy` decoded as the package prints an answer."""
    ids = hf_greedy(hf, model, text, max_new_tokens)
    return model.tokenizer.decode(ids, skip_special_tokens=True).strip()


def hf_greedy_gaps(hf, model, text: str, answer: str) -> torch.Tensor:
    """How far each token of ``answer`` (as printed after ``text``) falls below plain HF's
    most likely next token, teacher-forced: all ~0 for HF's own greedy answer. Two float32
    implementations of the same model can flip a near-tie deep into an answer and then go on
    differently; this check takes that tie for what it is, and still catches any token that
    HF's greedy decoding would not have chosen."""
    head = model.chat.encode(text)
    full = model.chat.encode(text, suffix=answer)
    assert full[: len(head)] == head and len(full) > len(head)
    with torch.inference_mode():
        logits = hf(torch.tensor([full])).logits[0, len(head) - 1 : -1].float()
    chosen = logits.gather(-1, torch.tensor(full[len(head) :])[:, None])[:, 0]
    return logits.max(-1).values - chosen


def hf_refusal_score(hf, model, text: str) -> float:
    """``log p(R) − log(1 − p(R))`` over the model's refusal-start tokens at the first answer
    position, written out from a plain HF forward."""
    with torch.inference_mode():
        logits = hf(model.chat.tokenize([text]).input_ids).logits[0, -1].float()
    logprobs = logits.log_softmax(-1)
    refusal = torch.zeros_like(logprobs, dtype=torch.bool)
    refusal[model.refusal_tokens] = True
    return float(logprobs[refusal].logsumexp(-1) - logprobs[~refusal].logsumexp(-1))


def _pre_hook(module: torch.nn.Module, edit) -> torch.utils.hooks.RemovableHandle:
    """Apply ``edit`` to the hidden states entering ``module`` (positional or keyword)."""

    def pre_hook(module, args, kwargs):
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        kwargs["hidden_states"] = edit(kwargs["hidden_states"])
        return args, kwargs

    return module.register_forward_pre_hook(pre_hook, with_kwargs=True)


@contextlib.contextmanager
def hf_addition(hf, layer: int, vector: torch.Tensor, coef: float) -> Iterator:
    """``x + coef·v`` at the input of decoder layer ``layer``: an HF forward pre-hook."""
    handle = _pre_hook(hf.model.layers[layer], lambda x: x + coef * vector.to(x.dtype))
    try:
        yield hf
    finally:
        handle.remove()


@contextlib.contextmanager
def hf_ablation(hf, vector: torch.Tensor) -> Iterator:
    """``x − r̂ r̂ᵀ x`` on the residual stream at every layer and position, written as HF hooks
    on what writes to it: the embeddings (entering layer 0), and every attention and MLP
    output. With every write free of r̂, so is every read (resid_pre, resid_mid, resid_post)."""
    unit = vector.float() / vector.float().norm()

    def project(x: torch.Tensor) -> torch.Tensor:
        u = unit.to(x.dtype)
        return x - (x @ u)[..., None] * u

    def output_hook(module, args, output):
        if isinstance(output, tuple):
            return (project(output[0]), *output[1:])
        return project(output)

    handles = [_pre_hook(hf.model.layers[0], project)]
    for layer in hf.model.layers:
        handles.append(layer.self_attn.register_forward_hook(output_hook))
        handles.append(layer.mlp.register_forward_hook(output_hook))
    try:
        yield hf
    finally:
        for handle in handles:
            handle.remove()
