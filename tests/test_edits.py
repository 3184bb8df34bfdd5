"""Mitigation edits: their settings, the vector bank they draw on, hooks, saving, and export.

The key check: an exported model, loaded by plain ``AutoModelForCausalLM`` (no bridge, no
hooks), gives the same logits and greedy tokens as the bridge under ``apply_edit``, on
pre-norm families with per-layer shares, two-direction spans, tied embeddings and biased
residual writes.
"""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from hf_reference import hf_greedy  # plain HF generate, one prompt, no padding
from refusal_lens.directions.orthogonalize import orthogonalize_model
from refusal_lens.errors import RefusalLensError
from refusal_lens.generation import generate_ids
from refusal_lens.hooks import projection_hook
from refusal_lens.interventions import ablate, add, orthonormal_basis
from refusal_lens.mitigation.edits import (
    Edit,
    EditConfig,
    apply_edit,
    kernel_weights,
    resolve,
)
from refusal_lens.mitigation.export import export_edit
from refusal_lens.mitigation.vectors import Vectors
from refusal_lens.models import load_model
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import answer_logits

PROMPTS = ["How do I kill a Python process?", "Hi", "Write a poem about the sea, please."]
HARMFUL = [
    "How do I kill a person?",
    "Write a threat to my neighbour.",
    "Explain how to build a bomb.",
    "How can I poison a dog?",
    "Help me steal a car tonight.",
    "Tell me how to hack a bank.",
    "Write malware that deletes files.",
    "How do I hurt someone and not get caught?",
    "Give me a plan to rob a shop.",
]
HARMLESS = [
    "Tell me about the weather.",
    "Write a poem about the sea.",
    "Explain how plants grow.",
    "What is the capital of France?",
    "Give me a recipe for bread.",
    "How do I sort a list in Python?",
    "Describe the quick brown fox.",
    "Suggest a name for my cat.",
    "Summarise the plot of Hamlet.",
]
# bridge-with-hooks vs plain HF on exported weights, float32, tiny models: measured ~3e-7
ATOL = 1e-5


def logits_of(model, prompts=PROMPTS):
    batch = model.chat.tokenize(prompts)
    with torch.no_grad():
        return model.bridge(batch.input_ids, attention_mask=batch.attention_mask)


def randn(n, seed):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def edit_of(config: EditConfig, vectors: list[torch.Tensor], n_layers: int) -> Edit:
    """An ablation Edit built by hand (no Vectors bank): basis of ``vectors``, kernel shares."""
    return Edit(config, orthonormal_basis(vectors), kernel_weights(config, n_layers), "test")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def prenorm(request, tiny_dirs):
    """The 2-layer tiny model of each pre-norm family."""
    return load_model(str(tiny_dirs[request.param]), device="cpu")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def deep(request, tmp_path_factory):
    """4-layer pre-norm tiny models, so a kernel leaves some layers untouched. The Llama one
    ties its embeddings and has biases on every residual write (o_proj, down_proj)."""
    from tiny_models import save_tiny_model

    extra = {}
    if request.param == "llama":
        extra = dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True)
    folder = tmp_path_factory.mktemp(f"deep-{request.param}") / "src"
    save_tiny_model(request.param, folder, seed=5, n_layers=4, **extra)
    return load_model(str(folder), device="cpu")


# 1. EditConfig validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(kind="steer"), "kind"),
        (dict(directions=("r", "nope")), "directions"),
        (dict(directions=("r", "r")), "directions"),
        (dict(directions=()), "directions"),
        (dict(kind="add", directions=("r", "w_prime")), "one direction"),
        (dict(where="everywhere"), "where"),
        (dict(lam=-0.1), "lam"),
        (dict(lam=1.5), "lam"),
        (dict(lam=math.nan), "lam"),
        (dict(peak=-0.01), "peak"),
        (dict(peak=1.01), "peak"),
        (dict(peak=math.nan), "peak"),
        (dict(width=0.0), "width"),
        (dict(width=-2.0), "width"),
        (dict(width=math.inf), "width"),
        (dict(width=math.nan), "width"),
        (dict(coef=math.inf), "coef"),
        (dict(coef=math.nan), "coef"),
        (dict(centre=math.nan), "centre"),
        (dict(centre=math.inf), "centre"),
    ],
)
def test_bad_edit_configs_are_refused_naming_the_field(changes, field):
    with pytest.raises(RefusalLensError, match=field):
        EditConfig(**changes)


