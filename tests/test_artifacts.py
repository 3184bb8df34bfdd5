"""Atomic writes and the streaming safetensors writer."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from refusal_lens.artifacts import StreamingSafetensorsWriter, atomic_path, load_tensor_mmap
from refusal_lens.errors import RefusalLensError


def test_rows_written_out_of_order_read_back_exactly(tmp_path):
    data = torch.randn(5, 3, 2)
    path = tmp_path / "x.safetensors"
    with StreamingSafetensorsWriter(path, "x", tuple(data.shape), metadata={"k": "v"}) as w:
        for i in [3, 0, 4, 1, 2]:
            w.write_row(i, data[i])
    assert torch.equal(load_file(path)["x"], data)  # the reference reader agrees
    assert torch.equal(load_tensor_mmap(path, "x"), data)


def test_interrupted_or_incomplete_writes_leave_no_file(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(KeyboardInterrupt), StreamingSafetensorsWriter(path, "x", (4, 2)) as w:
        w.write(torch.zeros(2, 2))
        raise KeyboardInterrupt
    with (
        pytest.raises(RefusalLensError, match="never written"),
        StreamingSafetensorsWriter(path, "x", (4, 2)) as w,
    ):
        w.write(torch.zeros(3, 2))
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_shapes_and_double_writes(tmp_path):
    w = StreamingSafetensorsWriter(tmp_path / "x.safetensors", "x", (2, 3))
    with pytest.raises(RefusalLensError, match="does not fit"):
        w.write_row(0, torch.zeros(4))
    w.write_row(0, torch.zeros(3))
    with pytest.raises(RefusalLensError, match="already written"):
        w.write_row(0, torch.zeros(3))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_only_publishes_on_success(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_artifacts_record_portable_paths(tmp_path, monkeypatch):
    import json

    from refusal_lens.artifacts import portable_path, write_json
    from refusal_lens.models import cache_dir
    from refusal_lens.models.spec import resolve_spec

    cached = cache_dir() / "aligned" / "model-abc"
    assert portable_path(str(cached)) == "$REFUSAL_LENS_CACHE/aligned/model-abc"
    monkeypatch.chdir(tmp_path)
    assert portable_path(f"alpaca:{tmp_path}/data/a.json") == "alpaca:data/a.json"
    assert portable_path("/elsewhere/x.json") == "/elsewhere/x.json"  # as the user gave it
    assert portable_path("harmful") == "harmful" and portable_path("a: /b") == "a: /b"
    write_json(tmp_path / "meta.json", {"model": cached, "set": f"x:{tmp_path / 'p.jsonl'}"})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta == {"model": "$REFUSAL_LENS_CACHE/aligned/model-abc", "set": "x:p.jsonl"}
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    (cached / "tokenizer.json").write_text("{}")  # a model folder holds its tokenizer
    assert resolve_spec(meta["model"]) == ("dir", str(cached))  # read back as a model spec


def test_committed_artifacts_record_no_machine_paths():
    """figures/ is read on other machines: paths are project-relative or in the cache."""
    import json
    from pathlib import Path

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    # a drive path (C:/, C:\\) or a file URI anywhere; a web URL inside a model's answer is text
    MACHINE_PATH = re.compile(r"(?<![A-Za-z])[A-Za-z]:[\\/]|file:/")
    figures = Path(__file__).resolve().parents[1] / "figures"
    absolute = [
        (path.name, text)
        for path in figures.rglob("*.json")
        for text in strings(json.loads(path.read_text()))
        if text.startswith("/") or MACHINE_PATH.search(text)
    ]
    assert not absolute, absolute[:5]


def test_saving_an_artifact_keeps_every_file_it_did_not_write(tmp_path):
    from refusal_lens.artifacts import (
        artifact_meta,
        atomic_dir,
        json_writer,
        read_meta,
        save_artifact,
    )

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "direction.json").write_text("{}")
    save_artifact(
        folder, {"a.txt": lambda p: p.write_text("a"), "a.json": json_writer(artifact_meta("a"))}
    )
    assert (folder / "direction.json").read_text() == "{}" and read_meta(folder, "a.json", "a")

    def broken(path):
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_artifact(folder, {"a.txt": lambda p: p.write_text("new"), "b.json": broken})
    assert (folder / "a.txt").read_text() == "a" and not (folder / "b.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a.json", "a.txt", "direction.json"]
    with pytest.raises(RefusalLensError, match="holds a a artifact, not a b one"):
        read_meta(folder, "a.json", "b")
    with pytest.raises(RefusalLensError, match="did not write"), atomic_dir(folder, "config.json"):
        pass
    assert (folder / "direction.json").exists()
