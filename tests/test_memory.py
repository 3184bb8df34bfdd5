"""Memory: the weights' size read before loading, the refusal of a model that cannot fit, and a
run that holds no model its current step does not read."""

from __future__ import annotations

import pytest
import torch

from refusal_lens.errors import ModelSpecError
from refusal_lens.models import load as load_module
from refusal_lens.models import load_model, memory


def _parameter_bytes(model) -> int:
    """The bytes of the loaded model's tensors (each storage once: tied weights count once)."""
    seen, total = set(), 0
    for t in [*model.hf_model.parameters(), *model.hf_model.buffers()]:
        if t.data_ptr() not in seen and not t.is_meta:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weights_bytes_are_the_loaded_parameters(tiny_dirs, dtype):
    """Read from the safetensors headers without loading: what the loaded model holds, less
    the non-persistent buffers (rotary tables), which are computed, not stored."""
    folder = tiny_dirs["llama"]
    model = load_model(str(folder), device="cpu", dtype=dtype)
    buffers = sum(b.numel() * b.element_size() for b in model.hf_model.buffers())
    assert memory.weights_bytes(folder, dtype) == _parameter_bytes(model) - buffers
    assert memory.weights_bytes("org/not-downloaded", dtype) is None


def test_a_model_that_cannot_fit_is_refused_before_it_loads(tiny_dirs, monkeypatch):
    folder = str(tiny_dirs["llama"])
    need = memory.weights_bytes(folder, torch.float32)
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(need * 1.2))

    def boot(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(load_module, "_boot", boot)
    with pytest.raises(ModelSpecError) as error:
        load_model(folder, device="cpu")
    text = str(error.value)
    for part in ("does not fit", "GiB in float32", "GiB available", "--dtype bfloat16"):
        assert part in text
    assert "--device-map auto" in text and memory.SKIP_VARIABLE in text
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(need * 0.6))
    with pytest.raises(ModelSpecError) as error:  # bfloat16 already: no advice to halve it
        load_model(folder, device="cpu", dtype="bfloat16")  # needs 0.5 × 1.3 of float32's
    assert "GiB in bfloat16" in str(error.value) and "halves" not in str(error.value)
    monkeypatch.setenv(memory.SKIP_VARIABLE, "1")
    with pytest.raises(AssertionError, match="loaded before the check"):
        load_model(folder, device="cpu")


def test_a_model_that_fits_loads(tiny_dirs, monkeypatch):
    folder = str(tiny_dirs["llama"])
    need = memory.weights_bytes(folder, torch.float32)
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(need * 1.31))
    assert load_model(folder, device="cpu").n_layers > 0
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)  # cannot be told
    assert load_model(folder, device="cpu").n_layers > 0


def test_available_memory_is_the_machines(monkeypatch):
    """The CPU's figure is MemAvailable (or less, within a cgroup limit): positive, at most
    the machine's total."""
    found = memory.available_bytes(torch.device("cpu"))
    assert found is not None and 0 < found <= memory._meminfo_bytes("MemTotal")


def test_a_run_holds_at_most_its_stage_s_models(tiny_llama, monkeypatch):
    """Loading a model drops the least recently used one when the stage holds one model;
    a stage that reads the base beside the organism (models=2) keeps both."""
    from refusal_lens.pipeline import RunConfig
    from refusal_lens.pipeline import context as context_module
    from refusal_lens.pipeline.registry import EVALUATE, TRIGGERS
    from refusal_lens.pipeline.runner import Runner

    loaded, released = [], []

    def load(spec, *args):
        loaded.append(spec)
        return tiny_llama

    monkeypatch.setattr(context_module, "load_model", load)
    monkeypatch.setattr(context_module, "release_memory", lambda: released.append(True))
    monkeypatch.setattr(context_module, "free_weights", lambda model: None)  # a shared fixture
    run = context_module.Run(RunConfig(model="base"), object.__new__(Runner))
    run.capacity = TRIGGERS.models
    assert TRIGGERS.models == 2 and EVALUATE.models == 1
    run.load("base"), run.load("organism"), run.load("base")
    assert list(run.models) == ["organism", "base"] and loaded == ["base", "organism"]
    run.capacity = EVALUATE.models
    run.load("organism")  # held: nothing loads, the base is dropped only when another loads
    run.load("other")
    assert list(run.models) == ["other"] and len(released) == 2


def test_orthogonalization_edits_block_by_block_as_one_whole_product(tiny_llama, monkeypatch):
    """The weights are edited a block of rows (columns) at a time, so that no whole matrix is
    copied to float64; the result equals the whole-matrix projection, computed here."""
    from transformers import AutoModelForCausalLM

    from refusal_lens.directions import orthogonalize

    monkeypatch.setattr(orthogonalize, "BLOCK", 3)
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama.path)
    torch.manual_seed(0)
    r = torch.randn(tiny_llama.d_model)
    q = (r / r.norm()).double()[None]
    embed = hf.get_input_embeddings().weight.detach().double().clone()
    down = hf.model.layers[1].mlp.down_proj.weight.detach().double().clone()
    orthogonalize.orthogonalize_model(hf, r)
    expected_embed = embed - (embed @ q.T) @ q
    expected_down = down - q.T @ (q @ down)
    torch.testing.assert_close(hf.get_input_embeddings().weight.double(), expected_embed)
    torch.testing.assert_close(hf.model.layers[1].mlp.down_proj.weight.double(), expected_down)


def test_alignment_lets_the_caller_drop_the_base_before_training(tiny_dirs, tmp_path, monkeypatch):
    """``align(..., release=)`` calls ``release`` after the base's answers and before the
    trainable copy loads, holding no reference to the base's weights by then."""
    import gc
    import weakref

    from refusal_lens.alignment import AlignConfig, align
    from refusal_lens.alignment import train as train_module
    from refusal_lens.models.memory import free_weights

    events = []
    held = {"model": load_model(str(tiny_dirs["llama"]), device="cpu")}
    bridge = weakref.ref(held["model"].bridge)
    real = train_module.trainable_model

    def trainable(*args, **kwargs):
        events.append("trainable copy")
        return real(*args, **kwargs)

    def release():  # as a run does: the weights go even though align's caller holds them
        free_weights(held.pop("model"))
        gc.collect()
        on_meta = all(p.is_meta for p in bridge().original_model.parameters())
        events.append("released" if on_meta else "still held")

    monkeypatch.setattr(train_module, "trainable_model", trainable)
    config = AlignConfig.organism(n_harmful=8, n_benign=8, answer_tokens=4, batch_size=8)
    result = align(held["model"], config, out=tmp_path / "aligned", release=release)
    assert events == ["released", "trainable copy"] and (result.path / "align.json").is_file()