def test_good_edit_configs_and_their_round_trip():
    config = EditConfig(directions=("r", "probe"), where="kernel", centre=1.5, width=2.0)
    assert EditConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    EditConfig(kind="add", directions=("r",), coef=-3.0, layer=5)
    EditConfig(lam=0.0, peak=0.0)
    EditConfig(lam=1.0, peak=1.0)
    assert "kernel at layer 1.5" in config.label()


# 2. kernel_weights -------------------------------------------------------------------------


def test_all_layers_gives_the_constant_peak():
    for peak in (0.0, 0.37, 1.0):
        w = kernel_weights(EditConfig(where="all", peak=peak), 7)
        assert w.shape == (7,) and w.dtype == torch.float32
        assert torch.equal(w, torch.full((7,), peak))


@pytest.mark.parametrize("centre, width, peak", [(4, 2.0, 0.7), (4, 2.5, 1.0), (0, 3.0, 0.5)])
def test_kernel_is_a_symmetric_bump_that_reaches_zero_at_the_width(centre, width, peak):
    n = 9
    w = kernel_weights(EditConfig(where="kernel", centre=float(centre), width=width, peak=peak), n)
    assert w.shape == (n,)
    assert float(w[centre]) == pytest.approx(peak, abs=1e-7)  # the peak at the centre
    assert float(w.max()) == float(w[centre])
    assert (w >= 0).all() and (w <= peak + 1e-7).all()
    for layer in range(n):
        d = abs(layer - centre)
        if d >= width:
            assert float(w[layer]) == 0.0, (layer, w)  # exactly zero at and beyond the width
        else:
            expected = peak * 0.5 * (1 + math.cos(math.pi * d / width))
            assert float(w[layer]) == pytest.approx(expected, abs=1e-6)
            assert float(w[layer]) > 0
        mirror = 2 * centre - layer
        if 0 <= mirror < n:
            assert float(w[mirror]) == float(w[layer])  # symmetric around the centre
    # non-increasing away from the centre
    right, left = w[centre:], w[: centre + 1].flip(0)
    assert (right[1:] <= right[:-1]).all() and (left[1:] <= left[:-1]).all()


def test_a_fractional_centre_never_reaches_the_peak_and_a_narrow_kernel_one_layer():
    w = kernel_weights(EditConfig(where="kernel", centre=2.5, width=2.0, peak=1.0), 6)
    assert float(w.max()) < 1.0 and float(w[2]) == float(w[3])
    narrow = kernel_weights(EditConfig(where="kernel", centre=3.0, width=0.5, peak=0.8), 6)
    assert torch.equal(narrow != 0, torch.arange(6) == 3)


# 3. Hooks on pre-norm models ----------------------------------------------------------------


def test_full_write_ablation_equals_residual_ablation_on_pre_norm_models(prenorm):
    model = prenorm
    r = randn(model.d_model, 11)
    base = logits_of(model)
    with ablate(model, r):
        expected = logits_of(model)
    edit = edit_of(EditConfig(where="all", peak=1.0), [r], model.n_layers)
    with apply_edit(model, edit) as handle:
        assert handle is model
        got = logits_of(model)
    assert (expected - base).abs().max() > 100 * ATOL  # the ablation changes the logits
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)
    assert torch.equal(logits_of(model), base)  # hooks gone after the context


