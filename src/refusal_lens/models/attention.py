"""The attention fast path: the HF attention kernel (SDPA) when no attention hook is needed.

TransformerBridge reimplements attention step by step (scores, softmax, pattern) so that hooks
such as ``blocks.{l}.attn.hook_pattern`` fire inside the computation. That costs time: on an H100
a random-weight Llama-3-8B ran at 1.64× a plain HF forward. The toolkit's own hooks all sit on
the residual stream, so every forward pass of the toolkit runs inside :func:`native_attention`:
while no hook is registered inside any attention module, each attention bridge hands its input
to the HF attention module, which runs ``torch.nn.functional.scaled_dot_product_attention``.
The residual stream's hooks (``hook_resid_*``, ``hook_attn_out``) still fire.

The slow path is kept, and chosen automatically, whenever it is needed: a hook on an attention
internal (``hook_pattern``, ``hook_q``, ``hook_z``...), TransformerLens' split-input options, an
architecture whose attention SDPA cannot express (logit soft-capping), or
``model.native_attention = False``. Nothing is silently skipped. Both paths agree within float
tolerance (``tests/test_attention.py``).

>>> with native_attention(model):
...     model.bridge(ids, attention_mask=mask)
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Iterator
from typing import Any

_SPLIT_OPTIONS = ("use_split_qkv_input", "use_attn_in", "use_attn_result")
_OUTER_HOOKS = ("hook_in", "hook_out")  # the residual side of attention: fire on both paths


_FOUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # bridge -> its attention


def attention_bridges(bridge: Any) -> list[Any]:
    """The attention bridges that reimplement attention (their forward is not the base one);
    found once per bridge, since every forward pass asks."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    if bridge not in _FOUND:
        base = AttentionBridge.forward
        found = [m for m in bridge.modules() if isinstance(m, AttentionBridge)]
        _FOUND[bridge] = [m for m in found if type(m).forward is not base]
    return _FOUND[bridge]


def _hooked(module: Any) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def internal_hooks(attention: Any) -> list[str]:
    """Names of the hook points inside one attention bridge that have a hook registered."""
    from transformer_lens.hook_points import HookPoint

    return [
        name
        for name, module in attention.named_modules()
        if isinstance(module, HookPoint) and name not in _OUTER_HOOKS and _hooked(module)
    ]


def why_slow(model: Any, bridges: list[Any]) -> str | None:
    """Why the fast path cannot run now (``None`` when it can)."""
    if not getattr(model, "native_attention", True):
        return "the handle's native_attention is off"
    hf = model.hf_model
    if not getattr(hf, "_supports_sdpa", False):
        return f"{type(hf).__name__} has no SDPA attention"
    if getattr(hf.config, "attn_logit_softcapping", None):
        return "SDPA cannot soft-cap attention logits"
    cfg = model.bridge.cfg
    options = [o for o in _SPLIT_OPTIONS if getattr(cfg, o, False)]
    if options:
        return f"TransformerLens options {options} need the bridge's attention"
    hooked = [name for b in bridges for name in internal_hooks(b)]
    if hooked:
        return f"attention hooks are registered ({hooked[:3]})"
    return None


@contextlib.contextmanager
def native_attention(model: Any) -> Iterator[bool]:
    """Run the forward passes inside on the HF attention kernel when nothing needs the
    bridge's own; yields whether the fast path is on. Enter it after registering hooks."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    bridges = attention_bridges(model.bridge)
    if bridges and "forward" in bridges[0].__dict__:  # already on (a nested call)
        yield True
        return
    if not bridges or why_slow(model, bridges) is not None:
        yield False
        return
    config = model.hf_model.config
    before = config._attn_implementation
    for b in bridges:  # the instance dict: the bridge's __setattr__ forwards to the HF module
        b.__dict__["forward"] = types.MethodType(AttentionBridge.forward, b)
    config._attn_implementation = "sdpa"
    try:
        yield True
    finally:
        config._attn_implementation = before
        for b in bridges:
            b.__dict__.pop("forward", None)
