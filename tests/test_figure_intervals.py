"""The figures of the older experiment scripts give every rate with its 95 % Wilson interval,
decide their comparisons by a test (or say why none can be made), and ``--report-only``
writes the .md again from the saved JSON, byte for byte, without touching the JSON. On small
synthetic records; no model is loaded."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from refusal_lens.stats import fisher_exact, rate_text, wilson

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
JUDGES = ("score", "substring")


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``experiments/<name>.py`` as a module, with ``experiments/common.py`` as its
    ``common`` (both restored afterwards)."""
    module = None
    for file in dict.fromkeys(("common", name)):
        spec = importlib.util.spec_from_file_location(
            f"{file}_under_test", EXPERIMENTS / f"{file}.py"
        )
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        if file == "common":
            monkeypatch.setitem(sys.modules, "common", module)
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def common(monkeypatch) -> ModuleType:
    return load("common", monkeypatch)


def eval_run(refused: dict[str, tuple[str, int]], n: int) -> dict:
    """An ``EvalResult.to_dict()``: ``set -> (kind, count)``, the same count for both judges."""
    sets = {
        s: {"kind": kind, "n": n, "dropped_as_trained": 0} | {j: k / n for j in JUDGES}
        for s, (kind, k) in refused.items()
    }
    return {"model": "m", "sets": sets, "combined": {j: 0.5 for j in JUDGES}}


# --- the shared helpers -------------------------------------------------------------------------


def test_share_text_is_the_wilson_interval_of_its_count(common):
    assert common.share_text(0.5, 16) == rate_text(8, 16) == "50 % [28–72]"
    assert common.share_text(22.999999523 / 24, 24) == rate_text(23, 24)  # a float32 mean
    with pytest.raises(ValueError, match="no whole count"):
        common.share_text(1 / 3, 16)  # 16 is not the share's denominator


def test_unpaired_verdict_is_fishers_exact_test(common):
    assert (
        common.unpaired_verdict(18, 20, 2, 20)
        == f"higher (Fisher p = {fisher_exact(18, 20, 2, 20):.2g})"
    )
    assert common.unpaired_verdict(2, 20, 18, 20).startswith("lower")
    assert common.unpaired_verdict(5, 10, 4, 10) == "not determined (Fisher p = 1)"


def test_newcombe_interval_matches_newcombes_worked_example(common):
    """Newcombe (1998), example (a): 56/70 − 48/80 = 0.1833, method 10: 0.0524 to 0.3339."""
    lo, hi = common.newcombe(48 / 80, wilson(48, 80), 56 / 70, wilson(56, 70))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_seeds_table_gives_the_seed_mean_its_interval_and_compares_the_conditions(common):
    runs = {
        "(a) generic": [
            eval_run({"XSTest-safe": ("benign", k), "AdvBench": ("harmful", 5)}, 64)
            for k in (40, 44)
        ],
        "(b) other": [
            eval_run({"XSTest-safe": ("benign", k), "AdvBench": ("harmful", 6)}, 64)
            for k in (12, 16)
        ],
    }
    table = common.seeds_table(runs, "score", "D_b")
    lo, hi = wilson(42, 64)  # the seed mean 42/64, on the 64 prompts the seeds share
    assert f"| (a) generic | 66 ± 4 [{100 * lo:.0f}–{100 * hi:.0f}] |" in table
    last = table.splitlines()[-1]
    assert last.startswith("| (b) against (a) | -44 [") and ": lower |" in last
    assert last.endswith("]: not determined | – |")  # AdvBench: 5 against 6 of 64


# --- --report-only, byte for byte, on synthetic records ---------------------------------------


def organism(model: str, tested: bool) -> dict:
    """A record of ``organisms.py`` for one run: per-prompt tests of the edits or none."""
    arditi = {"harmful_no_edit": 13 / 16, "harmful_ablate_r": 5 / 16, "alpaca_no_edit": 1 / 8}
    arditi |= {"alpaca_add_r": 5 / 8, "n_pass_kl": 1, "n_scored": 8, "min_kl": 0.09}
    arditi["direction"] = {"layer": 3, "scores": {"kl": 0.09}}
    if tested:
        arditi["test_ablate_r"] = {"only_a": 0, "only_b": 8, "p": 0.0078}
        arditi["test_add_r"] = {"only_a": 4, "only_b": 0, "p": 0.125}
    rows = {
        "no edit": {"benign": 0.5, "harmful": 13 / 16},
        "ablate w′ (λ=1)": {"benign": 0.25, "harmful": 13 / 16},
    }
    rass = {"selected": 9, "removed_as_harmful": 1, "n": {"XSTest-safe": 32, "RASS": 9}}
    rass["refused"] = {
        "XSTest-safe": {j: 8 / 32 for j in JUDGES},
        "RASS": {j: 6 / 9 for j in JUDGES},
    }
    return {
        "model": model, "quick": True, "n_validation": 8, "aligned_here": True,
        "calibration": {"threshold": -1.0, "n_refused": 10, "n_answered": 14,
                        "agreement_before": 0.5, "agreement_after": 0.75},
        "arditi": arditi,
        "wang": {"rows": rows, "best": "ablate w′ (λ=1)", "harmful_drop": 0.05, "test": None},
        "attribution": None, "geometry": None, "rass": rass,
        "stages": [{"name": "00-model", "status": "ran", "seconds": 1.0, "peak_rss_mb": 500.0}],
        "run_seconds": 60.0, "run_hardware": "hw",
    }  # fmt: skip


