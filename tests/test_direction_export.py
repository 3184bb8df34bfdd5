"""Self-describing direction files, the model-mismatch warning, and exports to llama.cpp
(control-vector GGUF) and steering-vectors, each read back with its own reader."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from refusal_lens import __version__
from refusal_lens.cli import app
from refusal_lens.directions.export import (
    FORMATS,
    export_direction,
    export_gguf,
    export_steering_vectors,
    read_gguf,
)
from refusal_lens.errors import ModelMismatchWarning, RefusalLensError
from refusal_lens.interventions import add
from refusal_lens.models.names import hub_id, normalized_name, same_model
from refusal_lens.residual_direction import Direction

SMOL_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"


def vec(d=8, seed=0):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def direction(**changes) -> Direction:
    fields = dict(
        vector=vec(), layer=5, position=-2, model="smollm2-135m", kind="refusal",
        scores={"bypass": -1.5}, config={"n": 4}, base_model=SMOL_HUB,
    )  # fmt: skip
    return Direction(**(fields | changes))


# ---------------------------------------------------------------- the file describes itself


def test_safetensors_metadata_says_where_the_direction_applies(tmp_path):
    direction().save(tmp_path)
    with safe_open(str(tmp_path / "direction.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta == {
        "artifact": "refusal-lens.direction",
        "format": "1",
        "tensor": "direction",
        "layer": "5",
        "hook": "blocks.5.hook_resid_pre",
        "position": "-2",
        "kind": "refusal",
        "model": "smollm2-135m",
        "base_model": SMOL_HUB,
        "d_model": "8",
        "refusal_lens_version": __version__,
    }
    assert json.loads((tmp_path / "direction.json").read_text())["base_model"] == SMOL_HUB


def test_hook_follows_the_config_residual_point():
    assert direction(config={"hook": "resid_post"}).hook == "blocks.5.hook_resid_post"
    assert direction(config={"hook": "attn_out"}).hook == "blocks.5.hook_resid_pre"


@pytest.mark.parametrize("as_file", [False, True], ids=["folder", "file"])
def test_load_without_the_sidecar_reads_the_metadata(tmp_path, as_file):
    r = direction()
    r.save(tmp_path)
    (tmp_path / "direction.json").unlink()
    back = Direction.load(tmp_path / "direction.safetensors" if as_file else tmp_path)
    assert torch.equal(back.vector, r.vector)
    assert (back.layer, back.position, back.model, back.kind) == (5, -2, "smollm2-135m", "refusal")
    assert back.base_model == SMOL_HUB and back.scores == {} and back.config == {}


def test_a_file_path_with_its_sidecar_keeps_scores_and_config(tmp_path):
    direction().save(tmp_path)
    back = Direction.load(tmp_path / "direction.safetensors")
    assert back.scores == {"bypass": -1.5} and back.config == {"n": 4}


def test_old_files_without_metadata_still_load_with_their_sidecar(tmp_path):
    save_file({"direction": vec()}, tmp_path / "direction.safetensors")  # no metadata
    meta = {"layer": 3, "position": -1, "model": "m", "kind": "refusal", "scores": {}}
    (tmp_path / "direction.json").write_text(json.dumps(meta))
    back = Direction.load(tmp_path)
    assert (back.layer, back.model, back.base_model) == (3, "m", None)


def test_a_file_with_neither_sidecar_nor_metadata_is_refused_clearly(tmp_path):
    save_file({"direction": vec()}, tmp_path / "direction.safetensors")
    for path in (tmp_path, tmp_path / "direction.safetensors"):
        with pytest.raises(RefusalLensError, match="no direction.json beside it and no "
                           r"refusal-lens metadata.*Put its direction.json back"):  # fmt: skip
            Direction.load(path)
    with pytest.raises(RefusalLensError, match="not a saved direction"):
        Direction.load(tmp_path / "elsewhere")


# ---------------------------------------------------------------- names and the warning


def test_names_normalize_cache_folders_hub_ids_and_bundled_names(tmp_path):
    cached = "$REFUSAL_LENS_CACHE/models/SmolLM2-135M-Instruct.Q4_1-bf3228430ce0db32"
    assert normalized_name(cached) == normalized_name(SMOL_HUB) == "smollm2-135m-instruct"
    assert normalized_name("qwen2.5-coder-0.5b-instruct-q4_k_m-49c87cf5aefb6a95") == (
        "qwen2.5-coder-0.5b-instruct"
    )
    assert same_model(["smollm2-135m"], [SMOL_HUB])
    assert same_model(["smollm2-135m"], ["SmolLM2-135M-Instruct.Q4_1-bf3228430ce0db32"])
    assert not same_model(["smollm2-135m"], ["qwen2.5-coder-0.5b"])
    assert not same_model(["Qwen/Qwen2.5-0.5B-Instruct"], ["Qwen/Qwen2.5-1.5B-Instruct"])
    assert hub_id("smollm2-135m") == SMOL_HUB
    assert hub_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert hub_id(str(tmp_path)) is None and hub_id("local-name") is None


def organism(tmp_path, base: str) -> SimpleNamespace:
    """A handle-like view of an aligned organism's folder (align.json names its base)."""
    folder = tmp_path / "smollm2-135m-sft-lora-a0.5-0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / "align.json").write_text(json.dumps({"base": base}))
    (folder / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path)}))
    spec = str(folder)
    return SimpleNamespace(
        d_model=8, n_layers=30, model_id=folder.name, spec=spec, hub_id=hub_id(spec)
    )


