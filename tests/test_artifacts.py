"""Atomic writes and the streaming safetensors writer."""

from __future__ import annotations

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
