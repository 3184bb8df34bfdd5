"""The bundled SmolLM2 through every stage: ``refusal-lens run --search`` at the CI preset (counts
cut to about a third of the quick preset's), one uninterrupted run, and what it found.

In the ``slow`` tier: on the CI machine (2 cores, one torch thread per worker) it took 918 s
with the organism already trained, 268 s of them in the two re-alignments of step 9 and 240 s
in the search, which does not fit CI's 25 minutes beside the notebooks. On every commit the
same stages run end to end on a tiny model (``test_run.py``) and the bundled model runs each
stage's functions in ``test_bundled.py`` and the notebooks.

The organism is aligned with the full organism recipe, the one the notebooks use, and its cache
entry is shared with the user's cache, so after the notebooks (or an earlier run) it is not
trained again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.pipeline.runner import RUN_FILE
from run_helpers import LANGUAGES, check_bundled_results, check_report_in_browser, check_search, cli

pytestmark = [pytest.mark.slow, pytest.mark.model]

# Counts sized for CI: about a third of the quick preset's; the organism keeps the full recipe
# (AlignConfig.organism(): 160 harmful, 200 Alpaca), shared with the notebooks.
CI_PRESET = (
    "--quick", "--max-new-tokens", "12",
    "--organism.n-harmful", "160", "--organism.n-benign", "200", "--organism.n-check", "8",
    "--evaluate.n", "8",
    "--direction.n-train", "32", "--direction.n-val", "8", "--direction.top-k", "4",
    "--direction.n-false-refusal", "16",
    "--interventions.n-validation", "4",
    "--attribution.n", "2",
    "--triggers.n-masks", "16", "--triggers.n-judge", "32",
    "--geometry.n", "16", "--geometry.n-lookalikes", "16",
    "--rass.contexts", "3", "--rass.samples", "2", "--rass.n-seeds", "16",
    "--search", "--search.trials", "3", "--search.seeds", "1", "--search.n", "8",
    "--search.n-heldout", "4", "--search.rejudge", "1",
    "--languages", ",".join(LANGUAGES), "--multilingual.n", "8",
)  # fmt: skip
SHARED = ("models", "aligned", "answers")  # cache folders shared with the user's (notebooks)


def shared_cache(folder: Path) -> Path:
    """A new cache whose converted models, aligned models and self-distilled answers are the
    user's cache's: the organism trained here or by the notebooks serves both."""
    from conftest import USER_CACHE

    folder.mkdir()
    for name in SHARED:
        (USER_CACHE[0] / name).mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(USER_CACHE[0] / name, target_is_directory=True)
    return folder


def test_every_stage_runs_on_the_bundled_model(tmp_path, shared_data):
    out, cache = tmp_path / "run", shared_cache(tmp_path / "cache")
    proc = cli(cache, "run", "smollm2-135m", *CI_PRESET, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / RUN_FILE).read_text())
    assert record["finished"] and [s["name"] for s in record["stages"]] == list(FOLDERS.values())
    check_bundled_results(out)
    with pytest.MonkeyPatch.context() as patch:  # the run's organism lives in the shared cache
        patch.setenv("REFUSAL_LENS_CACHE", str(cache))
        check_search(out, proc.stdout + proc.stderr, trials=3, heldout=4)
    check_report_in_browser(out / "report.html")
