"""``refusal-lens run --quick`` on the bundled model, end to end, as separate processes: killed
(SIGKILL) inside alignment, inside a streamed residual write and inside the report's write, then
resumed; compared byte for byte with an uninterrupted run from another empty cache; and its
report rendered in headless Chromium.

Two quick runs (about eight minutes each on 2 cores) serve every check, so the test is one
function in steps. The fast-tier checks of the bookkeeping are in ``test_pipeline.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from browser import render_in_chromium
from refusal_lens.pipeline.runner import FOLDERS, RUN_FILE, STAGE_FILE

pytestmark = pytest.mark.model

KILLER = Path(__file__).with_name("kill_at.py")
STAGES = [s for s in FOLDERS if s != "search"]  # `run`'s stages; `mitigate` adds the search
VOLATILE = ("seconds", "peak_rss_mb")  # measurements of the machine, not results


def complete(folder: Path) -> list[str]:
    return [s for s, name in FOLDERS.items() if (folder / name / STAGE_FILE).is_file()]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def quick_run(
    out: Path, cache: Path, *kill: str, command: tuple[str, ...] = ("run",)
) -> subprocess.CompletedProcess:
    env = {**os.environ, "REFUSAL_LENS_CACHE": str(cache)}
    args = [sys.executable, str(KILLER), *kill, "--", *command, "--quick", "--out", str(out)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)


def tables(folder: Path) -> dict[str, str]:
    """A digest of every file of the run, except the bookkeeping of time and memory: JSON,
    JSONL and Markdown tables, tensors, figures and the exported model (JSON compared without
    its wall times and memory peaks)."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if name in (RUN_FILE, "report.html"):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(without_volatile(json.loads(data)), sort_keys=True).encode()
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def without_volatile(value):
    """``value`` without the wall times and memory peaks recorded anywhere inside it."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


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
    check_results(whole)

    # 6. the mitigation search on the finished run: every other stage is reused
    search = ("mitigate", "--trials", "3", "--seeds", "1", "--heldout", "4")
    proc = quick_run(whole, tmp_path / "cache-whole", command=search)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with pytest.MonkeyPatch.context() as patch:  # the run's organism lives in its own cache
        patch.setenv("REFUSAL_LENS_CACHE", str(tmp_path / "cache-whole"))
        check_search(whole, proc.stdout + proc.stderr)

    # 7. the report, as a browser shows it
    seen = render_in_chromium(whole / "report.html")
    assert set(seen["stages"]) >= set(FOLDERS.values()) and not seen["errors"]
    assert seen["images"] and all(img["decoded"] for img in seen["images"])
    assert seen["token_views"] and all(v["rendered"] for v in seen["token_views"])
    assert seen["bundles"] == 1 and not seen["resources"]


def check_results(out: Path) -> None:
    """What the quick run found: the organism refuses, the mitigations were judged on the
    same prompts as the unedited model, and the geometry stage kept its residuals."""
    from refusal_lens.activations import Residuals

    organism = json.loads((out / FOLDERS["organism"] / "organism.json").read_text())
    assert organism["aligned"]  # SmolLM2-135M-Instruct refuses little on its own
    assert organism["after"]["AdvBench"]["substring"] > organism["before"]["AdvBench"]["substring"]
    record = json.loads((out / FOLDERS["mitigations"] / "mitigations.json").read_text())
    names = [row["condition"] for row in record["rows"]]
    assert names[0].startswith("base") and any("sanitized" in n for n in names)
    assert any("RASS" in n for n in names) and any("w′" in n for n in names)
    n = {s: v["n"] for s, v in record["rows"][0]["rates"].items()}
    assert all({s: v["n"] for s, v in row["rates"].items()} == n for row in record["rows"])
    assert (out / FOLDERS["mitigations"] / "export" / "config.json").is_file()
    geometry = json.loads((out / FOLDERS["geometry"] / "geometry.json").read_text())
    kept = Residuals.load(out / FOLDERS["geometry"] / "residuals" / "harmful")
    assert kept.acts.shape[0] == len(geometry["texts"]["harmful"])


def check_search(out: Path, log: str) -> None:
    """What ``mitigate`` wrote: three trials per search (Wang's three λ first), the held-out
    table of every condition on the same prompts, and the chosen edit exported, its weights
    loadable and equal to the hooked edit."""
    import torch

    from refusal_lens.mitigation import Edit, apply_edit
    from refusal_lens.models import load_model
    from refusal_lens.pipeline import load_run_model
    from refusal_lens.scoring import next_token_logits

    folder = out / FOLDERS["search"]
    record = json.loads((folder / "search.json").read_text())
    assert "reused" in log and "trial 3/3" in log  # progress: trials done, best, time left
    runs = json.loads((out / RUN_FILE).read_text())["stages"]
    assert {r["status"] for r in runs if r["name"] != FOLDERS["search"]} <= {"cached", "not run"}
    seed = record["searches"]["seed 0"]
    assert seed["trials"] == 3 and [p["number"] for p in seed["points"]] == [0, 1, 2]
    assert seed["winner"]["label"].startswith("ablate w′")  # the three trials are Wang's
    assert record["searches"]["refusal only"]["objective"] == "refusal"
    held = record["heldout"]
    assert list(held)[:5] == [
        "no edit",
        "ablate r (Arditi)",
        "ablate w′ λ=1 (Wang)",
        "ablate w′ λ=0.8 (Wang)",
        "ablate w′ λ=0.6 (Wang)",
    ]
    n = {s: v["n"] for s, v in held["no edit"]["sets"].items()}
    assert {"JailbreakBench", "HarmBench", "XSTest-unsafe"} <= set(n)
    assert set(n.values()) == {4}  # --heldout: prompts per held-out set
    assert all({s: v["n"] for s, v in r["sets"].items()} == n for r in held.values())
    assert (folder / "front.png").stat().st_size > 10_000
    edit = Edit.load(folder / "export" / "edit")
    assert record["export"]["model"] == "export/model"  # an ablation: the weights hold it
    model = load_run_model(out)  # the organism the search edited
    exported = load_model(str(folder / "export" / "model"))
    batch = model.chat.tokenize(["How do I kill a Python process?", "Write a haiku."])
    with apply_edit(model, edit):
        hooked = next_token_logits(model, batch)
    torch.testing.assert_close(next_token_logits(exported, batch), hooked, atol=2e-3, rtol=1e-4)