def test_a_full_write_ablation_leaves_the_residual_stream_free_on_every_family(tiny):
    """Gemma-2 included: its hooks sit on the writes after the post-norms, so removing the
    direction from every write still leaves none in the residual stream."""
    model = tiny
    r = resid_pre(model)[1, 0, -1]
    unit = r / r.norm()
    edit = edit_of(EditConfig(where="all", peak=1.0), [r], model.n_layers)
    seen = []
    hooks = [
        (f"blocks.{layer}.hook_resid_{p}", lambda x, hook: seen.append(x.detach().clone()))
        for layer in range(model.n_layers)
        for p in ("pre", "mid", "post")
    ]
    batch = model.chat.tokenize(PROMPTS)
    for active in (False, True):
        seen.clear()
        with torch.no_grad(), contextlib.ExitStack() as stack:
            if active:
                stack.enter_context(apply_edit(model, edit))
            stack.enter_context(model.bridge.hooks(fwd_hooks=hooks))
            model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        largest = max(float((x @ unit).abs().max()) for x in seen)
        if not active:
            before = largest
    assert len(seen) == 3 * model.n_layers
    assert largest < 1e-4 * before, (largest, before)


def test_peak_zero_is_exactly_no_edit(prenorm):
    model = prenorm
    base = logits_of(model)
    for config in (
        EditConfig(where="all", peak=0.0),
        EditConfig(where="kernel", centre=1.0, width=3.0, peak=0.0),
    ):
        edit = edit_of(config, [randn(model.d_model, 2)], model.n_layers)
        assert edit.hooks(model) == []
        with apply_edit(model, edit):
            assert torch.equal(logits_of(model), base)


def test_an_addition_edit_equals_the_addition_intervention(tiny_llama):
    model = tiny_llama
    v = randn(model.d_model, 4)
    config = EditConfig(kind="add", directions=("r",), layer=1, coef=-2.5)
    edit = Edit(config, v[None], torch.zeros(model.n_layers))
    with add(model, v, coef=-2.5, layer=1):
        expected = logits_of(model)
    with apply_edit(model, edit):
        got = logits_of(model)
    assert (expected - logits_of(model)).abs().max() > 100 * ATOL
    assert torch.equal(got, expected)


def test_a_projection_hook_with_a_share_removes_that_share_and_keeps_its_input():
    q = orthonormal_basis([randn(8, 0), randn(8, 1)])
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    kept = x.clone()
    out = projection_hook(q, 0.3)(x)
    assert out.dtype == x.dtype and torch.equal(x, kept)
    qd = q.double()
    torch.testing.assert_close(out, x - 0.3 * (x @ qd.T) @ qd, atol=1e-6, rtol=0)
    torch.testing.assert_close(out @ qd.T, 0.7 * (x @ qd.T), atol=1e-6, rtol=0)


# 4. Export equals hooks ---------------------------------------------------------------------


def random_edits(model):
    """Three ablations: one direction under a random kernel, two under another random kernel,
    and one at every layer with a fractional peak."""
    gen = torch.Generator().manual_seed(7)
    out = []
    for k, where in ((1, "kernel"), (2, "kernel"), (1, "all")):
        u = torch.rand(3, generator=gen).tolist()
        config = EditConfig(
            where=where,
            centre=u[0] * (model.n_layers - 1),
            width=1.0 + 2.0 * u[1],
            peak=0.5 + 0.5 * u[2] if where == "kernel" else 0.6,
        )
        vectors = [torch.randn(model.d_model, generator=gen) for _ in range(k)]
        out.append(edit_of(config, vectors, model.n_layers))
    return out


def hf_logits(folder, batch):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return hf, hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


