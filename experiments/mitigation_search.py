"""Mitigation by search on both bundled models: the held-out comparison, the verdict against
Wang et al.'s hand-set λ and the cost, read from the run folders that ``mitigate`` wrote.

    refusal-lens mitigate smollm2-135m --quick --out runs/mitigate/smollm2-135m
    refusal-lens mitigate smollm2-135m --quick --search.kinds ablate \\
        --out runs/mitigate/smollm2-ablate
    refusal-lens mitigate qwen2.5-coder-0.5b --quick --out runs/mitigate/qwen2.5-coder-0.5b
    python experiments/mitigation_search.py [--runs runs/mitigate/smollm2-135m ...] [--out figures]

Nothing is recomputed: per run folder the script reads ``10-search/search.json`` (the
held-out results of every condition, the searches' trials, the chosen edit and its export)
and ``run.json`` (the settings, stage times, hardware and library versions). Writes
``OUT/mitigation_search.{md,json}`` and copies each front to
``OUT/mitigation_front_<run folder>.png``. With ``--llm-judge SPEC`` (default
qwen2.5-coder-0.5b; ``none`` to skip) a third judge reads the answers the held-out evaluation
saved (``10-search/heldout/NN/evaluation_prompts.jsonl``): the one computation made here.
Run folders do not outlive the machine that made them: ``--keep-absent`` keeps, for a run
folder no longer on disk, its summary from the ``OUT/mitigation_search.json`` written before;
``--reuse RUN ...`` keeps it for run folders still on disk that did not change since (no
judging again: the LLM judge reads about 1,000 answers per run in 15–20 min on 2 cores).
``--smoke``: a synthetic ``search.json`` (``tests/search_fixture.py``), judged by the tiny
random model, in a new temporary folder (see ``common.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

from common import (
    ROOT,
    add_smoke_flag,
    load_by_path,
    parse,
    project_path,
    smoke_model,
    write_text,
)

from refusal_lens.artifacts import write_json
from refusal_lens.evaluation import refused_share
from refusal_lens.mitigation.views import LOOK_ALIKE_SETS, WANG_PREFIX, heldout_point, verdict
from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.stats import compare, mcnemar, rate_text
from refusal_lens.verdicts import REFUSED, degeneration

DEFAULT_RUNS = [
    Path("runs/mitigate/smollm2-135m"),
    Path("runs/mitigate/smollm2-ablate"),
    Path("runs/mitigate/qwen2.5-coder-0.5b"),
]
JUDGES = ("substring", "score")
DEFAULT_JUDGE = "qwen2.5-coder-0.5b"


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def add_llm_judge(
    run: Path, record: dict[str, Any], judge: Any, labels: dict[tuple[str, str], str]
) -> None:
    """The LLM judge's verdicts on the answers the held-out evaluation saved (the substring
    judge's greedy answers, not generated again), added to ``record["heldout"]`` as the judge
    ``llm`` (RR for benign sets, ASR for harmful ones, like the others). Each distinct
    (prompt, answer) pair is judged once, across runs too: ``labels`` carries the verdicts
    from run to run (two runs of one model share the unedited model's and the fixed recipes'
    answers)."""
    from refusal_lens.llm_judge import classify
    from refusal_lens.verdicts import degeneration, shares

    before = len(labels)
    for label, folder in record["heldout_folders"].items():
        rows = read_rows(run / FOLDERS["search"] / folder / "evaluation_prompts.jsonl")
        pairs = [(r["text"], r.get("completion", "")) for r in rows]
        todo = sorted({p for p in pairs if p not in labels})
        if todo:
            found = classify(
                judge,
                [p[0] for p in todo],
                [p[1] for p in todo],
                batch_size=8,
                show_progress=True,
            )
            labels.update(zip(todo, found, strict=True))
        sets = record["heldout"][label]["sets"]
        for name, v in sets.items():
            mine = [p for p, r in zip(pairs, rows, strict=True) if r["set"] == name]
            # the degeneration detector first, as every text judge (refusal_lens.verdicts)
            counts = shares(["degenerate" if degeneration(p[1]) else labels[p] for p in mine])
            key = "refused" if v["kind"] == "benign" else "complies"
            v["llm"] = counts[key] / max(counts["n"], 1)
            v.setdefault("counts", {})["llm"] = counts
    record["llm_judge"] = {"model": judge.spec, "pairs_judged": len(labels) - before}


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def pooled(sets: dict[str, Any], names: list[str], judge: str) -> str:
    """The refusal share of ``names`` pooled, with its Wilson interval where counts exist."""
    rows = [sets[n] for n in names if n in sets]
    if not rows:
        return "–"
    if all(judge in r.get("counts", {}) for r in rows):
        return rate_text(
            sum(r["counts"][judge]["refused"] for r in rows), sum(r["n"] for r in rows)
        )
    return pct(mean(refused_share(r, judge) for r in rows))


def prompt_verdicts(rows: list[dict], judge: str, labels: dict) -> list[str]:
    """Each saved answer's verdict by ``judge`` (the LLM judge's from ``labels``)."""
    if judge == "llm":
        return [
            "degenerate" if degeneration(r.get("completion", "")) else
            labels[(r["text"], r.get("completion", ""))]
            for r in rows
        ]  # fmt: skip
    return [
        r["verdict"][judge] if "verdict" in r else ("refuses" if r["refused"][judge] else "")
        for r in rows
    ]


def paired_tests(run: Path, record: dict, judges: tuple[str, ...], labels: dict) -> dict:
    """Exact McNemar tests of the chosen winner against no edit and each Wang λ on the same
    held-out prompts: look-alikes refused and harmful refused, per judge."""
    chosen = f"search: {record['chosen']['search']}"
    folders = record["heldout_folders"]
    others = [k for k in folders if k == "no edit" or k.startswith(WANG_PREFIX)]
    rows = {k: read_rows(run / FOLDERS["search"] / folders[k] / "evaluation_prompts.jsonl")
            for k in [chosen, *others]}  # fmt: skip
    groups = {
        "look-alikes": [i for i, r in enumerate(rows[chosen]) if r["set"] in LOOK_ALIKE_SETS],
        "harmful": [i for i, r in enumerate(rows[chosen]) if r["kind"] == "harmful"],
    }
    out: dict = {}
    for judge in judges:
        flags = {k: [v in REFUSED for v in prompt_verdicts(r, judge, labels)]
                 for k, r in rows.items()}  # fmt: skip
        for other in others:
            if [r["text"] for r in rows[other]] != [r["text"] for r in rows[chosen]]:
                continue
            for group, idx in groups.items():
                a, b = [flags[chosen][i] for i in idx], [flags[other][i] for i in idx]
                test = mcnemar(a, b)
                out.setdefault(judge, {}).setdefault(other, {})[group] = {
                    "p": test["p"], "n": len(a), "chosen": sum(a), "other": sum(b),
                    "verdict": compare(a, b),
                }  # fmt: skip
    return out


def tests_text(tests: dict[str, Any]) -> str:
    """One sentence per group: the chosen winner against each condition."""
    if not tests:
        return ""
    parts = []
    for group in ("look-alikes", "harmful"):
        cells = [
            f"{other}: {t[group]['verdict']} ({t[group]['chosen']} vs {t[group]['other']} of "
            f"{t[group]['n']}, p = {t[group]['p']:.2g})"
            for other, t in tests.items()
        ]
        parts.append(f"{group} refused, chosen winner against " + "; ".join(cells))
    return "Paired tests (exact McNemar): " + ". ".join(parts) + "."


def heldout_table(record: dict[str, Any], judge: str) -> list[str]:
    """Markdown: per condition, the look-alike RR, plain Alpaca RR and harmful refusal, each
    with its 95 % Wilson interval (pooled over the sets of a column)."""
    first = next(iter(record["heldout"].values()))["sets"]
    harmful = [s for s, v in first.items() if v["kind"] == "harmful"]
    head = ["condition", "look-alikes refused", "Alpaca refused", "harmful refused"]
    head += [f"{s} refused" for s in harmful]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, r in record["heldout"].items():
        sets = r["sets"]
        cells = [pooled(sets, list(LOOK_ALIKE_SETS), judge), pooled(sets, ["Alpaca"], judge)]
        cells += [pooled(sets, harmful, judge)]
        cells += [pooled(sets, [s], judge) for s in harmful]
        mark = " (chosen)" if label == f"search: {record['chosen']['search']}" else ""
        lines.append(f"| {label}{mark} | " + " | ".join(cells) + " |")
    return lines


def spread(record: dict[str, Any], judge: str) -> dict[str, str]:
    """Mean ± sd over the over-refusal seeds' winners on the held-out prompts."""
    points = [
        heldout_point(r["sets"], judge)
        for label, r in record["heldout"].items()
        if label.startswith("search: seed")
    ]
    return {
        name: f"{100 * mean(v):.0f} ± {100 * pstdev(v):.0f}%"
        for name, v in (
            ("look-alikes", [p[0] for p in points]),
            ("harmful", [p[1] for p in points]),
        )
    }