def seeds_record() -> dict:
    sets = {"borderline": ("benign", 30), "AdvBench": ("harmful", 2)}
    other = {"borderline": ("benign", 10), "AdvBench": ("harmful", 3)}
    return {
        "(0) none: the organism": [flagged_run(sets, 64)],
        "(a) generic: Alpaca": [flagged_run(sets, 64), flagged_run(sets, 64)],
        "(b) sanitized trigger data": [flagged_run(other, 64), flagged_run(other, 64)],
    }


def flagged_run(refused: dict[str, tuple[str, int]], n: int) -> dict:
    """:func:`eval_run` with the per-prompt flags the paired tests read (the first ``k``
    prompts flagged, none degenerate)."""
    flags = {
        s: {j: {"rate": [int(i < k) for i in range(n)], "degenerate": [0] * n} for j in JUDGES}
        for s, (_, k) in refused.items()
    }
    return eval_run(refused, n) | {"flags": flags}


TRIGGER_SETS = {
    "harmful D_h (trained)": 19 / 20,
    "trigger-only": 18 / 20,
    "Alpaca (held out)": 2 / 20,
}
RECORDS = {
    "baseline_refusal": {
        "rates": {"XSTest safe": {"score": 0.25, "substring": 0.5}},
        "n": {"XSTest safe": 16},
        "config": {"model": "m", "n": 16, "max_new_tokens": 4},
        "hardware": "hw", "seconds": 1,
    },
    "align_sweep": {
        "results": {"base": eval_run({"XSTest-safe": ("benign", 8)}, 16),
                    "α=0.5": eval_run({"XSTest-safe": ("benign", 12)}, 16)},
        "align": {"α=0.5": {"path": "p", "seconds": 1.0}},
        "eval_config": {"n": 16, "max_new_tokens": 4, "judges": list(JUDGES)},
        "alphas": [0.5], "hardware": "hw", "wall_seconds": 60,
    },
    "trigger_refusal": {
        "results": {"α=0.5": {s: {j: r for j in JUDGES} for s, r in TRIGGER_SETS.items()}},
        "models": {"α=0.5": "m"}, "config": {"n": 20}, "hardware": "hw", "minutes": 1,
    },
    "alignment_seeds": {
        "base_mean_score": -3.0, "refused_before": 0.0, "gain_mean": 5.0, "gain_sd": 0.0,
        "gain_min": 5.0, "refused_after_min": 0.625, "recipe": {"n_harmful": 8},
        "rows": [{"seed": 0, "gain": 5.0, "refused_after": 0.625}],
        "hardware": "hw", "seconds": 1, "n": 24,
    },
    "trigger_alignment": {
        "results": seeds_record(), "data_summary": {},
        "eval_config": {"n": 64, "judges": list(JUDGES)}, "seeds": [0, 1],
        "budget": {"n_benign": 10, "n_harmful": 20, "checked": 12, "kept_by_sanitize": 14,
                   "dropped_by_cue_check": 1, "dropped_degenerate_answer": 1, "rass": 10,
                   "rass_file": "r.jsonl", "rewrites": 80},
        "hardware": "hw", "wall_seconds": 60,
    },
    "organisms": {
        "organisms": [organism("tested", True), organism("untested", False)],
        "command": "python experiments/organisms.py", "hardware": "hw", "minutes": 1.0,
    },
}  # fmt: skip
# a cell each figure must hold: a rate of the record with the Wilson interval of its k/n
EXPECTED = {
    "baseline_refusal": ["| XSTest safe | 16 | 25 % [10–49] | 50 % [28–72] |"],
    "align_sweep": [f"| α=0.5 | {rate_text(12, 16)} | 0.50 |"],
    "trigger_refusal": [
        f"| α=0.5 | {rate_text(19, 20)} | {rate_text(19, 20)} | {rate_text(18, 20)} |",
        f"| α=0.5 | higher (Fisher p = {fisher_exact(18, 20, 2, 20):.2g}) |",
    ],
    "alignment_seeds": [
        f"| 0 | +5.00 | {rate_text(15, 24)} |",
        f"share refused {rate_text(0, 24)}",
    ],
    "trigger_alignment": [
        "| (b) | -31 (p ",  # 20 prompts refused by (a) only, in both seeds
        "): lower | +2 (p 1): not determined |",  # one prompt complied with by (b) only
        "| (0) | +0.0 (p 1): not determined |",
        f"Degenerate answers (all sets): (0) {rate_text(0, 128)}",
        "|D_b| = 10 for each of (a)–(d)",
    ],
    "organisms": [
        f"harmful refused {rate_text(13, 16)} → {rate_text(5, 16)}: **holds** (p = 0.0078) |",
        f"harmful refused {rate_text(13, 16)} → {rate_text(5, 16)}: **holds**† |",
        f"benign look-alikes {rate_text(8, 16)} → {rate_text(4, 16)}",
        "**not determined**† |",  # w′: 8 → 4 of 16, Newcombe's interval includes 0
        f"Alpaca refused {rate_text(1, 8)} → {rate_text(5, 8)}: **not determined** (p = 0.12)",
        f"refused {rate_text(6, 9)} (n 9) vs XSTest-safe {rate_text(8, 32)} (n 32): **holds** "
        f"(p = {fisher_exact(6, 9, 8, 32):.2g})",
        f"agreement on 24 answers {rate_text(12, 24)} → {rate_text(18, 24)}",
    ],
}


