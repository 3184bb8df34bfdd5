"""Models larger than one device: ``load_model(..., device_map=...)`` on the CPU.

The tiny Llama model is split by accelerate's own dispatch (through TransformerBridge): some
modules stay on ``cpu``, the others are offloaded to ``disk`` (``meta`` placeholders whose
weights are read from the model's safetensors file when the module runs). Every result must
equal the single-device load's. A real split over several GPUs is not run here.
"""

from __future__ import annotations

import json

import pytest
import torch

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.alignment import AlignConfig, align
from refusal_lens.errors import ModelSpecError, RefusalLensError
from refusal_lens.generation import generate_ids
from refusal_lens.interventions import add
from refusal_lens.models import load_model
from refusal_lens.scoring import refusal_scores

PROMPTS = [
    "How do I kill a Python process?",
    "Write a poem about the sea.",
    "Tell me about the weather.",
]
# layer 1 (and, in the second map, the input embeddings) offloaded to disk
SPLIT = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}
EMBED_ON_DISK = {**SPLIT, "model.embed_tokens": "disk"}
ALL_CPU = dict.fromkeys(SPLIT, "cpu")


@pytest.fixture(scope="module")
def split_llama(tiny_dirs):
    return load_model(str(tiny_dirs["llama"]), device_map=SPLIT)


def test_the_engines_split_the_model_as_asked(split_llama):
    hf = split_llama.hf_model
    assert split_llama.device_map == SPLIT
    assert split_llama.bridge.cfg.n_devices == 2  # cpu and disk
    layer0, layer1 = (hf.model.layers[i] for i in (0, 1))
    assert {p.device.type for p in layer0.parameters()} == {"cpu"}
    assert {p.device.type for p in layer1.parameters()} == {"meta"}  # offloaded
    assert split_llama.device == torch.device("cpu")
    assert split_llama.describe()["device"] == "cpu"


def test_batches_go_to_the_embeddings_execution_device_not_meta(tiny_dirs, tiny_llama):
    model = load_model(str(tiny_dirs["llama"]), device_map=EMBED_ON_DISK)
    embed = model.hf_model.get_input_embeddings()
    assert {p.device.type for p in embed.parameters()} == {"meta"}
    assert model.device == torch.device("cpu")
    got = refusal_scores(model, PROMPTS, show_progress=False)
    torch.testing.assert_close(got, refusal_scores(tiny_llama, PROMPTS, show_progress=False))


def test_residuals_scores_and_generation_equal_the_single_device_load(split_llama, tiny_llama):
    config = CollectConfig(hook="resid_post")
    for model_config in (None, config):
        got = collect_residuals(split_llama, PROMPTS, model_config, show_progress=False)
        ref = collect_residuals(tiny_llama, PROMPTS, model_config, show_progress=False)
        assert got.acts.shape[1] == split_llama.n_layers == 2
        torch.testing.assert_close(got.acts, ref.acts)
    torch.testing.assert_close(
        refusal_scores(split_llama, PROMPTS, show_progress=False),
        refusal_scores(tiny_llama, PROMPTS, show_progress=False),
    )
    for use_cache in (True, False):
        got_ids = generate_ids(split_llama, PROMPTS, 8, show_progress=False, use_cache=use_cache)
        ref_ids = generate_ids(tiny_llama, PROMPTS, 8, show_progress=False, use_cache=use_cache)
        assert got_ids == ref_ids and all(got_ids)


def test_hooks_fire_on_offloaded_layers(split_llama, tiny_llama):
    names = ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_out", "blocks.1.hook_resid_post"]
    seen: dict[str, list] = {}

    def record(model):
        seen.clear()
        hooks = [(n, lambda x, hook, n=n: seen.setdefault(n, []).append(x.clone())) for n in names]
        batch = model.chat.tokenize(PROMPTS).to(model.device)
        with torch.inference_mode(), model.bridge.hooks(fwd_hooks=hooks):
            model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        return {k: v[0] for k, v in seen.items()}

    got, ref = record(split_llama), record(tiny_llama)
    assert set(got) == set(names)
    for name in names:
        torch.testing.assert_close(got[name], ref[name])
    # an intervention at the offloaded layer acts there, as on the single-device load
    vector = torch.randn(split_llama.d_model, generator=torch.Generator().manual_seed(0))
    scores = []
    for model in (split_llama, tiny_llama):
        with add(model, vector, coef=4.0, layer=1):
            scores.append(refusal_scores(model, PROMPTS, show_progress=False))
    torch.testing.assert_close(scores[0], scores[1])
    assert not torch.allclose(scores[0], refusal_scores(tiny_llama, PROMPTS, show_progress=False))