def test_an_aligned_organism_counts_as_its_base_model(tmp_path):
    handle = organism(tmp_path, "smollm2-135m")
    assert handle.hub_id == SMOL_HUB
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        direction(base_model=None).check(handle)  # an old direction: its model name only
        direction().check(handle)
    local = organism(tmp_path / "local", str(tmp_path / "my-base"))  # a base of unknown origin
    assert local.hub_id is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        direction(model="my-base", base_model=None).check(local)
    with pytest.warns(ModelMismatchWarning, match="qwen2.5-coder-0.5b .*used on smollm2-135m-sft"):
        direction(model="qwen2.5-coder-0.5b", base_model=None).check(handle)


def test_a_direction_on_another_model_of_the_same_width_warns(tiny_llama):
    d = tiny_llama.d_model
    other = Direction(vec(d), 1, -1, "Qwen2.5-0.5B-Instruct", base_model="Qwen/Qwen2.5-0.5B")
    with pytest.warns(ModelMismatchWarning) as record:
        other.check(tiny_llama)
    message = str(record[0].message)
    assert "Qwen2.5-0.5B-Instruct (Qwen/Qwen2.5-0.5B)" in message
    assert f"used on {tiny_llama.model_id}" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Direction(vec(d), 1, -1, tiny_llama.model_id).check(tiny_llama)
        Direction(vec(d), 1, -1, str(tiny_llama.spec)).check(tiny_llama)  # a path: same model


# ---------------------------------------------------------------- exports


def test_gguf_export_reads_back_with_gguf_reader(tmp_path):
    from gguf import GGUFReader

    r = direction()
    export_gguf(r, tmp_path / "r.gguf", layers=[5, 7, 6], scale=-0.5)
    reader = GGUFReader(tmp_path / "r.gguf")
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == SMOL_HUB
    assert fields["controlvector.layer_count"] == 3
    assert fields["refusal_lens.scale"] == -0.5 and fields["refusal_lens.layer"] == "5"
    assert fields["refusal_lens.hook"] == "blocks.5.hook_resid_pre"
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == ["direction.4", "direction.5", "direction.6"]  # block ℓ-1
    for t in tensors.values():
        assert t.data.dtype == np.float32 and t.data.shape == (8,)
        np.testing.assert_allclose(t.data, -0.5 * r.vector.numpy(), rtol=1e-6)
    vectors, meta = read_gguf(tmp_path / "r.gguf")
    assert sorted(vectors) == [5, 6, 7] and meta["refusal_lens.model"] == "smollm2-135m"


def test_gguf_export_defaults_to_the_direction_layer(tmp_path):
    export_gguf(direction(base_model=None), tmp_path / "r.gguf")
    vectors, meta = read_gguf(tmp_path / "r.gguf")
    assert list(vectors) == [5] and meta["controlvector.model_hint"] == "smollm2-135m"
    np.testing.assert_allclose(vectors[5], direction().vector.numpy())


@dataclass
class SteeringVectorFields:
    """The fields of steering_vectors.SteeringVector (the library is not a dependency)."""

    layer_activations: dict[int, torch.Tensor]
    layer_type: str = "decoder_block"


def test_steering_vectors_export_reads_back_with_torch_load(tmp_path):
    r = direction()
    export_steering_vectors(r, tmp_path / "r.pt", layers=range(3, 6), scale=2.0)
    data = torch.load(tmp_path / "r.pt", weights_only=True)
    vector = SteeringVectorFields(**data)  # exactly the constructor's fields
    assert vector.layer_type == "decoder_block"
    assert sorted(vector.layer_activations) == [2, 3, 4]
    for value in vector.layer_activations.values():
        torch.testing.assert_close(value, 2.0 * r.vector)


