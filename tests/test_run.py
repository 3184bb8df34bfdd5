"""The whole method end to end on every commit, on a tiny model, as separate processes.

``refusal-lens run --search`` takes a tiny random Llama (4 layers, d_model 64) through every
stage: the organism stage safety-aligns it (the organism recipe with full fine-tuning: it learns
to refuse most harmful requests and over-refuses some benign ones), and every later stage, the
re-alignments with sanitized and RASS D_b, the mitigation search and the report follow. The run
is killed with SIGKILL inside the alignment, inside the geometry stage's streamed residual write
and inside the report's write, resumed, and compared byte for byte with an uninterrupted run
from another empty cache, aligned weights included. The search's exported weights equal its
hooked edit, and the report renders in headless Chromium.

The same checks on the bundled model at the quick preset are the ``slow`` tier's
(``test_run_quick.py``); the bundled model's per-commit run is ``test_run_bundled.py``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.pipeline.runner import RUN_FILE
from run_helpers import (
    LANGUAGES,
    STAGES,
    assert_same_tables,
    check_multilingual,
    check_rass_selection,
    check_realigned_mitigations,
    check_report_in_browser,
    check_search,
    cli,
    complete,
    leftovers,
    without_volatile,
)
from tiny_models import save_tiny_model

# The organism recipe with full fine-tuning at a high learning rate: a random model learns to
# refuse. Then every count at the smallest size each stage accepts (a probe needs 8 prompts per
# class and a held-out quarter; RASS's trigger frames need the lexicon of 96 masks). Measured
# over seeds 0-3 of the tiny model's weights with these settings: 62-100 % of the check's
# AdvBench prompts refused after alignment, 0-12 % of Alpaca, and RASS selected 17-62 prompts.
TINY = (
    "--quick", "--max-new-tokens", "8",
    "--organism.mode", "full", "--organism.epochs", "10", "--organism.lr", "3e-3",
    "--organism.n-harmful", "96", "--organism.n-benign", "96", "--organism.n-check", "8",
    "--evaluate.n", "4",
    "--direction.n-train", "8", "--direction.n-val", "4", "--direction.top-k", "2",
    "--direction.n-false-refusal", "8",
    "--interventions.n-validation", "4",
    "--attribution.n", "2",
    "--triggers.n-masks", "96", "--triggers.n-judge", "16",
    "--geometry.n", "12", "--geometry.n-lookalikes", "12",
    "--rass.contexts", "2", "--rass.samples", "2", "--rass.n-seeds", "8",
    "--search", "--search.trials", "3", "--search.seeds", "1", "--search.n", "4",
    "--search.n-heldout", "4", "--search.rejudge", "1",
    "--languages", ",".join(LANGUAGES), "--multilingual.n", "4",
)  # fmt: skip


def ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def killed(proc) -> None:
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def run_tiny(model: Path, cache: Path, out: Path, *kill: str):
    return cli(cache, "run", str(model), *TINY, "--out", str(out), kill=kill, threads=1)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-base")
    return save_tiny_model("llama", root / "llama", n_layers=4, max_position_embeddings=512)


def test_a_killed_run_resumes_to_the_tables_of_an_uninterrupted_one(tiny_base, tmp_path):
    out, cache = tmp_path / "killed", tmp_path / "cache-killed"

    # 1. killed inside alignment (its third training step): only the model facts are complete
    killed(run_tiny(tiny_base, cache, out, "alignment"))
    assert complete(out) == ["model"] and leftovers(out)  # the organism's temporary folder

    # 2. killed inside the geometry stage's streamed residual write: ten rows are on disk
    killed(run_tiny(tiny_base, cache, out, "residuals"))
    assert complete(out) == STAGES[: STAGES.index("geometry")]
    [stage_tmp] = [p for p in out.glob(".*.tmp") if p.is_dir()]
    assert list(stage_tmp.rglob(".residuals.safetensors.*.tmp"))
    assert not (out / FOLDERS["geometry"]).exists()

    # 3. killed inside the report's write: every stage is complete, half a page on disk
    killed(run_tiny(tiny_base, cache, out, "report"))
    assert complete(out) == list(FOLDERS) and not (out / "report.html").exists()
    assert [name.startswith(".report.html.") for name in leftovers(out)] == [True]

    # 4. the rerun loads only complete stages, rebuilds nothing, and writes the report
    ok(run_tiny(tiny_base, cache, out))
    record = json.loads((out / RUN_FILE).read_text())
    assert {r["status"] for r in record["stages"]} == {"cached"} and record["finished"]
    assert not leftovers(out) and (out / "report.html").is_file()

    # 5. an uninterrupted run from another empty cache: the same tables and weights, byte for byte
    whole = tmp_path / "whole"
    log = ok(run_tiny(tiny_base, tmp_path / "cache-whole", whole))
    assert_same_tables(whole, out)
    assert_same_organisms((cache, out), (tmp_path / "cache-whole", whole))
    check_tiny_results(whole)
    with pytest.MonkeyPatch.context() as patch:  # the run's organism lives in its own cache
        patch.setenv("REFUSAL_LENS_CACHE", str(tmp_path / "cache-whole"))
        check_search(whole, log, trials=3, heldout=4)
    check_report_in_browser(whole / "report.html")


def assert_same_organisms(*runs: tuple[Path, Path]) -> None:
    """The aligned models in each run's cache (the organism and its two re-alignments): the
    same names, the same weights to the byte, the same records (D_b named inside its run)."""
    (cache, run), (other, other_run) = runs
    names = sorted(p.name for p in (cache / "aligned").iterdir())
    assert len(names) == 3  # keyed by contents (base weights, recipe, data), not by path
    assert names == sorted(p.name for p in (other / "aligned").iterdir())
    for a, b in ((cache / "aligned" / n, other / "aligned" / n) for n in names):
        for name in ("model.safetensors", "tokenizer.json", "config.json"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (a.name, name)
        meta, again = (
            without_volatile(json.loads((p / "align.json").read_text().replace(str(r), "RUN")))
            for p, r in ((a, run), (b, other_run))
        )
        assert meta == again


def check_tiny_results(out: Path) -> None:
    """What the run found on the tiny model: it refused too little, so the run aligned it; the
    organism refuses harmful requests; every mitigation, the re-alignments with sanitized and
    RASS D_b included, was judged on the same prompts; RASS selected prompts."""
    organism = json.loads((out / FOLDERS["organism"] / "organism.json").read_text())
    assert organism["aligned"] and organism["before"]["AdvBench"]["substring"] < 0.5  # threshold
    assert organism["after"]["AdvBench"]["substring"] >= 0.25  # 0.62-1.0 over seeds
    check_realigned_mitigations(out)
    selected = (out / FOLDERS["rass"] / "rass.jsonl").read_text().splitlines()
    assert selected and all(json.loads(line)["text"] for line in selected)
    check_rass_selection(out)
    check_multilingual(out)