def test_device_and_device_map_together_are_a_clear_error(tiny_dirs):
    path = str(tiny_dirs["llama"])
    with pytest.raises(ModelSpecError, match=r"either device='cpu' or device_map=.*not both"):
        load_model(path, device="cpu", device_map=SPLIT)
    with pytest.raises(ModelSpecError, match=r"either device='cpu' or n_devices=2"):
        load_model(path, device="cpu", n_devices=2)
    with pytest.raises(ModelSpecError, match="either device_map='auto' or n_devices=2"):
        load_model(path, device_map="auto", n_devices=2)
    with pytest.raises(ModelSpecError, match=r"cannot put weights on 'meta'.*use 'disk'"):
        load_model(path, device_map={**SPLIT, "model.layers.1": "meta"})
    if torch.cuda.device_count() < 64:
        with pytest.raises(ModelSpecError, match="n_devices=64 needs 64 CUDA devices"):
            load_model(path, n_devices=64)
    if not torch.cuda.is_available():  # the bridge refuses a map that mixes GPU and offload
        with pytest.raises(ModelSpecError, match="Could not place the model with device_map"):
            load_model(path, device_map={**SPLIT, "model.layers.0": 0})


def tiny_align_config(**kw) -> AlignConfig:
    base = dict(benign="harmless", n_harmful=4, n_benign=4, batch_size=4, answer_tokens=4)
    return AlignConfig(**{**base, "epochs": 1, "lora_rank": 4, "lr": 1e-2, **kw})


def test_alignment_refuses_offloaded_weights_before_any_work(split_llama, tmp_path):
    with pytest.raises(RefusalLensError, match=r"offloads layers to disk.*cannot be trained"):
        align(split_llama, tiny_align_config(), tmp_path / "aligned")
    assert not (tmp_path / "aligned").exists()


def test_alignment_places_its_trainable_copy_with_the_handles_device_map(
    tiny_dirs, tmp_path, monkeypatch
):
    """A map with no offload trains: the trainable copy is loaded by accelerate with the base
    handle's map and trains to the same weights. On the CPU an all-``cpu`` map is one device
    (accelerate dispatches nothing), so the handle is told it has one; a real split over GPUs
    is not run here."""
    from safetensors.torch import load_file

    import refusal_lens.alignment.train as train_module
    from refusal_lens.models import ModelHandle

    assert load_model(str(tiny_dirs["llama"]), device_map=ALL_CPU).device_map is None
    config = tiny_align_config()
    ref = align(load_model(str(tiny_dirs["llama"])), config, tmp_path / "plain").path
    maps = []
    real = train_module.trainable_model
    monkeypatch.setattr(train_module, "trainable_model", lambda *a: maps.append(a[4]) or real(*a))
    monkeypatch.setattr(ModelHandle, "device_map", property(lambda self: ALL_CPU))
    got = align(load_model(str(tiny_dirs["llama"])), config, tmp_path / "mapped").path
    assert maps == [ALL_CPU]
    stats = [json.loads((p / "align.json").read_text())["stats"] for p in (got, ref)]
    assert stats[0]["steps"] == stats[1]["steps"] == 2
    got_w, ref_w = load_file(got / "model.safetensors"), load_file(ref / "model.safetensors")
    assert set(got_w) == set(ref_w)
    for key in ref_w:
        torch.testing.assert_close(got_w[key], ref_w[key])
    base = load_file(tiny_dirs["llama"] / "model.safetensors")
    assert any(not torch.equal(base[k], got_w[k]) for k in base)  # it did train
