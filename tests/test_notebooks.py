"""The notebooks run top to bottom on the bundled model (reduced prompt counts), and what they
print is checked against independent computations: the answers against plain HF ``generate``
(with the interventions as HF pre-hooks), the scores against plain HF forwards.

The notebooks pick their examples at run time by their own rules (a refused prompt, one that
is answered once edited); asserting those rules again would prove nothing, so the tests check
instead what a notebook could get wrong: the numbers and answers it shows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

# One worker runs the three in order (--dist loadfile): the first trains the organism.
pytestmark = pytest.mark.model
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# Logits by which a printed token may fall below plain HF's choice: float32 through hooks in
# the bridge and in HF differ by ~1e-3; a token HF would not choose falls short by whole logits.
TIE = 0.05
# a Python string literal as repr() prints it (the notebooks print their chosen prompts so)
QUOTED = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""


def chosen_prompts(text: str) -> list[str]:
    """The prompts a notebook picked at run time, from its ``chosen: '...'`` lines."""
    return [ast.literal_eval(q) for q in re.findall(rf"^chosen: {QUOTED}", text, re.M)]


def run_notebook(path: Path, cache: Path, monkeypatch, epilogue: str = "") -> list:
    """Execute the notebook; ``epilogue`` is a code cell added at its end (the test's own,
    to save what the notebook computed for an independent check)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    if epilogue:
        nb.cells.append(nbformat.v4.new_code_cell(epilogue))
    # the kernel inherits the environment: the user's cache (so an aligned model trained
    # before is reused) and the fast setting
    monkeypatch.setenv("REFUSAL_LENS_CACHE", str(cache))
    monkeypatch.setenv("REFUSAL_LENS_NOTEBOOK_FAST", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows figures
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def organism(text: str):
    """The aligned organism the notebook printed it used (its cache folder's name), loaded
    by the package (for its chat template and refusal tokens) and by plain HF."""
    from conftest import USER_CACHE
    from hf_reference import plain_hf
    from refusal_lens.models import load_model

    model_id = re.search(r"^(smollm2-135m-sft-lora-\S+)", text, re.M).group(1)
    model = load_model(str(USER_CACHE[0] / "aligned" / model_id), device="cpu")
    return model, plain_hf(model)


def printed(name: str, text: str) -> float:
    """A signed number the notebook printed as ``name: +1.23``."""
    return float(re.search(rf"{name}: ([-+]\d+\.\d+)", text).group(1))


def test_ablate_directions_notebook(monkeypatch, shared_data, tmp_path):
    """What the notebook prints, against plain HF: its answers (greedy ``generate``, with r
    ablated at every layer and added at its layer by HF pre-hooks) and its refusal scores."""
    from conftest import USER_CACHE
    from hf_reference import (
        hf_ablation,
        hf_addition,
        hf_answer,
        hf_greedy_gaps,
        hf_refusal_score,
    )
    from refusal_lens.prompts import load_prompts
    from refusal_lens.residual_direction import Direction

    saved = tmp_path / "r"
    outputs = run_notebook(
        NOTEBOOKS / "ablate_directions.ipynb", USER_CACHE[0], monkeypatch, f"r.save({str(saved)!r})"
    )
    text = "".join(out.get("text", "") for out in outputs)
    assert "Selected layer" in text or "filtered out" in text
    # the examples are picked at run time from held-out benchmark prompts
    harmful, harmless = chosen_prompts(text)
    assert harmful in load_prompts("jailbreakbench").texts
    assert harmless in load_prompts("alpaca").texts
    model, hf = organism(text)
    r = Direction.load(saved)
    answers = dict(re.findall(r"^(before|ablated|added): (.*)$", text, re.M))  # last of each
    [harmful_before, _] = re.findall(r"^before: (.*)$", text, re.M)
    assert harmful_before == hf_answer(hf, model, harmful, 40)
    assert answers["before"] == hf_answer(hf, model, harmless, 40)
    with hf_ablation(hf, r.vector):
        assert hf_greedy_gaps(hf, model, harmful, answers["ablated"]).max() < TIE
        ablated = hf_refusal_score(hf, model, harmful)
    with hf_addition(hf, r.layer, r.vector, 1.0):
        assert hf_greedy_gaps(hf, model, harmless, answers["added"]).max() < TIE
        added = hf_refusal_score(hf, model, harmless)
    score = hf_refusal_score(hf, model, harmful)
    [harmful_score, harmless_score] = re.findall(r"^score before: ([-+][\d.]+)", text, re.M)
    assert float(harmful_score) == pytest.approx(score, abs=0.006)
    assert float(harmless_score) == pytest.approx(hf_refusal_score(hf, model, harmless), abs=0.006)
    assert printed("score ablated", text) == pytest.approx(ablated, abs=0.006)
    assert printed("added", text) == pytest.approx(added, abs=0.006)
    assert score > 0 and ablated < score  # ablating r lowers the refusal score
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 2


def test_attribute_refusals_notebook(monkeypatch, shared_data):
    """What the notebook prints, against plain HF: the refusal score of the chosen prompt, of
    it without its top occlusion token (the occlusion recomputed by HF forwards) and of the
    edited text; the answers before and after (greedy ``generate``)."""
    from conftest import USER_CACHE
    from hf_reference import hf_answer, hf_refusal_score
    from refusal_lens.prompts import load_prompts

    outputs = run_notebook(NOTEBOOKS / "attribute_refusals.ipynb", USER_CACHE[0], monkeypatch)
    text = "".join(out.get("text", "") for out in outputs)
    # the prompt is picked at run time: a safe XSTest prompt that the model refuses
    [prompt] = chosen_prompts(text)
    assert prompt in load_prompts("xstest-safe").texts
    model, hf = organism(text)
    score = hf_refusal_score(hf, model, prompt)
    assert printed("refusal score", text) == pytest.approx(score, abs=0.006)
    assert printed("score before", text) == pytest.approx(score, abs=0.006)
    drops = hf_occlusion(hf, model, prompt)
    top = int(drops.argmax())
    user = model.chat.tokenize([prompt]).user_mask[0].nonzero().flatten().tolist()
    token = model.tokenizer.decode(model.chat.tokenize([prompt]).input_ids[0, user[top]])
    assert re.search(rf"occlusion: {re.escape(repr(token))} ([-+]\S+),", text)
    shown = float(re.search(rf"occlusion: {re.escape(repr(token))} ([-+]\S+),", text).group(1))
    assert shown == pytest.approx(float(drops[top]), abs=0.006)
    after = printed("score after deleting", text)
    assert after == pytest.approx(score - float(drops[top]), abs=0.006)
    [edited] = re.findall(rf"^deleted {re.escape(repr(token))}: {QUOTED}$", text, re.M)
    edited = ast.literal_eval(edited)
    fresh = printed("tokenized afresh", text)
    assert fresh == pytest.approx(hf_refusal_score(hf, model, edited), abs=0.006)
    for method in ("occlusion", "grad_x_input", "integrated_gradients", "projection"):
        assert re.search(rf"{method}: ['\"]", text)  # each attributed the refusal to tokens
    answers = dict(re.findall(r"answer (before|after):\s+(.*)", text))
    assert answers["before"] == hf_answer(hf, model, prompt, 24)
    assert answers["after"] == hf_answer(hf, model, edited, 24)
    pages = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    assert len(pages) == 1 and pages[0].count("var CircuitsVis=") == 1
    assert pages[0].count("CircuitsVis.render(") == 4 and "unpkg" not in pages[0]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 1


def hf_occlusion(hf, model, prompt: str):
    """The refusal score's drop when each user token is deleted, by plain HF forwards."""
    import torch

    batch = model.chat.tokenize([prompt])
    ids = batch.input_ids[0].tolist()
    user = batch.user_mask[0].nonzero().flatten().tolist()
    refusal = torch.zeros(hf.config.vocab_size, dtype=torch.bool)
    refusal[model.refusal_tokens] = True

    def score(tokens: list[int]) -> float:
        with torch.inference_mode():
            logprobs = hf(torch.tensor([tokens])).logits[0, -1].float().log_softmax(-1)
        return float(logprobs[refusal].logsumexp(-1) - logprobs[~refusal].logsumexp(-1))

    base = score(ids)
    return torch.tensor([base - score(ids[:i] + ids[i + 1 :]) for i in user])


def test_layer_boundaries_notebook(monkeypatch, shared_data):
    """The probes separate harmful from harmless at every layer shown, RASS selects some
    candidates, and the refusal scores it printed for them are plain HF's."""
    from conftest import USER_CACHE
    from hf_reference import hf_refusal_score

    outputs = run_notebook(NOTEBOOKS / "layer_boundaries.ipynb", USER_CACHE[0], monkeypatch)
    text = "".join(out.get("text", "") for out in outputs)
    accuracy = re.findall(r"layer (\d+): probe accuracy (\S+),", text)
    assert [int(layer) for layer, _ in accuracy] == [4, 8, 12, 16, 20, 24, 29]
    assert all(0.5 < float(acc.rstrip(",")) <= 1.0 for _, acc in accuracy)
    selected = int(re.search(r"RASS selected (\d+) of \d+ candidates", text).group(1))
    shown = re.findall(
        r"^margin \S+  p_harmful \S+  refusal score (\S+)  \[.*?\]  (.*)$", text, re.M
    )
    assert selected > 0 and len(shown) == min(selected, 8)
    model, hf = organism(text)
    for score, prompt in shown:
        assert float(score) == pytest.approx(hf_refusal_score(hf, model, prompt), abs=0.006)
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 3
