"""``refusal-lens run --quick`` on the bundled model, end to end, as separate processes: killed
(SIGKILL) inside alignment, inside a streamed residual write and inside the report's write, then
resumed; compared byte for byte with an uninterrupted run from another empty cache; then
``refusal-lens mitigate`` on the finished run; and its report rendered in headless Chromium.

The ``slow`` tier (``pytest -m slow``, about 35 minutes on 2 cores): two quick runs serve every
check, so the test is one function in steps. The same checks run on every commit on a tiny
organism (``test_run.py``), and the bundled model runs every stage once per commit at the CI
preset (``test_run_bundled.py``).
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
    check_bundled_results,
    check_report_in_browser,
    check_search,
    cli,
    complete,
    leftovers,
    tables,
)

pytestmark = [pytest.mark.slow, pytest.mark.model]


def quick_run(out: Path, cache: Path, *kill: str, command: tuple[str, ...] = ("run",)):
    """The quick preset with two extra languages (``run``; ``mitigate`` studies none)."""
    languages = ("--languages", ",".join(LANGUAGES)) if command == ("run",) else ()
    return cli(cache, *command, "--quick", *languages, "--out", str(out), kill=kill)


def test_a_killed_quick_run_resumes_to_the_tables_of_an_uninterrupted_one(tmp_path, shared_data):
    killed, cache = tmp_path / "killed", tmp_path / "cache-killed"

    # 1. killed inside alignment: only the model facts are complete
    proc = quick_run(killed, cache, "alignment")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert complete(killed) == ["model"] and leftovers(killed)  # the organism's temporary folder

    # 2. killed inside the geometry stage's streamed residual write: ten rows are on disk
    proc = quick_run(killed, cache, "residuals")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert complete(killed) == STAGES[: STAGES.index("geometry")]
    [stage_tmp] = [p for p in killed.glob(".*.tmp") if p.is_dir()]  # the last run's was removed
    assert list(stage_tmp.rglob(".residuals.safetensors.*.tmp"))
    assert not (killed / FOLDERS["geometry"]).exists()

    # 3. killed inside the report's write: every stage is complete, half a page on disk
    proc = quick_run(killed, cache, "report")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert complete(killed) == STAGES and not (killed / "report.html").exists()
    assert [name.startswith(".report.html.") for name in leftovers(killed)] == [True]

    # 4. the rerun loads only complete stages, rebuilds nothing, and writes the report
    proc = quick_run(killed, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((killed / RUN_FILE).read_text())
    assert {r["status"] for r in record["stages"]} == {"cached"} and record["finished"]
    assert not leftovers(killed) and (killed / "report.html").is_file()

    # 5. an uninterrupted run from another empty cache: the same tables, byte for byte
    whole = tmp_path / "whole"
    proc = quick_run(whole, tmp_path / "cache-whole")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected, got = tables(whole), tables(killed)
    assert sorted(expected) == sorted(got)
    assert {n for n in expected if expected[n] != got[n]} == set()
    assert any(n.endswith(".md") for n in expected) and any(n.endswith(".json") for n in expected)
    check_bundled_results(whole)

    # 6. the mitigation search on the finished run: every other stage is reused
    search = ("mitigate", "--search.trials", "3", "--search.seeds", "1")
    search += ("--search.n-heldout", "4")
    proc = quick_run(whole, tmp_path / "cache-whole", command=search)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "reused" in log
    runs = json.loads((whole / RUN_FILE).read_text())["stages"]
    assert {r["status"] for r in runs if r["name"] != FOLDERS["search"]} <= {"cached", "not run"}
    record = json.loads((whole / FOLDERS["search"] / "search.json").read_text())
    assert record["searches"]["seed 0"]["winner"]["label"].startswith("ablate w′")  # Wang's
    assert list(record["heldout"])[3:5] == ["ablate w′ λ=0.8 (Wang)", "ablate w′ λ=0.6 (Wang)"]
    with pytest.MonkeyPatch.context() as patch:  # the run's organism lives in its own cache
        patch.setenv("REFUSAL_LENS_CACHE", str(tmp_path / "cache-whole"))
        check_search(whole, log, trials=3, heldout=4)

    # 7. the report, as a browser shows it
    check_report_in_browser(whole / "report.html")