def summary(
    run: Path, judge: Any = None, labels: dict[tuple[str, str], str] | None = None
) -> dict[str, Any]:
    """What the docs show for one run folder (with the LLM judge when ``judge`` is a
    model; ``labels``: its verdicts so far, see :func:`add_llm_judge`)."""
    record = json.loads((run / FOLDERS["search"] / "search.json").read_text(encoding="utf-8"))
    judges = JUDGES
    labels = {} if labels is None else labels
    if judge is not None:
        add_llm_judge(run, record, judge, labels)
        judges = (*JUDGES, "llm")
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    stages = {s["name"]: s for s in meta["stages"]}
    searches = record["searches"]
    return {
        "run": str(run),
        "model": meta["model"],
        "config": summary_config(meta["config"]),
        "hardware": meta["hardware"],
        "versions": meta["versions"],
        "search_seconds": stages.get(FOLDERS["search"], {}).get("seconds"),
        "run_seconds": meta.get("seconds"),
        "stage_seconds": {name: s.get("seconds") for name, s in stages.items()},
        "trials": {n: s["trials"] for n, s in searches.items()},
        "feasible": {n: s["feasible"] for n, s in searches.items()},
        "seconds_per_trial": {n: s["seconds_per_trial"] for n, s in searches.items()},
        "winners": {n: s["winner"]["label"] for n, s in searches.items()},
        "binding": {n: s["binding"] for n, s in searches.items() if s["binding"]},
        "chosen": record["chosen"]["label"],
        "export": record["export"],
        "validation": record["validation"],
        "unedited_validation": record["unedited"],
        "judges": judges,
        "llm_judge": record.get("llm_judge"),
        "verdict": {j: verdict(record["heldout"], j) for j in judges},
        "spread": {j: spread(record, j) for j in judges},
        "tables": {j: heldout_table(record, j) for j in judges},
        "paired_tests": paired_tests(run, record, judges, labels),
    }


