"""What the end-to-end run tests share: the CLI in a separate process (killed at a chosen point
by ``kill_at.py``), a digest of a run folder's tables, and the checks of a finished search.

A helper module for ``test_run.py`` (tiny organism, fast tier), ``test_run_bundled.py`` (the
bundled model at the CI preset, model tier) and ``test_run_quick.py`` (the quick preset, twice,
``slow`` tier); not a test file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.pipeline.runner import RUN_FILE, STAGE_FILE

KILLER = Path(__file__).with_name("kill_at.py")
STAGES = [s for s in FOLDERS if s != "search"]  # `run`'s stages; `mitigate` adds the search
VOLATILE = ("seconds", "seconds_per_trial", "peak_rss_mb")  # the machine's, not results
# The same measurements where a section's text states them.
VOLATILE_TEXT = re.compile(r"\d+(?:\.\d+)? s per trial")


def complete(folder: Path) -> list[str]:
    """The stages whose folders are complete (their ``stage.json`` written last)."""
    return [s for s, name in FOLDERS.items() if (folder / name / STAGE_FILE).is_file()]


def leftovers(folder: Path) -> list[str]:
    """The hidden temporary files and folders an interrupted write leaves."""
    return sorted(p.name for p in folder.glob(".*.tmp"))


def cli(
    cache: Path, *args: str, kill: tuple[str, ...] = (), threads: int | None = None
) -> subprocess.CompletedProcess:
    """``refusal-lens ARGS`` in a new process with its own cache, killed at the ``kill``
    points (``kill_at.py``); ``threads`` caps torch's threads (OMP_NUM_THREADS)."""
    env = {**os.environ, "REFUSAL_LENS_CACHE": str(cache)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, str(KILLER), *kill, "--", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)


def tables(folder: Path) -> dict[str, str]:
    """A digest of every file of the run, except the bookkeeping of time and memory: JSON,
    JSONL and Markdown tables, tensors, figures and the exported model (JSON and JSONL
    compared without their wall times and memory peaks)."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if name in (RUN_FILE, "report.html"):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(without_volatile(json.loads(data)), sort_keys=True).encode()
        elif path.suffix == ".jsonl":
            rows = [without_volatile(json.loads(line)) for line in data.splitlines()]
            data = json.dumps(rows, sort_keys=True).encode()
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def without_volatile(value):
    """``value`` without the wall times and memory peaks recorded anywhere inside it."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    if isinstance(value, str):
        return VOLATILE_TEXT.sub("(time) s per trial", value)
    return value


def assert_same_tables(expected: Path, got: Path) -> None:
    """Two run folders hold the same files with the same contents, byte for byte."""
    want, have = tables(expected), tables(got)
    assert sorted(want) == sorted(have)
    assert {n for n in want if want[n] != have[n]} == set()
    assert any(n.endswith(".md") for n in want) and any(n.endswith(".json") for n in want)


def check_bundled_results(out: Path) -> None:
    """What a run of the bundled SmolLM2 found: the organism refuses, the mitigations were
    judged on the same prompts as the unedited model (re-alignment included), and the
    geometry stage kept its residuals."""
    from refusal_lens.activations import Residuals

    organism = json.loads((out / FOLDERS["organism"] / "organism.json").read_text())
    assert organism["aligned"]  # SmolLM2-135M-Instruct refuses little on its own
    assert organism["after"]["AdvBench"]["substring"] > organism["before"]["AdvBench"]["substring"]
    check_realigned_mitigations(out)
    geometry = json.loads((out / FOLDERS["geometry"] / "geometry.json").read_text())
    kept = Residuals.load(out / FOLDERS["geometry"] / "residuals" / "harmful")
    assert kept.acts.shape[0] == len(geometry["texts"]["harmful"])
    check_rass_selection(out)
    record = check_multilingual(out)
    # the run's direction and English's difference of means on PolyRefuse items agree
    assert record["en"]["cosine"]["run direction"] > COSINE_FLOOR


LANGUAGES = ("de", "ru")
# English's difference of means on 8 PolyRefuse items against the run's direction: 0.35 (CI
# preset) and 0.59 (quick preset) on the bundled organism, at b3eeb8e; 8 items are noisy
COSINE_FLOOR = 0.15  # the extra languages of every end-to-end run (`--languages`)