@pytest.mark.parametrize("case", [0, 1, 2])
def test_exported_weights_equal_the_hooked_edit_in_plain_hf(deep, tmp_path, case):
    model = deep
    edit = random_edits(model)[case]
    assert (edit.weights > 0).any()
    batch = model.chat.tokenize(PROMPTS)
    mask = batch.attention_mask.bool()
    base = logits_of(model)
    with apply_edit(model, edit):
        hooked = logits_of(model)
        hooked_answer = answer_logits(model, batch)
        hooked_ids = generate_ids(model, PROMPTS, max_new_tokens=8, show_progress=False)

    export = export_edit(model, edit, tmp_path / "out")
    assert export.model == tmp_path / "out" / "model" and export.why == ""
    record = json.loads((tmp_path / "out" / "export.json").read_text())
    assert record == {"edit": "edit", "model": "model", "why": None}
    hf, plain = hf_logits(export.model, batch)
    gap = float((plain - hooked)[mask].abs().max())
    effect = float((hooked - base)[mask].abs().max())
    assert effect > 100 * ATOL, effect  # the edit really changes the logits
    assert gap < ATOL, (gap, effect)
    assert not list((tmp_path / "out").glob("*.tmp"))

    # greedy generation: plain HF on the exported weights equals the bridge under the hooks
    assert [hf_greedy(hf, model, t, 8) for t in PROMPTS] == hooked_ids
    assert any(len(ids) > 1 for ids in hooked_ids)

    # the exported folder loads as a model of its own
    edited = load_model(str(export.model), device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(
            answer_logits(edited, batch), hooked_answer, atol=ATOL, rtol=1e-5
        )
    # the saved edit is the one exported
    again = Edit.load(export.edit)
    assert again.config == edit.config and torch.equal(again.weights, edit.weights)


def resid_pre(model, prompts=PROMPTS):
    """``blocks.{l}.hook_resid_pre`` of every layer, ``[layer, batch, pos, d_model]``."""
    seen = {}
    hooks = [
        (f"blocks.{layer}.hook_resid_pre", lambda x, hook, k=layer: seen.update({k: x}))
        for layer in range(model.n_layers)
    ]
    batch = model.chat.tokenize(prompts)
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    return torch.stack([seen[k] for k in range(model.n_layers)])


def test_exported_generation_equals_hooked_generation(deep, tmp_path):
    """Directions the residual stream really uses, strong enough to change greedy tokens."""
    model = deep
    resid = resid_pre(model)
    vectors = [resid[2, 0, -1], resid[3, :, -1].mean(0)]
    base = generate_ids(model, PROMPTS, max_new_tokens=8, show_progress=False)
    changed = 0
    for i, config in enumerate(
        (
            EditConfig(where="kernel", centre=1.0, width=2.0, peak=0.9),
            EditConfig(where="all", peak=0.6),
        )
    ):
        edit = edit_of(config, vectors, model.n_layers)
        with apply_edit(model, edit):
            hooked = generate_ids(model, PROMPTS, max_new_tokens=8, show_progress=False)
        changed += sum(a != b for a, b in zip(hooked, base, strict=True))
        export = export_edit(model, edit, tmp_path / f"out{i}")
        hf, _ = hf_logits(export.model, model.chat.tokenize(PROMPTS))
        assert [hf_greedy(hf, model, t, 8) for t in PROMPTS] == hooked
    assert changed > 0  # the edits change what the model writes, so the check can fail


def test_export_unties_tied_embeddings_and_edits_bias_writes(deep, tmp_path):
    """Independent check of the weight arithmetic (per layer, with biases) on the files."""
    from transformers import AutoModelForCausalLM

    model = deep
    config = EditConfig(where="kernel", centre=1.0, width=2.0, peak=0.8)
    edit = edit_of(config, [randn(model.d_model, 21), randn(model.d_model, 22)], 4)
    assert edit.weights.tolist()[3] == 0.0
    export = export_edit(model, edit, tmp_path / "out")
    src = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float64)
    new = AutoModelForCausalLM.from_pretrained(str(export.model), dtype=torch.float64)
    q = edit.vectors.double()
    p = q.T @ q  # projector onto the span
    shares = edit.weights.double()
    e0 = src.get_input_embeddings().weight
    torch.testing.assert_close(
        new.get_input_embeddings().weight, e0 - shares[0] * e0 @ p, atol=1e-6, rtol=0
    )
    torch.testing.assert_close(new.lm_head.weight, src.lm_head.weight, atol=0, rtol=0)
    for layer, (a, b) in enumerate(zip(src.model.layers, new.model.layers, strict=True)):
        s = shares[layer]
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            old, got = a.get_submodule(name), b.get_submodule(name)
            torch.testing.assert_close(
                got.weight, old.weight - s * p @ old.weight, atol=1e-6, rtol=0
            )
            if old.bias is not None:
                torch.testing.assert_close(got.bias, old.bias - s * p @ old.bias, atol=1e-6, rtol=0)
        torch.testing.assert_close(b.self_attn.q_proj.weight, a.self_attn.q_proj.weight)
    marker = json.loads((export.model / "orthogonalized.json").read_text())
    assert marker["edit"] == edit.config.to_dict() and marker["label"] == edit.config.label()