def is_run(run: Path) -> bool:
    return (run / FOLDERS["search"] / "search.json").is_file()


def kept(run: Path, out: Path, keep_absent: bool) -> dict[str, Any]:
    """For a run folder no longer on disk: with ``keep_absent``, the summary of ``run`` that an
    earlier call wrote to ``OUT/mitigation_search.json``, marked ``kept`` (its tables as they
    were, with the judges it had then); otherwise, or with no such summary, a clear error."""
    path = out / "mitigation_search.json"
    earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    found = [s for s in earlier if s["run"] == str(run)]
    if keep_absent and found:
        return {**found[0], "kept": "reused" if is_run(run) else True}
    hint = f"{path} has no summary of it" if keep_absent else "--keep-absent keeps an earlier one"
    raise SystemExit(
        f"{run} holds no 10-search/search.json ({hint}): run "
        f"`refusal-lens mitigate ... --out {run}` first."
    )


KEYS = ("model", "quick", "seed", "max_new_tokens")


def summary_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run settings a summary keeps, in the flat form of the kept earlier summaries
    (``search_kinds``; the run folder nests them: ``search.kinds``)."""
    search = dict(config["search"])
    flat = {k: config[k] for k in KEYS} | {"n_eval": config["evaluate"]["n"]}
    flat |= {"harmful_drop": search.pop("harmful_drop"), "kl_max": search.pop("kl_max")}
    return flat | {f"search_{k}": v for k, v in search.items()}


def options(config: dict[str, Any]) -> str:
    """The options of ``mitigate`` a run was given beyond ``--quick``, for its heading."""
    from refusal_lens.pipeline import RunConfig

    default, given = RunConfig().search, []
    kinds = tuple(config.get("search_kinds", default.kinds))
    if kinds != default.kinds:
        given.append(f"--search.kinds {','.join(kinds)}")
    if (kl := config.get("kl_max", default.kl_max)) != default.kl_max:
        given.append(f"--search.kl-max {kl:g}")
    return f" (`{' '.join(given)}`)" if given else ""


def markdown(summaries: list[dict[str, Any]]) -> str:
    parts = []
    for s in summaries:
        cost = ", ".join(f"{n}: {t} trials, {s['seconds_per_trial'][n]:.1f} s each"
                         for n, t in s["trials"].items())  # fmt: skip
        minutes = (s["search_seconds"] or 0) / 60
        parts.append(f"### {s['model']}{options(s['config'])}\n")
        if s.get("kept") == "reused":
            parts.append(
                f"*Kept from the earlier figures (`--reuse`): `{s['run']}` did not change "
                "since they were made, so its answers were not judged again.*\n"
            )
        elif s.get("kept"):
            parts.append(
                f"*Kept from the earlier figures: `{s['run']}` was not on disk when these "
                "tables were made, so they show the judges it had then.*\n"
            )
        why = str(s["export"]["why"]).rstrip(".")
        weights = f"`{s['export']['model']}`" if s["export"]["model"] else f"none: {why}"
        judged = s["config"].get("search_judge", "score")  # runs before the key: score
        how = {"score": "the one-forward score judge (not valid under edits; see the verdicts)",
               "substring": f"generation ({s['config'].get('search_tokens', 24)} tokens), the "
               "degeneration detector and the refusal phrases"}.get(judged, judged)  # fmt: skip
        parts.append(f"Trials judged by {how}.\n")
        parts.append(f"Chosen edit: **{s['chosen']}**. Exported weights: {weights}.\n")
        for judge in s["judges"]:
            name = judge
            if judge == "llm":
                name = f"LLM judge ({s['llm_judge']['model']}, reading the same answers)"
            parts.append(f"**Held-out test prompts, {name}**\n")
            parts += [*s["tables"][judge], ""]
            spread = s["spread"][judge]
            parts.append(
                f"Seeds' winners (mean ± sd): look-alikes refused {spread['look-alikes']}, "
                f"harmful refused {spread['harmful']}. {s['verdict'][judge]['text']}\n"
            )
            if text := tests_text(s.get("paired_tests", {}).get(judge, {})):
                parts.append(text + "\n")
        parts.append(
            f"Cost: {cost}; the search step took {minutes:.1f} min, the whole `mitigate` "
            f"{(s['run_seconds'] or 0) / 60:.1f} min, on {s['hardware']}. "
            f"Validation prompts: {s['validation']}.\n"
        )
        if s["binding"]:
            parts.append(f"Constraints not met: {s['binding']}.\n")
    versions = ", ".join(f"{k} {v}" for k, v in summaries[0]["versions"].items())
    parts.append(
        f"Library versions: {versions}. Made by `python experiments/mitigation_search.py`."
    )
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=project_path, nargs="+", default=DEFAULT_RUNS)
    p.add_argument("--out", type=project_path, default=Path("figures"))
    p.add_argument(
        "--llm-judge", default=DEFAULT_JUDGE, help="judge model spec for a third judge, or none"
    )
    p.add_argument(
        "--keep-absent",
        action="store_true",
        help="for a run folder no longer on disk, keep its summary from OUT/mitigation_search.json",
    )
    p.add_argument(
        "--reuse",
        type=project_path,
        nargs="*",
        default=[],
        help="run folders whose summary in OUT/mitigation_search.json is kept though on disk",
    )
    add_smoke_flag(p)
    args = parse(p, argv)
    out = Path(args.out)
    if args.smoke:
        fixture = load_by_path("search_fixture", ROOT / "tests" / "search_fixture.py")
        args.runs = [fixture.build_synthetic_search(out / "synthetic")]
        args.llm_judge = smoke_model() if args.llm_judge == DEFAULT_JUDGE else args.llm_judge
    judge = None
    if args.llm_judge.lower() != "none":
        from refusal_lens.models import load_model

        judge = load_model(args.llm_judge)
    labels: dict[tuple[str, str], str] = {}
    summaries = [
        summary(Path(run), judge, labels)
        if is_run(Path(run)) and Path(run) not in set(map(Path, args.reuse)) else
        kept(Path(run), out, args.keep_absent or Path(run) in set(map(Path, args.reuse)))
        for run in args.runs
    ]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        front = Path(run) / FOLDERS["search"] / "front.png"
        if front.is_file():
            shutil.copyfile(front, out / f"mitigation_front_{Path(run).name}.png")
    write_json(out / "mitigation_search.json", summaries)
    write_text(out / "mitigation_search.md", markdown(summaries))
    print(f"wrote {out / 'mitigation_search.md'}")


if __name__ == "__main__":
    main()
