"""The notebooks run top to bottom on the bundled model (reduced prompt counts)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# a Python string literal as repr() prints it (the notebooks print their chosen prompts so)
QUOTED = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""


def chosen_prompts(text: str) -> list[str]:
    """The prompts a notebook picked at run time, from its ``chosen: '...'`` lines."""
    return [ast.literal_eval(q) for q in re.findall(rf"^chosen: {QUOTED}", text, re.M)]


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
    from refusal_lens.prompts import load_prompts
    from refusal_lens.scoring import is_refusal

    outputs = run_notebook(NOTEBOOKS / "ablate_directions.ipynb", USER_CACHE[0], monkeypatch)
    text = "".join(out.get("text", "") for out in outputs)
    assert "Selected layer" in text or "filtered out" in text
    # the examples are picked at run time from held-out benchmark prompts
    harmful, harmless = chosen_prompts(text)
    assert harmful in load_prompts("jailbreakbench").texts
    assert harmless in load_prompts("alpaca").texts
    lines = text.splitlines()
    [refused, answered] = [line for line in lines if line.startswith("before: ")]
    [steered] = [line for line in lines if line.startswith("added: ")]
    assert is_refusal(refused) and not is_refusal(answered) and is_refusal(steered)
    score, ablated = (
        float(re.search(rf"score {w}: (\S+)", text).group(1)) for w in ("before", "ablated")
    )
    assert score > 0 and ablated < score  # ablating r lowers the refusal score
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 2


@pytest.mark.model
def test_attribute_refusals_notebook(monkeypatch, shared_data):
    from conftest import USER_CACHE
    from refusal_lens.prompts import load_prompts
    from refusal_lens.scoring import is_refusal

    outputs = run_notebook(NOTEBOOKS / "attribute_refusals.ipynb", USER_CACHE[0], monkeypatch)
    text = "".join(out.get("text", "") for out in outputs)
    # the prompt is picked at run time: a safe XSTest prompt that the model refuses
    [prompt] = chosen_prompts(text)
    assert prompt in load_prompts("xstest-safe").texts
    score, rank, n = re.search(r"refusal score: (\S+), rank (\d+) of (\d+)", text).groups()
    assert float(score) > 0 and 1 <= int(rank) <= int(n)
    for method in ("occlusion", "grad_x_input", "integrated_gradients", "projection"):
        assert re.search(rf"{method}: ['\"]", text)  # each attributed the refusal to tokens
    before, after = (
        float(x)
        for x in re.search(r"score before: (\S+)\s+score after deleting: (\S+)", text).groups()
    )
    assert before > 0 > after  # refused, then answered once the top token is deleted
    assert float(re.search(r"tokenized afresh: (\S+)", text).group(1)) < 0
    answers = dict(re.findall(r"answer (before|after):\s+(.*)", text))
    assert is_refusal(answers["before"]) and not is_refusal(answers["after"])
    pages = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    assert len(pages) == 1 and pages[0].count("var CircuitsVis=") == 1
    assert pages[0].count("CircuitsVis.render(") == 4 and "unpkg" not in pages[0]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 1


@pytest.mark.model
def test_layer_boundaries_notebook(monkeypatch, shared_data):
    from conftest import USER_CACHE

    outputs = run_notebook(NOTEBOOKS / "layer_boundaries.ipynb", USER_CACHE[0], monkeypatch)
    text = "".join(out.get("text", "") for out in outputs)
    accuracy = re.findall(r"layer (\d+): probe accuracy (\S+),", text)
    assert [int(layer) for layer, _ in accuracy] == [4, 8, 12, 16, 20, 24, 29]
    assert all(0.5 < float(acc.rstrip(",")) <= 1.0 for _, acc in accuracy)
    selected = int(re.search(r"RASS selected (\d+) of \d+ candidates", text).group(1))
    shown = re.findall(r"margin ([-+]\S+)  p_harmful (\S+)", text)
    assert selected > 0 and len(shown) == min(selected, 8)
    assert all(abs(float(m)) <= 0.5 and float(p) <= 0.5 for m, p in shown)  # band, judge (2 dp)
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 3
