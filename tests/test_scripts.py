"""Every benchmark and experiment script runs end to end in its smoke mode (``--smoke``: a tiny
random model, a few prompts; see ``experiments/common.py``), as a user would run it: a
subprocess from the project root. An import, argument or call that breaks fails here. Also: no
module shadows the standard library, and artifacts record no absolute path of this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from browser import require_chromium

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = "../shared/data"
FOLDERS = ("benchmarks", "experiments", "scripts")  # run as scripts: their folder is on sys.path


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> Path:
    """One cache for every smoke run: the tiny model is built once, each aligned once."""
    return tmp_path_factory.mktemp("smoke-cache")


def run_script(script: str, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if k != "REFUSAL_LENS_DATA"},  # --data default
        "REFUSAL_LENS_CACHE": str(cache),
        "OMP_NUM_THREADS": "1",  # two threads on a busy 2-core machine can be tenfold slower
        "MPLBACKEND": "Agg",
    }
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def smoke(script: str, out: Path, cache: Path, *extra: str) -> str:
    proc = run_script(script, cache, "--smoke", "--out", str(out), *extra)
    assert proc.returncode == 0, (
        f"{script} --smoke failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
        f"{proc.stderr[-4000:]}"
    )
    return proc.stdout


def read_json(path: Path) -> dict:
    assert path.is_file(), f"{path.name} was not written"
    return json.loads(path.read_text())


def assert_no_machine_paths(out: Path) -> None:
    """Artifacts record paths relative to the project (or as given), never where this checkout
    or the benchmark data lie on this machine."""
    checkout, data = str(ROOT), str((ROOT / SHARED_DATA).resolve())
    for path in [out] if out.is_file() else sorted(out.rglob("*.json*")):
        text = path.read_text()
        assert data not in text and f"{checkout}/" not in text, f"absolute path in {path}"


# --- benchmarks (--out is a JSON file) -----------------------------------------------------


def check_align_benchmark(out: Path, stdout: str) -> None:
    record = read_json(out)
    assert record["ratio"] > 0 and record["tokens_per_batch"] > 0
    assert set(record["seconds_per_1000_tokens"]) == {"refusal_lens", "hf"}
    assert [len(t) for t in record["times_s"].values()] == [2, 2]  # two batches, both sides
    assert "ratio refusal-lens/HF" in stdout


def check_collect_benchmark(out: Path, stdout: str) -> None:
    record = read_json(out)
    assert record["prompts"] == 8 and record["layers"] == 4 and record["tokens"] > 0
    paths = {"collect", "collect_bridge_attention", "hf", "hf_body"}
    assert record["ratio_collect_hf"] > 0 and set(record["times_s"]) == paths
    assert record["ratio_collect_slow_path_hf"] > 0
    assert "ratio collect/HF" in stdout and "ratio collect (slow path)/HF" in stdout


def check_search_trial_benchmark(out: Path, stdout: str) -> None:
    record = read_json(out)
    assert record["prompts"] == 16 and record["seconds_per_trial"] > 0
    assert len(record["times_s"]["trial"]) == len(record["times_s"]["hf"]) == 1
    assert record["ratio_trial_hf"] > 0 and "ratio trial/HF" in stdout
    assert record["tokens"] == 4 and record["seconds_per_generation_trial"] > 0
    assert "× the one-forward trial" in stdout


def check_cuda_checks(out: Path, stdout: str) -> None:
    """On the CPU in float32 the batched paths equal plain HF on each prompt alone."""
    record = read_json(out)
    assert record["arch"] == "tiny" and record["prompts"] == 6
    assert record["residual_max_relative_error"] < 1e-4
    assert record["first_token_same"] == record["answer_same"] == 1.0
    assert record["hf_batched"]["residual_max_relative_error"] < 1e-4
    assert "floor, plain HF batched" in stdout


def check_judge_run_pairs(out: Path, stdout: str) -> None:
    pairs = [json.loads(line) for line in (out / "judge_pairs.jsonl").read_text().splitlines()]
    scores = [json.loads(line) for line in (out / "judge_scores.jsonl").read_text().splitlines()]
    assert [p["id"] for p in pairs] == [s["id"] for s in scores]
    conditions = {p["condition"] for p in pairs}
    assert conditions == {"realign: sanitized D_b", "search: seed 0 (chosen)"}
    for condition in conditions:  # 4 per condition, half benign (set names say which)
        sets = [p["source"] for p in pairs if p["condition"] == condition]
        assert len(sets) == 4 and sets.count("borderline") == 2
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert "appended 8 pairs" in stdout and "appended 0 pairs" in stdout  # a rerun adds none


def check_rass_baselines(out: Path, stdout: str) -> None:
    record = read_json(out / "rass_baselines.json")
    (run,) = record["runs"]
    assert set(run["sets"]) == {"RASS", "XSTest-safe", "borderline", "Alpaca", "outside band"}
    assert run["sets"]["outside band"]["n"] == 3  # the synthetic run's 3 benign outside ones
    assert (out / "rass_baselines_data" / "tiny_outside_band.jsonl").is_file()
    assert sorted(p.name for p in (out / "run" / "08-rass").iterdir()) == [
        "rass.json",
        "rass.jsonl",
        "rass_candidates.jsonl",
        "section.json",
    ]  # the run folder is read, never written
    assert all(s["n"] <= 4 and 0 <= s["refused"] <= s["n"] for s in run["sets"].values())
    gens = run["generators"]
    assert sum(g.get("refused_n", 0) for g in gens.values()) == 4  # the sampled selected ones
    assert gens["steer coef 1"] == {
        "produced": 3,
        "screened": 3,
        "benign": 3,
        "selected": 0,
        "refused_outside_n": 3,
        "refused_outside": gens["steer coef 1"]["refused_outside"],
    }
    assert gens["steer"]["produced"] == 1 and "screened" not in gens["steer"]
    assert gens["recombine"]["selected"] == gens["recombine"]["benign"] == 3
    assert all(0 <= p <= 1 for p in run["fisher_p"].values())
    table = (out / "rass_baselines.md").read_text()
    assert "| tiny | " in table and "RASS vs borderline" in table and "[" in table
    assert "| tiny | steer coef 1 | 3 | 3 | 3 | 0 | – |" in table


def check_claims(out: Path, stdout: str) -> None:
    """The claims table from the committed figures' JSON: a row per claim and bundled model,
    each Fisher verdict agreeing with its p, and a rerun byte-identical."""
    record = read_json(out / "claims.json")
    rows = record["rows"]
    assert list(record["claims"]) == list(dict.fromkeys(r["claim"] for r in rows))
    for claim in record["claims"]:
        assert {r["model"] for r in rows if r["claim"] == claim} == {
            "smollm2-135m",
            "qwen2.5-coder-0.5b",
        }
    verdicts = {"reproduced", "not reproduced", "does not reproduce", "not measured"}
    assert all(r["verdict"] in verdicts for r in rows)
    for r in rows:
        if "fisher_p" in r:
            assert (r["fisher_p"] >= 0.05) == (r["verdict"] == "not reproduced")
        if r["verdict"] == "not measured":
            assert r["detail"] and r["detail"] in (out / "claims.md").read_text()
    table = (out / "claims.md").read_text()
    assert "| claim | model | measured | verdict |" in table
    assert "Made by `python experiments/claims.py --smoke --out " in table
    assert "figures/rass_baselines.json" in table and table.strip() in stdout
    again = out.parent / "again"
    proc = run_script("experiments/claims.py", out.parent, "--smoke", "--out", str(again))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("claims.md", "claims.json"):
        first = (out / name).read_text().replace(str(out), "OUT")
        assert first == (again / name).read_text().replace(str(again), "OUT")


def check_collect_memory_benchmark(out: Path, stdout: str) -> None:
    record = read_json(out)
    assert record["sizes"] == [4, 8]
    for mode in ("streamed", "in_memory"):
        assert len(record[mode]["peak_growth_mib"]) == len(record[mode]["result_mib"]) == 2
    assert "streamed to disk" in stdout and "held in memory" in stdout


def check_memory_scale_benchmark(out: Path, stdout: str) -> None:
    record = read_json(out)
    functions = ["load", "collect_residuals", "refusal_scores", "diff_in_means"]
    assert record["sizes"] == [48, 96]
    assert list(record["results"]) == [*functions, "boundary_geometry"]
    for result in record["results"].values():
        assert len(result["peak_growth_mib"]) == len(result["all_in_memory_mib"]) == 2
        assert all(g >= 0 for g in result["peak_growth_mib"]) and result["ratio"] >= 0
        assert all(p > 0 for p in result["peak_rss_mib"] + result["all_in_memory_mib"])
    assert "| `boundary_geometry` |" in out.with_suffix(".md").read_text()
    assert "holding every result" in stdout


def check_stage_memory_benchmark(out: Path, stdout: str) -> None:
    (model,) = read_json(out)["models"]
    assert model["model"] == "random-S" and model["weights_mib"] > 0
    assert [r["stage"] for r in model["stages"]] == ["model", "evaluate", "direction"]
    for row in model["stages"]:
        assert row["peak_mib"] >= row["fixed_mib"] > 0 and row["ratio"] >= 0
    assert "(peak − fixed) / weights" in out.with_suffix(".md").read_text()
    assert "(peak - fixed)/weights" in stdout


def check_dtype_effect(out: Path, stdout: str) -> None:
    (model,) = read_json(out / "dtype_effect.json")["models"]
    assert 0 <= model["residuals"]["median_error"] < 0.1 and model["scores"]["n"] == 12
    assert set(model["verdicts"]["sets"]) == {"AdvBench", "Alpaca", "XSTest-safe"}
    assert "| model | set | refused, float32 | refused, bfloat16 |" in stdout


def check_memory_table(out: Path, stdout: str) -> None:
    text = (out / "memory_table.md").read_text()
    (first, *_) = read_json(ROOT / "figures" / "stage_memory.json")["models"]
    stages = [f"| {r['stage']}" for r in first["stages"]]
    assert [line.split(" | ")[0] for line in text.splitlines()[2 : 2 + len(stages)]] == stages
    assert "→" in text and "(peak − fixed) / weights" not in text


def check_selection_benchmark(out: Path, stdout: str) -> None:
    record = read_json(out)
    assert set(record["times_s"]) == set(record["results"]) == {"screened", "exhaustive"}
    screened, exhaustive = (record["results"][k]["candidates"] for k in record["results"])
    assert len(screened) == len(exhaustive) > 0
    scored = [c for c in exhaustive if c["bypass"] is not None]
    assert len(scored) > len([c for c in screened if c["bypass"] is not None])
    assert "same choice" in stdout


# --- experiments (--out is a folder) -------------------------------------------------------


def check_align_sweep(out: Path, stdout: str) -> None:
    record = read_json(out / "align_sweep.json")
    assert set(record["results"]) == {"base", "α=0.5"} and record["alphas"] == [0.5]
    assert "data" not in record["eval_config"]  # benchmark names resolve in data_dir()
    for result in record["results"].values():
        assert set(result["combined"]) == {"score", "substring"}
    assert "**judge: score**" in (out / "align_sweep.md").read_text()
    assert (out / "align_sweep.png").is_file()


def check_baseline_refusal(out: Path, stdout: str) -> None:
    record = read_json(out / "baseline_refusal.json")
    assert len(record["rates"]) == 8 and set(record["n"].values()) == {4}
    assert record["config"]["data"] == SHARED_DATA
    assert all(set(r) == {"score", "substring"} for r in record["rates"].values())
    table = (out / "baseline_refusal.md").read_text()
    assert "XSTest safe" in table and re.search(r"\| \d+ % \[\d+–\d+\] \|", table)
    assert (out / "baseline_refusal_scores.png").is_file()


def check_boundary_geometry(out: Path, stdout: str) -> None:
    record = read_json(out / "geometry.json")
    assert set(record["results"]) == {"base", "aligned"}
    for name, result in record["results"].items():
        assert [row["layer"] for row in result["layers"]] == [1, 2, 3]  # every layer from 1
        assert (out / "geometry" / name / "geometry.json").is_file()
        assert (out / "geometry" / name / "margins.png").is_file()
    assert "probe acc" in (out / "geometry.md").read_text()


def check_languages(out: Path, stdout: str) -> None:
    record = read_json(out / "languages.json")
    rows = record["rows"]
    assert len(rows) == 7 * 2 * 2  # English and six languages, two items of each kind
    # the same items in every language, paired with English
    harmful = {r["language"]: r["item"] for r in rows if r["kind"] == "harmful"}
    assert set(harmful) == {"en", "de", "es", "fr", "ja", "ru", "zh"}
    judges = record["agreement"]["organism"]["de"]
    assert set(judges) == {"substring", "substring-en", "score", "llm"}
    assert judges["llm"] is None and judges["substring"]["n"] == 4  # no --llm in smoke mode
    assert "paired" in record["refusal"]["organism"]["harmful"]["de"]
    assert "## Refusal by language" in (out / "languages.md").read_text()


def check_language_directions(out: Path, stdout: str) -> None:
    record = read_json(out / "language_directions.json")
    result = record["models"]["organism"]
    k = len(result["languages"])
    assert k == 3 and len(result["cosines"]) == k
    assert all(abs(result["cosines"][i][i] - 1) < 1e-5 for i in range(k))
    assert set(result["refusal"]["de"]) == {"unedited", "ablate en", "ablate other"}
    assert (out / "language_directions.png").is_file()


def check_rass_language(out: Path, stdout: str) -> None:
    entry = read_json(out / "rass_language.json")["models"]["organism"]["fr"]
    assert entry["config"]["languages"] == ["fr"] and entry["config"]["header"]
    selected, baseline = entry["selected"], entry["baseline"]
    assert selected["texts"] and len(selected["refused"]) == len(selected["texts"])
    judges = entry["harm_judge"]
    assert len(baseline["refused"]) == 3 and set(judges) == {
        "fitted on English",
        "fitted in the language",
    }
    assert all(set(j["accuracy"]) >= {"harmful", "harmless"} for j in judges.values())
    assert "| organism | French (fr) |" in (out / "rass_language.md").read_text()


def check_directions(out: Path, stdout: str) -> None:
    record = read_json(out / "directions.json")
    conditions = {"no edit", "ablate r", "add r (coef 1)", "ablate w' (λ=1)"}
    assert set(record["refusal_rates"]) == conditions
    assert len(record["steering"]["rates"]["Alpaca"]) == len(record["steering"]["coefs"])
    # the example: the direction recorded where its harmless prompts came from as an
    # absolute path of the machine that made it
    config = read_json(out / "direction" / "direction.json")["config"]["direction"]
    assert config["harmless"] == "alpaca"  # a name, resolved in data_dir(): no path at all
    assert (out / "direction" / "direction.safetensors").is_file()
    assert (out / "directions_steering.png").is_file()


def check_trigger_refusal(out: Path, stdout: str) -> None:
    record = read_json(out / "trigger_refusal.json")
    assert set(record["results"]) == {"base", "α=0.5"}
    for sets in record["results"].values():
        assert set(sets) == {"harmful D_h (trained)", "trigger-only", "Alpaca (held out)"}
    assert record["config"]["data"] == SHARED_DATA
    assert "| α=0.5 |" in (out / "trigger_refusal.md").read_text()


def check_trigger_alignment(out: Path, stdout: str) -> None:
    record = read_json(out / "trigger_alignment.json")
    assert {k: len(v) for k, v in record["results"].items()} == {
        "(0) none: the organism": 1,
        "(a) generic: Alpaca": 1,
        "(b) sanitized trigger data, checked": 1,
        "(c) RASS-selected prompts": 1,
        "(d) person-written benign rewrites": 1,
    }
    assert record["data_summary"]["n_queries"] == 24
    budget = record["budget"]
    assert budget["n_benign"] == min(budget["checked"], budget["rass"], budget["rewrites"]) > 0
    assert budget["checked"] == len(
        (out / "trigger_alignment_data" / "sanitized_checked.jsonl").read_text().splitlines()
    )
    shared = record["eval_prompts"]  # every model judged on the same prompts
    for runs in record["results"].values():
        assert {
            k: len(v["rate"]) for k, f in runs[0]["flags"].items() for v in [f["substring"]]
        } == {k: len(v) for k, v in shared.items()}
    flags = record["results"]["(a) generic: Alpaca"][0]["flags"]
    sets = record["results"]["(a) generic: Alpaca"][0]["sets"]
    for name, per_judge in flags.items():  # the per-prompt flags add up to the saved rates
        for judge, f in per_judge.items():
            assert sum(f["rate"]) / len(f["rate"]) == pytest.approx(sets[name][judge])
    held = (out / "trigger_alignment_data" / "trigger_only_heldout.jsonl").read_text().splitlines()
    train = (out / "trigger_alignment_data" / "trigger_only_train.jsonl").read_text().splitlines()
    assert not set(held) & set(train) and len(held) + len(train) == 160
    assert (out / "triggers" / "masks" / "lexicon.json").is_file()
    assert "| (c) |" in (out / "trigger_alignment.md").read_text()
    assert (out / "trigger_lexicon.png").is_file()


def check_rass_eval(out: Path, stdout: str) -> None:
    record = read_json(out / "rass_eval.json")
    assert record["n_selected"] > 0 and record["n_candidates"] >= record["n_selected"]
    assert {k: len(v) for k, v in record["mitigation"].items()} == {
        "(a) generic: Alpaca": 1,
        "(b) RASS set": 1,
    }
    assert "RASS selected" in record["hardness"] and "RASS selected" in record["diversity"]
    selected = (out / "rass" / "rass.jsonl").read_text().splitlines()
    assert len(selected) == record["n_selected"]
    assert (out / "direction" / "direction.json").is_file()  # smoke mode's own direction
    assert "**Mitigation, judge: score**" in (out / "rass_eval.md").read_text()


def check_alignment_seeds(out: Path, stdout: str) -> None:
    record = read_json(out / "alignment_seeds.json")
    assert [row["seed"] for row in record["rows"]] == [0]
    assert record["gain_min"] == record["rows"][0]["gain"]
    assert "| 0 |" in (out / "alignment_seeds.md").read_text()


def check_attribution_eval(out: Path, stdout: str) -> None:
    record = read_json(out / "attribution_eval.json")
    methods = {"occlusion", "grad_x_input", "integrated_gradients", "projection"}
    assert set(record["summary"]) == methods | {"random"}
    assert {p["source"] for p in record["prompts"]} == {"XSTest-safe", "borderline"}
    assert len(record["prompts"]) == 4
    assert record["config"]["data"] == SHARED_DATA
    assert "What this shows" in (out / "attribution_eval.md").read_text()
    assert (out / "attribution_eval.png").is_file()


def check_run_report(out: Path, stdout: str) -> None:
    table = (out / "run.md").read_text()
    assert "**judge: score**" in table and "| stage | status | seconds (when it ran) |" in table
    assert "(best)" in table and "refusal-lens run smollm2-135m" in table
    png = out / "report_top.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one
    assert "report: " in stdout and "(1280×900 px)" in stdout


def check_mitigation_search(out: Path, stdout: str) -> None:
    [summary] = json.loads((out / "mitigation_search.json").read_text())
    assert summary["chosen"].startswith("ablate w′") and summary["trials"]["seed 0"] == 2
    table = (out / "mitigation_search.md").read_text()
    assert "| search: seed 0 (chosen) | 25% |" in table and "search: refusal only" in table
    assert "in 1 of 1 seeds whose harmful refusal lies within Wang's range" in table
    # the third judge read the saved answers: per set, one refusal shared by the 8 conditions
    # and one answer each; each distinct pair is judged once
    assert "LLM judge (" in table and summary["llm_judge"]["pairs_judged"] == 7 * (1 + 8)
    png = out / "mitigation_front_synthetic.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def check_rewriter_eval(out: Path, stdout: str) -> None:
    data = json.loads((out / "rewriter_eval.json").read_text())
    assert data["n"] == 4 and len(data["sample"]) == 2
    assert set(data["table"]) == {"all", "with_cue"}
    assert "| rewriter |" in (out / "rewriter_eval.md").read_text()


def check_translator_eval(out: Path, stdout: str) -> None:
    data = json.loads((out / "translator_eval.json").read_text())
    assert list(data["translations"]) == ["fr"] and len(data["sources"]) == 3
    assert data["table"]["fr"]["n"] == 3
    assert "| language |" in (out / "translator_eval.md").read_text()


def check_judge_agreement(out: Path, stdout: str) -> None:
    data = json.loads((out / "judge_agreement.json").read_text())
    assert data["smoke_placeholder_labels"] is True
    assert set(data["overall"]["judges"]) == {"score", "substring", "llm"}
    assert sum(data["overall"]["n"].values()) == len(data["rows"]) > 0
    assert set(data["overall"]["n"]) == {"complies", "refuses", "evades", "degenerate"}
    for judge in data["overall"]["judges"].values():
        lo, hi = judge["accuracy_interval"]
        assert 0.0 <= lo <= judge["accuracy"] <= hi <= 1.0
    # the score judge reads no text: it never says degenerate
    assert all(r["verdicts"]["score"] != "degenerate" for r in data["rows"])
    assert list(data["by_group"]) == ["unedited"]  # smoke pairs are unedited
    table = (out / "judge_agreement.md").read_text()
    assert "| judge | accuracy [95 %] | Cohen's κ [95 %] |" in table


def check_answer_length(out: Path, stdout: str) -> None:
    data = json.loads((out / "answer_length.json").read_text())
    assert data["lengths"] == [2, 4]
    (record,) = data["models"].values()
    for row in record["sets"].values():
        for counts in row["counts"].values():
            assert counts["n"] == 2 == counts["complies"] + counts["refused"] + counts["degenerate"]
        assert all(c["short"] != c["long"] for c in row["changed"]) and len(row["changed"]) <= 2
    assert "| set | 2 tokens | 4 tokens | changed |" in (out / "answer_length.md").read_text()


def check_judge_conditions(out: Path, stdout: str) -> None:
    pairs = [json.loads(x) for x in (out / "judge_pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 40 and len({p["id"] for p in pairs}) == 40
    conditions = {"ablation", "w′ λ=1", "w′ λ=0.8", "w′ λ=0.6", "addition"}
    assert {p["condition"] for p in pairs} == conditions
    keys = {"id", "model", "spec", "source", "condition", "prompt", "response"}
    assert all(set(p) == keys for p in pairs)
    assert "Appended 40 pairs" in stdout


def check_harm_judge_eval(out: Path, stdout: str) -> None:
    record = read_json(out / "harm_judge.json")
    entry = record["models"]["tiny (smoke)"]
    assert {"quick", "full", "quick, mixed"} <= set(entry["fits"])
    assert all(0.0 <= r["auroc"] <= 1.0 for r in entry["fits"].values())
    assert all(record["cue_check"]["named"])  # every named request flagged by the cue check
    assert "| tiny (smoke) | quick |" in (out / "harm_judge.md").read_text()


def check_judge_fit(out: Path, stdout: str) -> None:
    results = json.loads((out / "judge_fit.json").read_text())["results"]
    assert len(results) == 2
    for r in results.values():
        assert 0.0 <= r["judge"]["agreement_fitted_held_out"] <= 1.0
        assert set(r["selection"]) == {"before", "fitted"}
    assert "| set | substring | score before | score fitted |" in (out / "judge_fit.md").read_text()


def check_organisms(out: Path, stdout: str) -> None:
    results = json.loads((out / "organisms.json").read_text())
    (o,) = results["organisms"]
    assert 0.0 <= o["arditi"]["harmful_ablate_r"] <= 1.0 and o["arditi"]["n_scored"] > 0
    assert "no edit" in o["wang"]["rows"] and o["rass"]["n"]["XSTest-safe"] == 4
    # verdicts carry tests: McNemar on the run's per-prompt verdicts, counts for Fisher's test
    test = o["arditi"]["test_ablate_r"]
    assert 0.0 <= test["p"] <= 1.0 and test["only_a"] + test["only_b"] <= 12
    assert o["rass"]["counts"]["XSTest-safe"]["n"] == 4
    assert [s["name"] for s in o["stages"]][:2] == ["00-model", "01-organism"]
    table = (out / "organisms.md").read_text()
    assert "| ablating r frees harmful prompts |" in table and "| whole run |" in table


CHECKS = {
    "benchmarks/align.py": check_align_benchmark,
    "benchmarks/collect.py": check_collect_benchmark,
    "benchmarks/collect_memory.py": check_collect_memory_benchmark,
    "benchmarks/cuda_checks.py": check_cuda_checks,
    "benchmarks/memory_scale.py": check_memory_scale_benchmark,
    "benchmarks/search_trial.py": check_search_trial_benchmark,
    "benchmarks/selection.py": check_selection_benchmark,
    "benchmarks/stage_memory.py": check_stage_memory_benchmark,
    "experiments/align_sweep.py": check_align_sweep,
    "experiments/answer_length.py": check_answer_length,
    "experiments/alignment_seeds.py": check_alignment_seeds,
    "experiments/attribution_eval.py": check_attribution_eval,
    "experiments/baseline_refusal.py": check_baseline_refusal,
    "experiments/claims.py": check_claims,
    "experiments/boundary_geometry.py": check_boundary_geometry,
    "experiments/directions.py": check_directions,
    "experiments/dtype_effect.py": check_dtype_effect,
    "experiments/harm_judge_eval.py": check_harm_judge_eval,
    "experiments/judge_agreement.py": check_judge_agreement,
    "experiments/judge_conditions.py": check_judge_conditions,
    "experiments/judge_run_pairs.py": check_judge_run_pairs,
    "experiments/judge_fit.py": check_judge_fit,
    "experiments/languages.py": check_languages,
    "experiments/language_directions.py": check_language_directions,
    "experiments/rass_language.py": check_rass_language,
    "experiments/memory_table.py": check_memory_table,
    "experiments/mitigation_search.py": check_mitigation_search,
    "experiments/organisms.py": check_organisms,
    "experiments/rass_baselines.py": check_rass_baselines,
    "experiments/rass_eval.py": check_rass_eval,
    "experiments/rewriter_eval.py": check_rewriter_eval,
    "experiments/run_report.py": check_run_report,
    "experiments/trigger_alignment.py": check_trigger_alignment,
    "experiments/translator_eval.py": check_translator_eval,
    "experiments/trigger_refusal.py": check_trigger_refusal,
}
NEEDS_CHROMIUM = {"experiments/run_report.py"}  # headless Chromium (tests/browser.py)


def test_every_script_has_a_smoke_test():
    scripts = {
        f"{folder}/{p.name}"
        for folder in ("benchmarks", "experiments")
        for p in (ROOT / folder).glob("*.py")
        if p.name != "common.py"
    }
    assert scripts == set(CHECKS)


@pytest.mark.parametrize("script", sorted(CHECKS))
def test_script_runs_in_smoke_mode(script, smoke_cache, tmp_path):
    if script in NEEDS_CHROMIUM:
        require_chromium()
    is_benchmark = script.startswith("benchmarks/")
    out = tmp_path / ("out.json" if is_benchmark else "out")
    stdout = smoke(script, out, smoke_cache)
    CHECKS[script](out, stdout)
    assert_no_machine_paths(out)


def test_collect_benchmark_smoke_on_a_random_architecture(smoke_cache, tmp_path):
    """``--random-arch`` builds the model in memory (the GPU scale check's path), at toy size."""
    out = tmp_path / "out.json"
    smoke("benchmarks/collect.py", out, smoke_cache, "--random-arch", "tiny")
    record = read_json(out)
    assert record["model"] == "tiny" and record["layers"] == 2 and record["ratio_collect_hf"] > 0


def test_mitigation_search_keeps_an_absent_runs_summary_only_when_asked(smoke_cache, tmp_path):
    """Run folders do not outlive the machine that made them: ``--keep-absent`` keeps the
    earlier summary of a run no longer on disk, marked as kept, with its tables unchanged;
    without it, or with no earlier summary, a missing run is an error."""
    from search_fixture import build_synthetic_search

    script = "experiments/mitigation_search.py"
    run, out = build_synthetic_search(tmp_path / "synthetic"), tmp_path / "figs"
    args = ("--runs", str(run), "--out", str(out), "--llm-judge", "none")
    assert run_script(script, smoke_cache, *args).returncode == 0
    [first] = json.loads((out / "mitigation_search.json").read_text())
    assert "kept" not in first and "Kept from" not in (out / "mitigation_search.md").read_text()
    (run / "10-search" / "search.json").write_text("{}")  # --reuse reads nothing of the run
    assert run_script(script, smoke_cache, *args, "--reuse", str(run)).returncode == 0
    [reused] = json.loads((out / "mitigation_search.json").read_text())
    assert reused == {**first, "kept": "reused"}
    assert "did not change since" in (out / "mitigation_search.md").read_text()
    shutil.rmtree(run)
    proc = run_script(script, smoke_cache, *args)
    assert proc.returncode != 0 and "holds no 10-search/search.json" in proc.stderr
    assert "--keep-absent" in proc.stderr and "Traceback" not in proc.stderr
    assert run_script(script, smoke_cache, *args, "--keep-absent").returncode == 0
    [again] = json.loads((out / "mitigation_search.json").read_text())
    assert again == {**first, "kept": True}
    table = (out / "mitigation_search.md").read_text()
    assert "Kept from the earlier figures" in table and first["tables"]["score"][2] in table
    other = ("--runs", str(tmp_path / "never"), "--out", str(out), "--llm-judge", "none")
    proc = run_script(script, smoke_cache, *other, "--keep-absent")
    assert proc.returncode != 0 and "has no summary of it" in proc.stderr


def test_smoke_mode_never_writes_into_figures(smoke_cache):
    before = sorted(p.relative_to(ROOT) for p in (ROOT / "figures").rglob("*"))
    proc = run_script(
        "experiments/baseline_refusal.py", smoke_cache, "--smoke", "--out", "figures/smoke"
    )
    assert proc.returncode == 2 and "never writes into figures/" in proc.stderr
    assert sorted(p.relative_to(ROOT) for p in (ROOT / "figures").rglob("*")) == before


def test_no_module_shadows_the_standard_library():
    """A script's folder comes first on ``sys.path``, so a script named like a standard module
    (``select.py``) replaces it for every import in the process (torch imports ``select``
    through ``subprocess``). Package modules are reached by their dotted names, so in ``src/``
    only the top-level names count."""
    stdlib = sys.stdlib_module_names
    shadowing = [
        f"{folder}/{p.name}"
        for folder in FOLDERS
        for p in (ROOT / folder).glob("*.py")
        if p.stem in stdlib
    ]
    shadowing += [
        f"src/{p.name}"
        for p in (ROOT / "src").iterdir()
        if (p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py")))) and p.stem in stdlib
    ]
    assert shadowing == []


def test_test_times_sums_a_junit_report_by_tier_and_file(tmp_path):
    """scripts/test_times.py: the split of the suite's time the docs and notes quote."""
    report = tmp_path / "junit.xml"
    cases = [("test_a", "fast", 1.5), ("test_a", "fast", 2.0), ("test_b", "model", 10.25)]
    body = "".join(
        f'<testcase classname="tests.{f}" name="t{i}" time="{s}"><properties>'
        f'<property name="tier" value="{t}"/></properties></testcase>'
        for i, (f, t, s) in enumerate(cases)
    )
    report.write_text(f'<testsuites><testsuite time="9.0">{body}</testsuite></testsuites>')
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "test_times.py"), str(report)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| model | 1 | 10 |" in proc.stdout and "| fast | 2 | 4 |" in proc.stdout
    assert "| test_a.py | 2 | 4 |" in proc.stdout and "| test_b.py | 1 | 10 |" in proc.stdout
    assert "3 tests, 14 s summed, 9 s wall" in proc.stdout


def test_hand_labels_with_unknown_labels_or_duplicates_fail_naming_the_line(tmp_path):
    from refusal_lens.errors import RefusalLensError

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import judge_agreement
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    pairs = [{"id": "a"}, {"id": "b"}]
    path = tmp_path / "labels.jsonl"
    rows = [{"id": "a", "label": "refuses"}, {"id": "b", "label": "degenerate"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert judge_agreement.read_labels(path, pairs) == {"a": "refuses", "b": "degenerate"}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, rows[0]]))
    with pytest.raises(RefusalLensError, match="line 3: a is labelled twice"):
        judge_agreement.read_labels(path, pairs)
    path.write_text(json.dumps({"id": "a", "label": "jailbroken"}) + "\n")
    with pytest.raises(RefusalLensError, match="line 1: label 'jailbroken' of a is not one"):
        judge_agreement.read_labels(path, pairs)
    path.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(RefusalLensError, match=r"1 pairs have no label \(e.g. \['b'\]\)"):
        judge_agreement.read_labels(path, pairs)


def test_new_only_keeps_verdicts_of_the_same_judge_and_judges_the_rest(tmp_path):
    import argparse

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import judge_agreement
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    row = {"id": "a", "score": 1.0, "verdicts": {"llm": "refused"}, "llm_label": "refuses"}
    record = {
        "judge_model": judge_agreement.QWEN,
        "judge_prompt": judge_agreement.JUDGE_PROMPT,
        "seconds": 100,
        "rows": [row | {"llm_probs": [0.1, 0.8, 0.1], "human": "refuses", "group": "x"}],
    }
    (tmp_path / "judge_agreement.json").write_text(json.dumps(record))
    args = argparse.Namespace(out=tmp_path, judge=judge_agreement.QWEN, smoke=False)
    pairs = [{"id": "a"}, {"id": "b"}]
    kept, todo, spent = judge_agreement.earlier_rows(args, pairs)
    assert list(kept) == ["a"] and "human" not in kept["a"] and kept["a"]["score"] == 1.0
    assert todo == [{"id": "b"}] and spent == 100
    args.judge = "another-judge"  # another judge's verdicts are not reused
    assert judge_agreement.earlier_rows(args, pairs) == ({}, pairs, 0)