def test_exports_refuse_layers_they_cannot_steer_and_a_zero_scale(tmp_path):
    with pytest.raises(RefusalLensError, match=r"layers \[1\] as gguf: .*Export layers ≥ 2"):
        export_gguf(direction(), tmp_path / "r.gguf", layers=[1, 5])
    with pytest.raises(RefusalLensError, match=r"layers \[0\] as steering-vectors"):
        export_steering_vectors(direction(), tmp_path / "r.pt", layers=[0])
    with pytest.raises(RefusalLensError, match="finite, non-zero"):
        export_direction(direction(), tmp_path / "r.pt", "steering-vectors", scale=0.0)
    with pytest.raises(RefusalLensError, match="Unknown export format"):
        export_direction(direction(), tmp_path / "r.x", "npz")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_the_block_mapping_steers_where_the_direction_was_read(tiny_llama, tmp_path):
    """steering-vectors' semantics (add to decoder block K's output, HF forward hook) at the
    exported key equal refusal-lens's own addition at ``resid_pre`` of layer K + 1."""
    r = Direction(vec(tiny_llama.d_model), 1, -1, tiny_llama.model_id)
    tokens = tiny_llama.tokenizer("How do plants grow?", return_tensors="pt").input_ids
    with add(tiny_llama, r, 3.0), torch.no_grad():
        expected = tiny_llama.hf_model(tokens).logits
    path = export_steering_vectors(r, tmp_path / "r.pt", scale=3.0)
    (block,) = torch.load(path, weights_only=True)["layer_activations"].items()

    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (output[0] + block[1], *output[1:])
        return output + block[1]

    layer = tiny_llama.hf_model.model.layers[block[0]]
    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            got = tiny_llama.hf_model(tokens).logits
    finally:
        handle.remove()
    with torch.no_grad():
        plain = tiny_llama.hf_model(tokens).logits
    assert not torch.allclose(plain, expected, atol=1e-4)  # the addition does something
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_saved_file_is_the_same_bytes_in_every_process(tmp_path):
    """safetensors writes its metadata from a hash map ordered afresh in each process; the
    header is sorted, so a rerun of a stage writes the same bytes (and a resumed run's
    tables equal an uninterrupted one's)."""
    code = (
        "import sys, torch\n"
        "from refusal_lens.residual_direction import Direction\n"
        "Direction(torch.arange(1.0, 9.0), layer=3, position=-1, model='m', "
        "base_model='org/m', scores={'a': 1.0}).save(sys.argv[1])\n"
    )
    files = []
    for run in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / str(run))], check=True)
        files.append((tmp_path / str(run) / "direction.safetensors").read_bytes())
    assert files[0] == files[1] == files[2]
    loaded = Direction.load(tmp_path / "0" / "direction.safetensors")
    assert loaded.base_model == "org/m" and loaded.vector.tolist() == list(range(1, 9))


# ---------------------------------------------------------------- the command


def test_export_command(tmp_path):
    direction().save(tmp_path / "dir")
    runner = CliRunner()
    args = ["export", str(tmp_path / "dir"), "--format", "gguf", "--out", str(tmp_path / "x")]
    result = runner.invoke(app, [*args, "--layers", "5:8", "--scale", "-1"])
    assert result.exit_code == 0, result.output
    assert "blocks [4, 5, 6]" in result.output
    vectors, meta = read_gguf(tmp_path / "x" / f"{direction().kind}.gguf")
    assert sorted(vectors) == [5, 6, 7] and meta["refusal_lens.scale"] == -1.0
    np.testing.assert_allclose(vectors[6], -direction().vector.numpy())
    out = tmp_path / "y" / f"{direction().kind}.pt"
    args = ["export", str(tmp_path / "dir" / "direction.safetensors"), "--out", str(out.parent)]
    result = runner.invoke(app, [*args, "--format", "steering-vectors"])
    assert result.exit_code == 0, result.output
    assert list(torch.load(out, weights_only=True)["layer_activations"]) == [4]
    result = runner.invoke(app, [*args, "--format", "npz"])
    assert result.exit_code == 2 and "gguf" in result.output
    help_text = runner.invoke(app, ["export", "--help"]).output
    assert all(name in help_text for name in FORMATS) and "Example" in help_text