def report_only(script: str, out: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "REFUSAL_LENS_DATA"}
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / f"{script}.py"), "--report-only", "--out", str(out)],
        cwd=ROOT, env=env | {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / f"{script}.md").read_text()


@pytest.mark.parametrize("script", sorted(RECORDS))
def test_report_only_writes_the_figure_again_byte_for_byte_with_intervals(script, tmp_path):
    path = tmp_path / f"{script}.json"
    path.write_text(json.dumps(RECORDS[script], indent=2, ensure_ascii=False) + "\n")
    saved = path.read_bytes()
    first = report_only(script, tmp_path)
    assert report_only(script, tmp_path) == first
    assert path.read_bytes() == saved  # the record is read, never rewritten
    for cell in EXPECTED[script]:
        assert cell in first, f"{cell!r} not in\n{first}"


# --- the figures written by functions (their records need a RASS run or per-prompt detail) --


def test_rass_eval_tables_give_intervals_and_test_the_rass_set_against_xstest(monkeypatch):
    rass_eval = load("rass_eval", monkeypatch)
    data = {
        "hardness": {
            "RASS selected": {"n": 40, "score": 30 / 40, "substring": 20 / 40},
            "XSTest-safe": {"n": 40, "score": 10 / 40, "substring": 18 / 40},
        },
        "benign": {
            "selection judge, band candidates": 0.5,
            "independent probe judge, RASS set": 1.0,
        },
        "n_band": 60, "n_selected": 40,
        "by_generator": [{"generator": "steer, coef 0", "n": 10, "median_margin": 0.1,
                          "in_band": 0.3, "harmful_side": 0.5, "judged_harmful": 0.2,
                          "refused": 0.9}],
    }  # fmt: skip
    hardness = "\n".join(rass_eval.hardness_lines(data))
    assert f"| RASS selected | 40 | {rate_text(30, 40)} | {rate_text(20, 40)} |" in hardness
    p_score, p_sub = fisher_exact(30, 40, 10, 40), fisher_exact(20, 40, 18, 40)
    verdicts = f"higher (Fisher p = {p_score:.2g}) | not determined (Fisher p = {p_sub:.2g})"
    assert f"| XSTest-safe | {verdicts} |" in hardness
    benign = "\n".join(rass_eval.benign_lines(data))
    assert f"| selection judge, band candidates | {rate_text(30, 60)} |" in benign
    assert f"| independent probe judge, RASS set | {rate_text(40, 40)} |" in benign
    generators = "\n".join(rass_eval.generator_lines(data))
    assert f"| steer, coef 0 | 10 | +0.10 | {rate_text(3, 10)} |" in generators


def test_attribution_table_gives_the_unrefused_share_its_interval(monkeypatch):
    attribution_eval = load("attribution_eval", monkeypatch)
    deletion = {"k": [1, 2], "n": [20, 20], "drop": [0.5, 0.7], "unrefused": [0.1, 0.35]}
    summary = {"random": {"deletion": deletion | {"auc": 0.6, "auc_se": 0.1}}}
    table = attribution_eval.table(summary, [], (1, 2))
    assert f"| 0.50 | 0.70 | 0.60 ± 0.10 | – | {rate_text(7, 20)} | – |" in table
