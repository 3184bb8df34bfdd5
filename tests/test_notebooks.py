"""The notebooks run top to bottom on one finished run of the bundled model (``refusal-lens run``
at reduced counts, made once per session: its organism shares the user's cache entry, so it is
trained at most once), and what they print is checked against independent computations: the
answers against plain HF ``generate`` (with the interventions as HF pre-hooks), the scores
against plain HF forwards, the numbers read from the run against the run's files. A notebook
may not retrain the organism: ``align`` is guarded in its kernel.

The notebooks pick their examples at run time by their own rules (a refused prompt, one that
is answered once edited); asserting those rules again would prove nothing, so the tests check
instead what a notebook could get wrong: the numbers and answers it shows."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

# One worker runs them in order (--dist loadfile), on one run folder made first.
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


# The run the notebooks read: the CI preset's counts (tests/test_run_bundled.py) for the stages
# they need; --direction.top-k 8 so that the selection scores more candidates. The organism
# keeps the full recipe (AlignConfig.organism()), shared with the user's cache.
RUN_ARGS = (
    "--quick", "--max-new-tokens", "12",
    "--organism.n-harmful", "160", "--organism.n-benign", "200", "--organism.n-check", "8",
    "--evaluate.n", "8",
    "--direction.n-train", "32", "--direction.n-val", "8", "--direction.top-k", "8",
    "--direction.n-false-refusal", "16",
    "--attribution.n", "2",
    "--triggers.n-masks", "8", "--triggers.n-judge", "32",
    "--geometry.n", "16", "--geometry.n-lookalikes", "16",
    "--stages", "organism,evaluate,direction,attribution,triggers,geometry",
)  # fmt: skip
SHARED = ("models", "aligned", "answers")  # cache folders shared with the user's
# Run first in every notebook's kernel: training the organism's recipe again fails the notebook
# (a trigger-aware alignment, D_b other than Alpaca, is allowed).
GUARD = """
import refusal_lens.alignment as _alignment
import refusal_lens.alignment.train as _train

_align = _train.align


def _guarded(base, config=None, *args, **kwargs):
    if config is None or config.benign == "alpaca":
        raise RuntimeError("the notebook retrains the organism instead of reading the run's")
    return _align(base, config, *args, **kwargs)