def check_multilingual(out: Path) -> dict:
    """Step 11: each extra language against English on the same items. The translated items'
    originals are the English items; every verdict is the multilingual judge's on its saved
    answer; the table's rates are the saved verdicts'; the pairs listed as over-refused are the
    harmless items refused in the language and answered in English. Returns the record."""
    from refusal_lens.prompts.polyrefuse import LANGUAGE_NAMES, load_polyrefuse
    from refusal_lens.scoring import judge_text
    from refusal_lens.stats import rate_text

    folder = out / FOLDERS["multilingual"]
    record = json.loads((folder / "multilingual.json").read_text())
    section = json.loads((folder / "section.json").read_text())
    assert list(record) == ["en", *LANGUAGES]
    rows = {row[0]: row for row in section["tables"][0]["rows"]}
    for language in LANGUAGES:
        entry, en = record[language], record["en"]
        for kind in ("harmful", "harmless"):
            original = {p.text: p.original for p in load_polyrefuse(kind, language)}
            assert [original[t] for t in entry["texts"][kind]] == en["texts"][kind]
            for answer, verdict in zip(
                entry[kind]["answers"], entry[kind]["verdicts"], strict=True
            ):
                assert judge_text(answer)[0] == verdict
        row = rows[f"{LANGUAGE_NAMES[language]} ({language})"]
        flags = [entry["harmful"]["refused"], entry["harmless"]["refused"]]
        assert [row[1], row[3]] == [rate_text(sum(f), len(f)) for f in flags]
        assert all(-1 <= c <= 1 for c in entry["cosine"].values())
        both = zip(entry["harmless"]["refused"], en["harmless"]["refused"], strict=True)
        pairs = sum(a and not b for a, b in both)
        [part] = [p for p in section["parts"] if p["title"].endswith(f"({language})")]
        assert part["text"][0].startswith(f"{pairs} of ")
        assert len(part["tables"][0]["rows"] if part["tables"] else []) == pairs
    return record


def check_rass_selection(out: Path) -> None:
    """RASS selected in the layer and band the geometry stage fitted on validation
    look-alikes, or, where it fitted none, at the direction's layer with |margin| <= band."""
    fit = json.loads((out / FOLDERS["geometry"] / "boundary_fit.json").read_text())
    config = json.loads((out / FOLDERS["rass"] / "rass.json").read_text())["config"]
    rows = [json.loads(x) for x in (out / FOLDERS["rass"] / "rass.jsonl").read_text().splitlines()]
    section = json.loads((out / FOLDERS["rass"] / "section.json").read_text())["text"][0]
    if fit["layer"] is not None and fit["band"] is not None:
        lo, hi = fit["band"]
        assert config["layer"] == fit["layer"] and config["band_range"] == [lo, hi]
        assert all(r["layer"] == fit["layer"] and lo <= r["margin"] <= hi for r in rows)
        assert f"layer {fit['layer']}" in section
    else:
        assert config["layer"] is None and config["band_range"] is None
        assert all(abs(r["margin"]) <= config["band"] for r in rows)
        assert "the direction's layer" in section
    check_rass_claim(out, rows)


def check_rass_claim(out: Path, rows: list[dict]) -> None:
    """The RASS section's test of paper 1's claim: the selected prompts' answers counted as
    the claim file says, XSTest-safe's count taken from the evaluate stage, Fisher's p
    recomputed, and the verdict in the section."""
    from refusal_lens.stats import fisher_exact

    text = " ".join(json.loads((out / FOLDERS["rass"] / "section.json").read_text())["text"])
    assert "Paper 1's claim" in text
    path = out / FOLDERS["rass"] / "rass_claim.json"
    evaluated = json.loads((out / FOLDERS["evaluate"] / "model" / "evaluation.json").read_text())
    if not rows or "XSTest-safe" not in evaluated["sets"]:
        assert not path.exists() and "not tested" in text
        return
    claim = json.loads(path.read_text())
    k, n = claim["selected"]
    assert n == len(rows) == len(claim["answers"]) == len(claim["verdicts"])
    assert k == sum(v in ("refuses", "evades") for v in claim["verdicts"])
    xs = evaluated["sets"]["XSTest-safe"]
    assert claim["XSTest-safe"] == [xs["counts"]["substring"]["refused"], xs["n"]]
    assert claim["p"] == fisher_exact(k, n, *claim["XSTest-safe"])
    assert f"{claim['verdict']}, so" in text


