"""Cache keys follow contents, recipes and library versions; broken entries are rebuilt.

The self-distilled answers once kept the same cache name under a transformers release that
generated garbage and under one that did not, so a machine that cached the garbage kept it
after a downgrade. These tests pin down what a key depends on, and what it must not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from refusal_lens import cache
from refusal_lens.alignment import AlignConfig
from refusal_lens.alignment.data import answers_cache_path, self_distilled_answers
from refusal_lens.models import cache_dir, load_model
from refusal_lens.prompts import PromptSet
from test_alignment import run_align, tiny_config


@pytest.fixture
def other_libraries(monkeypatch):
    """Pretend a different transformers release is installed."""

    def switch():
        real = cache.library_versions()
        monkeypatch.setattr(
            cache, "library_versions", lambda: {**real, "transformers": "5.24.0-pretend"}
        )

    return switch


def test_keys_follow_inputs_recipe_and_libraries(other_libraries, monkeypatch):
    key, record = cache.cache_key("self-distilled-answers", {"a": 1})
    assert key == cache.cache_key("self-distilled-answers", {"a": 1})[0]
    assert record["libraries"]["transformers"] == cache.library_versions()["transformers"]
    assert key != cache.cache_key("self-distilled-answers", {"a": 2})[0]
    assert key != cache.cache_key("aligned-model", {"a": 1})[0]
    monkeypatch.setitem(cache.RECIPES, "self-distilled-answers", 99)
    bumped = cache.cache_key("self-distilled-answers", {"a": 1})[0]
    assert bumped != key
    other_libraries()
    assert cache.cache_key("self-distilled-answers", {"a": 1})[0] not in (key, bumped)
    with pytest.raises(KeyError, match="RECIPES"):
        cache.cache_key("unknown-recipe", {})


def test_model_fingerprint_follows_contents_not_location(tiny_dirs, tmp_path):
    original = tiny_dirs["llama"]
    copy = shutil.copytree(original, tmp_path / "elsewhere" / "model")
    assert cache.model_fingerprint(copy) == cache.model_fingerprint(original)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert cache.model_fingerprint(copy) != cache.model_fingerprint(original)


def test_answers_are_keyed_by_weights_and_libraries_not_paths(tiny_dirs, tmp_path, other_libraries):
    prompts = PromptSet.from_texts(["Hi", "Explain rain."], "harmless")
    model = load_model(str(tiny_dirs["qwen2"]), device="cpu")
    moved = load_model(str(shutil.copytree(tiny_dirs["qwen2"], tmp_path / "moved")), device="cpu")
    path = answers_cache_path(model, prompts, 4)
    key = path.stem.rsplit("-", 1)[1]  # the name starts with the folder's name, for people
    assert answers_cache_path(moved, prompts, 4).stem.rsplit("-", 1)[1] == key
    assert answers_cache_path(model, prompts, 5) != path
    assert answers_cache_path(model, prompts[:1], 4) != path
    other_libraries()
    assert answers_cache_path(model, prompts, 4) != path


def test_stale_or_corrupt_answers_are_regenerated_not_loaded(tiny_dirs, other_libraries):
    prompts = PromptSet.from_texts(["Hi", "Explain rain."], "harmless")
    model = load_model(str(tiny_dirs["llama"]), device="cpu")
    answers = self_distilled_answers(model, prompts, 4)
    path = answers_cache_path(model, prompts, 4)
    assert json.loads(path.read_text()) == answers
    for broken in ('["only one answer"]', '{"not": "a list"}', '["truncated'):
        path.write_text(broken)
        assert self_distilled_answers(model, prompts, 4) == answers
        assert json.loads(path.read_text()) == answers
    path.write_text(json.dumps(["stale"] * 2))  # what another library version might have left
    other_libraries()
    assert self_distilled_answers(model, prompts, 4) == answers  # a new key: regenerated


def tiny_recipe(**kw) -> AlignConfig:
    return tiny_config(**{"n_harmful": 8, "n_benign": 8, "epochs": 1, **kw})


def test_aligned_model_key_ignores_paths_and_a_corrupt_entry_is_rebuilt(tiny_dirs, tmp_path):
    out = run_align(tiny_dirs["llama"], tiny_recipe())
    assert out.parent == cache_dir() / "aligned"
    assert cache.verify_entry(out) is None
    moved = shutil.copytree(tiny_dirs["llama"], tmp_path / "moved" / "llama")
    assert run_align(moved, tiny_recipe()) == out  # the base model's path is not in the key
    weights = out / "model.safetensors"
    reference = weights.read_bytes()
    weights.write_bytes(reference[: len(reference) // 2])  # truncated, as by a crash or a copy
    assert "bytes" in cache.verify_entry(out)
    assert run_align(tiny_dirs["llama"], tiny_recipe()) == out
    assert cache.verify_entry(out) is None and weights.read_bytes() == reference  # deterministic
    assert run_align(tiny_dirs["llama"], tiny_recipe(seed=1)) != out


def test_entries_without_a_complete_manifest_are_removed_and_rebuilt(tmp_path):
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "a.txt").write_text("hello")
    assert "manifest" in cache.verify_entry(entry)
    cache.write_manifest(entry, {"what": "test"})
    assert cache.verify_entry(entry) is None and cache.usable_entry(entry)
    (entry / "a.txt").write_text("hellO")
    assert "hash" in cache.verify_entry(entry)
    (entry / "cache_manifest.json").write_text("{")
    assert cache.verify_entry(entry) == "unreadable manifest"
    assert not cache.usable_entry(entry) and not entry.exists()


@pytest.mark.model
def test_the_converted_bundled_model_is_a_verified_entry_keyed_by_content():
    from refusal_lens.models.load import model_path

    folder = cache_dir() / "models"
    path = model_path("smollm2-135m")
    assert str(path).startswith(str(folder)) and cache.verify_entry(Path(path)) is None
    record = json.loads((Path(path) / cache.MANIFEST_FILENAME).read_text())["key"]
    assert record["recipe"] == "gguf-conversion" and len(record["inputs"]["gguf_sha256"]) == 64