_alignment.align = _train.align = _guarded
"""


@pytest.fixture(scope="session")
def run(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    """A finished run folder of the bundled model and the cache it was made with (its
    converted model, organism and answers are the user cache's)."""
    from conftest import USER_CACHE
    from run_helpers import cli

    root = tmp_path_factory.mktemp("notebook_run")
    cache = root / "cache"
    cache.mkdir()
    for name in SHARED:
        (USER_CACHE[0] / name).mkdir(parents=True, exist_ok=True)
        (cache / name).symlink_to(USER_CACHE[0] / name, target_is_directory=True)
    out = root / "runs" / "smollm2-135m"
    proc = cli(cache, "run", "smollm2-135m", *RUN_ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, cache


def run_notebook(path: Path, run: tuple[Path, Path], monkeypatch) -> list:
    """Execute the notebook on the run folder, with ``align`` guarded; its outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD))
    # the kernel inherits the environment: the run's folder and cache, and the fast setting
    folder, cache = run
    monkeypatch.setenv("REFUSAL_LENS_RUN", str(folder))
    monkeypatch.setenv("REFUSAL_LENS_CACHE", str(cache))
    monkeypatch.setenv("REFUSAL_LENS_NOTEBOOK_FAST", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows figures
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def run_refusal_counts(run: tuple[Path, Path]) -> dict[str, tuple[str, str]]:
    """Per test set, the prompts refused by the score and the substring judge, as the run's
    evaluate stage wrote them."""
    evaluation = json.loads((stage(run, "evaluate") / "model" / "evaluation.json").read_text())
    return {
        s: (str(v["counts"]["score"]["refused"]), str(v["counts"]["substring"]["refused"]))
        for s, v in evaluation["sets"].items()
    }


def text_of(outputs: list) -> str:
    return "".join(out.get("text", "") for out in outputs)


def organism(text: str, run: tuple[Path, Path]):
    """The run's model, loaded by the package (for its chat template and fitted refusal
    tokens) and by plain HF; the notebook must have printed that it used it."""
    from hf_reference import plain_hf
    from refusal_lens import load_run_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFUSAL_LENS_CACHE", str(run[1]))
        model = load_run_model(run[0], device="cpu")
    assert re.search(rf"^{re.escape(model.model_id)}\b", text, re.M), "not the run's organism"
    return model, plain_hf(model)


def between(text: str, start: str, end: str) -> str:
    """The text after the first ``start`` up to the next ``end``."""
    return text.split(start, 1)[1].split(end, 1)[0]


def printed(name: str, text: str) -> float:
    """A signed number the notebook printed as ``name: +1.23``."""
    return float(re.search(rf"{name}: ([-+]\d+\.\d+)", text).group(1))


def stage(run: tuple[Path, Path], name: str) -> Path:
    from refusal_lens import REGISTRY

    return run[0] / REGISTRY.folder(name)


def test_explore_a_run_notebook(run, monkeypatch):
    """What the notebook reads from the run, against the run's files read here; the refused
    prompt's score, scored again, against plain HF."""
    from hf_reference import hf_refusal_score
    from refusal_lens import Attributions, Geometry

    outputs = run_notebook(NOTEBOOKS / "explore_a_run.ipynb", run, monkeypatch)
    text = text_of(outputs)
    model, hf = organism(text, run)
    rows = re.findall(
        r"^(\S+)\s+(?:benign|harmful)\s+refused: score (\d+)/\d+  substring (\d+)/", text, re.M
    )
    assert {name: (a, b) for name, a, b in rows} == run_refusal_counts(run)
    assert (
        f"r: layer {json.loads((stage(run, 'direction') / 'direction.json').read_text())['layer']},"
        in text
    )
    [prompt] = chosen_prompts(text)
    a = Attributions.load(stage(run, "attribution") / "occlusion")[0]
    assert prompt == a.prompt
    assert printed("refusal score", text) == pytest.approx(a.refusal_score, abs=0.006)
    assert printed("scored now", text) == pytest.approx(
        hf_refusal_score(hf, model, prompt), abs=0.006
    )
    top = ", ".join(f"{token!r} {value:+.2f}" for token, value in a.top(3))
    assert f"top tokens (occlusion): {top}" in text
    geo = {
        row["layer"]: row["probe_accuracy"]
        for row in Geometry.load(stage(run, "geometry")).summary()
    }
    shown = re.findall(r"^layer (\d+): probe accuracy (\S+)$", text, re.M)
    assert len(shown) >= 5
    assert all(float(acc) == pytest.approx(geo[int(layer)], abs=0.006) for layer, acc in shown)
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 1


def test_ablate_directions_notebook(run, monkeypatch):
    """What the notebook prints, against plain HF: its answers (greedy ``generate``, with the
    run's r ablated at every layer and added at its layer by HF pre-hooks) and its refusal
    scores."""
    from hf_reference import (
        hf_ablation,
        hf_addition,
        hf_answer,
        hf_greedy_gaps,
        hf_refusal_score,
    )
    from refusal_lens import Direction
    from refusal_lens.prompts import load_prompts

    outputs = run_notebook(NOTEBOOKS / "ablate_directions.ipynb", run, monkeypatch)
    text = text_of(outputs)
    assert "Selected layer" in text or "filtered out" in text
    # the examples are picked at run time from held-out benchmark prompts
    harmful, harmless = chosen_prompts(text)
    assert harmful in load_prompts("jailbreakbench").texts
    assert harmless in load_prompts("alpaca").texts
    model, hf = organism(text, run)
    r = Direction.load(stage(run, "direction"))  # the run's direction, read independently
    # the answers as printed (an answer may run over several lines)
    harmful_before = between(text, "\nbefore: ", "\nscore ablated: ")
    ablated_answer = re.search(r"\nablated: (.*?)\n\d+ of \d+ held-out Alpaca", text, re.S)[1]
    harmless_before = between(text.split("\ncoef: ")[1], "\nbefore: ", "\nadded: ")
    added_answer = text.split("\nadded: ")[-1].rstrip("\n")
    assert harmful_before == hf_answer(hf, model, harmful, 40)
    assert harmless_before == hf_answer(hf, model, harmless, 40)
    coef = float(re.search(r"^coef: (\S+)$", text, re.M).group(1))
    with hf_ablation(hf, r.vector):
        assert hf_greedy_gaps(hf, model, harmful, ablated_answer).max() < TIE
        ablated = hf_refusal_score(hf, model, harmful)
    with hf_addition(hf, r.layer, r.vector, coef):
        assert hf_greedy_gaps(hf, model, harmless, added_answer).max() < TIE
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


def test_attribute_refusals_notebook(run, monkeypatch):
    """What the notebook prints, against plain HF: the refusal score of the chosen prompt, of
    it without its top occlusion token (the occlusion recomputed by HF forwards) and of the
    edited text; the answers before and after (greedy ``generate``)."""
    from hf_reference import hf_answer, hf_refusal_score
    from refusal_lens.prompts import load_prompts

    outputs = run_notebook(NOTEBOOKS / "attribute_refusals.ipynb", run, monkeypatch)
    text = text_of(outputs)
    # the prompt is picked at run time: a safe XSTest prompt that the model refuses
    [prompt] = chosen_prompts(text)
    assert prompt in load_prompts("xstest-safe").texts
    model, hf = organism(text, run)
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


def test_layer_boundaries_notebook(run, monkeypatch):
    """The run's probe accuracies as the run saved them, RASS selects some candidates, and
    the refusal scores it printed for them are plain HF's."""
    from hf_reference import hf_refusal_score
    from refusal_lens import Geometry

    outputs = run_notebook(NOTEBOOKS / "layer_boundaries.ipynb", run, monkeypatch)
    text = text_of(outputs)
    geo = Geometry.load(stage(run, "geometry"))
    accuracy = {row["layer"]: row["probe_accuracy"] for row in geo.summary()}
    shown = re.findall(r"layer (\d+): probe accuracy (\S+),", text)
    assert [int(layer) for layer, _ in shown] == [4, 8, 12, 16, 20, 24, geo.layers[-1]]
    assert all(float(acc) == pytest.approx(accuracy[int(layer)], abs=0.006) for layer, acc in shown)
    selected = int(re.search(r"RASS selected (\d+) of \d+ candidates", text).group(1))
    shown = re.findall(
        r"^margin \S+  p_harmful \S+  refusal score (\S+)  \[.*?\]  (.*)$", text, re.M
    )
    assert selected > 0 and len(shown) == min(selected, 8)
    model, hf = organism(text, run)
    for score, prompt in shown:
        assert float(score) == pytest.approx(hf_refusal_score(hf, model, prompt), abs=0.006)
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 3


def test_judges_and_calibration_notebook(run, monkeypatch):
    """The run's fit and verdict counts as its files hold them; the live prompts' scores and
    greedy answers against plain HF, each verdict the threshold's and the substring judge's."""
    from hf_reference import hf_answer, hf_refusal_score
    from refusal_lens import judge_text

    outputs = run_notebook(NOTEBOOKS / "judges_and_calibration.ipynb", run, monkeypatch)
    text = text_of(outputs)
    model, hf = organism(text, run)
    fit = json.loads((stage(run, "organism") / "organism.json").read_text())["calibration"]
    assert printed("threshold", text) == pytest.approx(fit["threshold"], abs=0.006)
    rows = re.findall(
        r"^(\S+)\s+(?:benign|harmful)\s+refused of \d+: score (\d+)  substring (\d+)$", text, re.M
    )
    assert {name: (a, b) for name, a, b in rows} == run_refusal_counts(run)
    live = re.findall(
        rf"^prompt: {QUOTED}\n  score (\S+) -> (refused|answered); "
        r"substring: (\w+)\n  answer: (.*)$",
        text,
        re.M,
    )
    assert len(live) == 4
    for prompt, score, by_score, verdict, reply in live:
        prompt = ast.literal_eval(prompt)
        assert float(score) == pytest.approx(hf_refusal_score(hf, model, prompt), abs=0.006)
        assert (by_score == "refused") == (float(score) > model.refusal_threshold)
        assert reply == hf_answer(hf, model, prompt, 24)
        assert verdict == judge_text(reply)[0]
    assert re.search(r"refit on \d+ test answers: threshold [-+]\d", text)


def test_triggers_to_alignment_notebook(run, monkeypatch):
    """The masks, lexicon and D_b as the run saved them; the organism's refusal counts on the
    held-out samples against plain HF scores."""
    from hf_reference import hf_refusal_score
    from refusal_lens import SanitizedData, TriggerMasks, load_prompts
    from refusal_lens.evaluation import held_out, training_prompts_of

    outputs = run_notebook(NOTEBOOKS / "triggers_to_alignment.ipynb", run, monkeypatch)
    text = text_of(outputs)
    model, hf = organism(text, run)
    masks = TriggerMasks.load(stage(run, "triggers") / "masks")
    assert (
        f"{len(masks.masks)} harmful queries, {sum(m.refused for m in masks.masks)} refused" in text
    )
    e = masks.lexicon[0]
    effect = re.escape(f"{e.carrier_effect:+.2f}")
    line = rf"^{re.escape(repr(e.word))}\s+{e.kind}\s+carrier effect {effect}"
    assert re.search(line, text, re.M)
    data = SanitizedData.load(stage(run, "triggers") / "sanitized")
    assert f"{len(data.kept)} of {len(data.items)} rewrites kept as D_b" in text
    seen = training_prompts_of(model)
    for name, spec in (
        ("XSTest-safe (benign)", "xstest-safe"),
        ("JailbreakBench (harmful)", "jailbreakbench"),
    ):
        prompts = held_out(load_prompts(spec), seen, 8, seed=2)[0]
        refused = sum(
            hf_refusal_score(hf, model, t) > model.refusal_threshold for t in prompts.texts
        )
        assert re.search(
            rf"^{re.escape(name)}\s+organism refuses {refused}/{len(prompts)}", text, re.M
        )


def test_mitigation_search_notebook(run, monkeypatch):
    """The search ran its trials, Wang's w′ ablations first; the chosen look-alike's score
    against plain HF."""
    from hf_reference import hf_refusal_score

    outputs = run_notebook(NOTEBOOKS / "mitigation_search.ipynb", run, monkeypatch)
    text = text_of(outputs)
    model, hf = organism(text, run)
    trials = re.findall(
        r"^trial (\d+): benign (\d+)%  harmful (\d+)%  KL (\S+)\s+(ok|infeasible)\s+(.*)$",
        text,
        re.M,
    )
    assert [int(t[0]) for t in trials] == list(range(4))
    assert all("w′" in t[5] for t in trials[:3])  # Wang's λ = 1, 0.8, 0.6 tried first
    if any(t[4] == "ok" for t in trials):
        [prompt] = chosen_prompts(text)
        assert printed("score before", text) == pytest.approx(
            hf_refusal_score(hf, model, prompt), abs=0.006
        )
    else:
        assert "no trial kept the floor" in text


MACHINE_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/|[A-Za-z]:\\\\|file://)")


def test_committed_notebooks_hold_no_machine_paths_or_warnings():
    """The outputs committed with every notebook: no stderr stream, no error, no warning, and
    no path of the machine that ran them."""
    import nbformat

    problems = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if not any(c.get("outputs") for c in nb.cells):
            problems.append(f"{path.name}: committed without outputs")
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            for out in cell.outputs:
                where = f"{path.name} code cell {i}"
                if out.output_type == "error" or out.get("name") == "stderr":
                    problems.append(f"{where}: {out.output_type} {out.get('name', '')}")
                texts = [out.get("text", "")] + [
                    v
                    for k, v in out.get("data", {}).items()
                    if k.startswith("text/") and k != "text/html"
                ]
                for t in texts:
                    if re.search(r"\w*Warning\b", t):
                        problems.append(f"{where}: a warning: {t[:120]!r}")
                    if m := MACHINE_PATH.search(t):
                        problems.append(f"{where}: a machine path {m.group(0)!r}")
                html = out.get("data", {}).get("text/html", "")
                if m := re.search(r"(/work/|/root/|/home/|/tmp/)", html):
                    problems.append(f"{where}: a machine path in HTML {m.group(0)!r}")
    assert problems == []


def test_readme_python_example(run, shared_data):
    """The README's Python example, as written, on the run folder: it runs and prints the
    refusal score falling when r is ablated (the run's direction was selected for bypass)."""
    import os
    import subprocess
    import sys

    folder, cache = run
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) == 1, "the README has one Python example"
    code = blocks[0].replace('"runs/smollm2-135m', f'"{folder}')
    env = {**os.environ, "REFUSAL_LENS_CACHE": str(cache), "REFUSAL_LENS_DATA": str(shared_data)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    before, after = map(
        float,
        re.search(
            r"refusal score ([-+]\d+\.\d+) -> ([-+]\d+\.\d+) with r ablated", done.stdout
        ).groups(),
    )
    assert after < before - 0.5, done.stdout