def check_realigned_mitigations(out: Path) -> None:
    """Step 9 of a run that aligned its model: the base first, w′ ablation and both
    re-alignments (sanitized and RASS D_b), every condition judged on the same prompts, and
    the w′ edit exported as a model."""
    record = json.loads((out / FOLDERS["mitigations"] / "mitigations.json").read_text())
    names = [row["condition"] for row in record["rows"]]
    skipped = record["skipped"]  # a D_b the harm judge emptied: listed with its reason
    assert all(why.startswith("not trained: D_b is empty") for why in skipped.values())
    realigned = [n for n in names if n.startswith("re-align")]
    both = ["re-align, D_b = RASS", "re-align, D_b = sanitized"]
    assert sorted(realigned + list(skipped)) == both
    assert names[0].startswith("base") and any("w′" in n for n in names)
    n = {s: v["n"] for s, v in record["rows"][0]["rates"].items()}
    assert all({s: v["n"] for s, v in row["rates"].items()} == n for row in record["rows"])
    assert (out / FOLDERS["mitigations"] / "export" / "config.json").is_file()
    # every edit against no edit, and the re-alignments against each other, tested in pairs
    pairs = {(t["a"], t["b"]) for t in record["tests"]}
    # every edit but the base against no edit; sanitized against RASS when both were trained
    assert len(pairs) == len(names) - 2 + (len(realigned) == 2)
    for t in record["tests"]:
        for rate in ("RR", "ASR"):
            assert t[rate]["verdict"] in ("lower", "higher", "not determined")
            assert t[rate]["only_a"] - t[rate]["only_b"] == t[rate]["a"] - t[rate]["b"]


def check_search(out: Path, log: str, trials: int, heldout: int) -> None:
    """What the search stage wrote: ``trials`` trials per search (Wang's λ first), the held-out
    table of every condition on the same ``heldout`` prompts per set, the front, and the chosen
    edit exported: its weights loadable and equal to the hooked edit on the run's model."""
    import torch

    from refusal_lens.mitigation import Edit, apply_edit
    from refusal_lens.models import load_model
    from refusal_lens.pipeline import load_run_model
    from refusal_lens.scoring import next_token_logits

    folder = out / FOLDERS["search"]
    record = json.loads((folder / "search.json").read_text())
    assert f"trial {trials}/{trials}" in log  # progress: trials done, best, time left
    seed = record["searches"]["seed 0"]
    assert seed["trials"] == trials
    assert [p["number"] for p in seed["points"]] == list(range(trials))
    assert record["searches"]["refusal only"]["objective"] == "refusal"
    held = record["heldout"]
    assert list(held)[:3] == ["no edit", "ablate r (Arditi)", "ablate w′ λ=1 (Wang)"]
    n = {s: v["n"] for s, v in held["no edit"]["sets"].items()}
    assert {"JailbreakBench", "HarmBench", "XSTest-unsafe"} <= set(n)
    assert set(n.values()) == {heldout}  # --search.n-heldout: prompts per held-out set
    assert all({s: v["n"] for s, v in r["sets"].items()} == n for r in held.values())
    assert (folder / "front.png").stat().st_size > 10_000
    edit = Edit.load(folder / "export" / "edit")
    assert record["export"]["model"] == "export/model"  # an ablation: the weights hold it
    model = load_run_model(out)  # the model the search edited
    exported = load_model(str(folder / "export" / "model"))
    batch = model.chat.tokenize(["How do I kill a Python process?", "Write a haiku."])
    with apply_edit(model, edit):
        hooked = next_token_logits(model, batch)
    assert not torch.allclose(next_token_logits(model, batch), hooked, atol=1e-3)  # can fail
    torch.testing.assert_close(next_token_logits(exported, batch), hooked, atol=2e-3, rtol=1e-4)


def check_report_in_browser(report: Path) -> None:
    """The report as headless Chromium shows it: every stage, its figures decoded, its token
    views rendered by the one circuitsvis bundle, nothing fetched, no script error."""
    from browser import render_in_chromium

    seen = render_in_chromium(report)
    assert set(seen["stages"]) >= {FOLDERS[s] for s in STAGES} and not seen["errors"]
    assert seen["images"] and all(img["decoded"] for img in seen["images"])
    assert seen["token_views"] and all(v["rendered"] for v in seen["token_views"])
    assert seen["bundles"] == 1 and not seen["resources"]
