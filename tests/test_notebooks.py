"""The notebooks run top to bottom on the bundled model (reduced prompt counts)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(path: Path, cache: Path, monkeypatch) -> list:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    # the kernel inherits the environment: the user's cache (so an aligned model trained
    # before is reused) and the fast setting
    monkeypatch.setenv("REFUSAL_LENS_CACHE", str(cache))
    monkeypatch.setenv("REFUSAL_LENS_NOTEBOOK_FAST", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows figures
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


@pytest.mark.model
def test_ablate_directions_notebook(monkeypatch, shared_data):
    from conftest import USER_CACHE

    outputs = run_notebook(NOTEBOOKS / "ablate_directions.ipynb", USER_CACHE[0], monkeypatch)
    text = "".join(out.get("text", "") for out in outputs)
    assert "Selected layer" in text or "filtered out" in text
    assert "score ablated:" in text and "added:" in text
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 2