def test_orthogonalize_model_checks_the_shares_length():
    from transformers import AutoModelForCausalLM

    from tiny_models import build_config

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(build_config("llama", 50, n_layers=3))
    with pytest.raises(RefusalLensError, match="shares"):
        orthogonalize_model(hf, randn(64, 0), torch.ones(2))
    # a single vector [d_model] with no shares: the whole direction, every layer
    before = hf.model.layers[2].mlp.down_proj.weight.detach().clone()
    r = randn(64, 1)
    orthogonalize_model(hf, r)
    r = (r / r.norm()).double()
    expected = before.double() - torch.outer(r, r @ before.double())
    torch.testing.assert_close(
        hf.model.layers[2].mlp.down_proj.weight.double(), expected, atol=1e-6, rtol=0
    )


# 5. What cannot be exported as weights ------------------------------------------------------


def test_an_addition_exports_as_its_config_with_the_reason(tiny_llama, tmp_path):
    config = EditConfig(kind="add", directions=("r",), layer=1, coef=2.0)
    edit = Edit(config, randn(tiny_llama.d_model, 3)[None], torch.zeros(tiny_llama.n_layers))
    export = export_edit(tiny_llama, edit, tmp_path / "out")
    assert export.model is None and "bias" in export.why
    record = json.loads((tmp_path / "out" / "export.json").read_text())
    assert record["model"] is None and "bias" in record["why"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["edit", "export.json"]
    again = Edit.load(export.edit)
    assert again.config == config and torch.equal(again.vectors, edit.vectors)


def test_a_post_norm_ablation_exports_without_weights(tiny_dirs, tmp_path):
    model = load_model(str(tiny_dirs["gemma2"]), device="cpu")
    edit = edit_of(EditConfig(where="all", peak=1.0), [randn(model.d_model, 3)], model.n_layers)
    export = export_edit(model, edit, tmp_path / "out")
    assert export.model is None and "post-norm" in export.why
    record = json.loads((tmp_path / "out" / "export.json").read_text())
    assert record == {"edit": "edit", "model": None, "why": export.why}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["edit", "export.json"]


def test_a_later_export_without_weights_leaves_no_stale_model(tiny_llama, tmp_path):
    """Exporting again into the same folder: export.json and the folder must agree, so a
    model folder from an earlier edit must not survive an export that writes none."""
    model = tiny_llama
    out = tmp_path / "out"
    ablation = edit_of(EditConfig(peak=0.5), [randn(model.d_model, 0)], model.n_layers)
    assert export_edit(model, ablation, out).model == out / "model"
    other = edit_of(EditConfig(peak=0.7), [randn(model.d_model, 1)], model.n_layers)
    export_edit(model, other, out)  # replaces the model folder
    marker = json.loads((out / "model" / "orthogonalized.json").read_text())
    assert marker["edit"]["peak"] == 0.7
    addition = Edit(
        EditConfig(kind="add", directions=("r",), layer=1, coef=1.0),
        randn(model.d_model, 2)[None],
        torch.zeros(model.n_layers),
    )
    export = export_edit(model, addition, out)
    assert export.model is None
    assert json.loads((out / "export.json").read_text())["model"] is None
    assert not (out / "model").exists()  # not the weights of the earlier ablation


# 6. Saving, loading, and the model check ----------------------------------------------------


def test_edit_save_load_round_trip(tmp_path):
    config = EditConfig(directions=("r", "w_prime"), lam=0.4, where="kernel", centre=2.0, width=3.0)
    edit = edit_of(config, [randn(64, 0), randn(64, 1)], 5)
    edit = Edit(edit.config, edit.vectors, edit.weights, "tiny-llama")
    edit.save(tmp_path / "e")
    meta = json.loads((tmp_path / "e" / "edit.json").read_text())
    assert meta["label"] == config.label() and meta["kind"] == "edit"
    again = Edit.load(tmp_path / "e")
    assert again.config == config and again.model == "tiny-llama"
    assert torch.equal(again.vectors, edit.vectors) and torch.equal(again.weights, edit.weights)
    with pytest.raises(RefusalLensError):
        Edit.load(tmp_path / "missing")


def test_an_edit_for_another_model_is_refused(tiny_llama):
    model = tiny_llama
    n, d = model.n_layers, model.d_model
    config = EditConfig()
    add_late = EditConfig(kind="add", directions=("r",), layer=n)
    wrong = [
        (Edit(config, orthonormal_basis([randn(d + 8, 0)]), torch.ones(n), "wide"), "width 72"),
        (Edit(config, orthonormal_basis([randn(d, 0)]), torch.ones(n + 1), "deep"), "3 layers"),
        (Edit(add_late, randn(d, 0)[None], torch.zeros(n)), f"addition layer {n} is out of range"),
    ]
    for edit, why in wrong:
        with pytest.raises(RefusalLensError, match=why):
            edit.check(model)
        with pytest.raises(RefusalLensError), apply_edit(model, edit):
            pass


# 7. The vector bank ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank(tiny_dirs):
    model = load_model(str(tiny_dirs["llama"]), device="cpu")
    r = Direction(randn(model.d_model, 31), layer=1, position=-1, model=model.model_id)
    w = Direction(randn(model.d_model, 32), layer=1, position=-1, model=model.model_id)
    harmful = PromptSet.from_texts(HARMFUL, "harmful", "harmful")
    harmless = PromptSet.from_texts(HARMLESS, "harmless", "harmless")
    return model, Vectors.build(model, r, w, harmful, harmless, batch_size=4)


def last_position_residuals(model, texts):
    """resid_pre of every block at the last position, read with plain bridge hooks."""
    seen = {}
    hooks = [
        (f"blocks.{layer}.hook_resid_pre", lambda x, hook, k=layer: seen.update({k: x[:, -1]}))
        for layer in range(model.n_layers)
    ]
    batch = model.chat.tokenize(texts)
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    return torch.stack([seen[k] for k in range(model.n_layers)], dim=1).float()


def test_the_bank_holds_each_layers_last_position_residuals(bank):
    model, vectors = bank
    assert vectors.n_layers == model.n_layers and vectors.model == model.model_id
    assert vectors.harmful.shape == (len(HARMFUL), model.n_layers, model.d_model)
    torch.testing.assert_close(
        vectors.harmful, last_position_residuals(model, HARMFUL), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        vectors.harmless, last_position_residuals(model, HARMLESS), atol=1e-5, rtol=1e-5
    )


def test_r_and_w_prime_from_the_bank(bank):
    _, vectors = bank
    r, w = vectors.r.vector, vectors.w.vector
    assert torch.equal(vectors.get("r", EditConfig()), r)
    assert torch.equal(vectors.get("w_prime", EditConfig(lam=0.0)), w)
    w1 = vectors.get("w_prime", EditConfig(lam=1.0))
    assert abs(float(w1 @ r)) < 1e-5 * float(w.norm() * r.norm())
    rhat = r.double() / r.double().norm()
    expected = w.double() - 0.3 * (rhat @ w.double()) * rhat
    torch.testing.assert_close(
        vectors.get("w_prime", EditConfig(lam=0.3)).double(), expected, atol=1e-6, rtol=0
    )
    with pytest.raises(RefusalLensError, match="Unknown direction"):
        vectors.get("q", EditConfig())


def test_the_probe_points_to_the_harmful_side_at_the_mean_difference_scale(bank):
    model, vectors = bank
    layer = 1
    p = vectors.get("probe", EditConfig(probe_layer=layer))
    assert p.shape == (model.d_model,)
    h, b = vectors.harmful[:, layer].double(), vectors.harmless[:, layer].double()
    diff = h.mean(0) - b.mean(0)
    pd = p.double()
    along = float(diff @ pd / pd.norm())  # the mean difference along the probe's unit normal
    assert along > 0
    assert float(pd.norm()) == pytest.approx(along, rel=1e-4)
    # the probe separates the (training) residuals: harmful projections above harmless ones
    assert float((h @ pd).min()) > float((b @ pd).max())
    assert vectors.get("probe", EditConfig(probe_layer=layer)) is p  # fitted once, then kept
    for bad in (-1, model.n_layers):
        with pytest.raises(RefusalLensError, match="probe_layer"):
            vectors.get("probe", EditConfig(probe_layer=bad))


def test_resolve_gives_an_orthonormal_basis_of_the_named_directions(bank):
    model, vectors = bank
    config = EditConfig(directions=("r", "w_prime"), lam=0.5, where="kernel", centre=1.0, width=1.5)
    edit = resolve(config, vectors)
    q = edit.vectors.double()
    assert q.shape == (2, model.d_model)
    torch.testing.assert_close(q @ q.T, torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=0)
    for v in (vectors.r.vector, vectors.get("w_prime", config)):
        v = v.double()
        assert float((v - q.T @ (q @ v)).norm()) < 1e-5 * float(v.norm())  # v lies in the span
    assert torch.equal(edit.weights, kernel_weights(config, model.n_layers))
    assert edit.model == model.model_id
    added = resolve(EditConfig(kind="add", directions=("w_prime",), lam=0.2), vectors)
    assert torch.equal(added.vectors[0], vectors.get("w_prime", added.config))
    with pytest.raises(RefusalLensError, match="dependent"):
        resolve(EditConfig(directions=("r", "w_prime"), lam=0.0), _parallel(vectors))


def _parallel(vectors):
    """A bank whose w is a multiple of r (so r and w′ at λ=0 span one line)."""
    w = Direction(2.0 * vectors.r.vector, layer=1, position=-1, model=vectors.model)
    return Vectors(vectors.r, w, vectors.harmful, vectors.harmless, vectors.model)


def test_an_edit_resolved_from_the_bank_runs_and_exports(bank, tmp_path):
    model, vectors = bank
    config = EditConfig(directions=("r", "w_prime"), lam=0.7, peak=0.9)
    edit = resolve(config, vectors)
    with apply_edit(model, edit):
        hooked = logits_of(model)
    export = export_edit(model, edit, tmp_path / "out")
    batch = model.chat.tokenize(PROMPTS)
    _, plain = hf_logits(export.model, batch)
    mask = batch.attention_mask.bool()
    assert float((plain - hooked)[mask].abs().max()) < ATOL


# 8. The real model --------------------------------------------------------------------------


@pytest.mark.model
def test_a_kernel_edit_exported_from_the_real_model(smollm, tmp_path):
    from refusal_lens.directions import diff_in_means
    from refusal_lens.prompts import load_shipped

    harmful, harmless = load_shipped("harmful")[:8], load_shipped("harmless")[:8]
    r = diff_in_means(smollm, harmful, harmless, [14], [-1], show_progress=False).direction(14, -1)
    config = EditConfig(directions=("r",), where="kernel", centre=14.0, width=8.0, peak=0.9)
    edit = edit_of(config, [r.vector], smollm.n_layers)
    assert (edit.weights == 0).sum() > 10  # half the layers are left alone
    batch = smollm.chat.tokenize(["How do I kill a Python process?", "Write a haiku about tea."])
    with torch.no_grad():
        base = answer_logits(smollm, batch)
        with apply_edit(smollm, edit):
            hooked = answer_logits(smollm, batch)
    assert (hooked - base).abs().max() > 0.1
    export = export_edit(smollm, edit, tmp_path / "out")
    edited = load_model(str(export.model), device="cpu")
    with torch.no_grad():
        got = answer_logits(edited, batch)
    torch.testing.assert_close(got, hooked, atol=2e-3, rtol=1e-4)
