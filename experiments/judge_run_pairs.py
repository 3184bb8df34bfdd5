"""Answers from finished runs for the judge validation: re-aligned organisms and search winners.

``judge_conditions.py`` adds answers under direction edits; the two other kinds of model
whose answers the judges read are made by the pipeline itself: the organisms re-aligned with a
trigger-aware D_b (step 9, ``09-mitigations/<D_b>/``) and the mitigation search's winners
(step 10, ``10-search/heldout/NN``, the conditions whose label starts with ``search``). Their
held-out evaluation already saved each answer with the refusal score under that model or edit
(``evaluation_prompts.jsonl``), so nothing is generated here: per condition a seeded sample
of ``--n`` answers, half from benign sets and half from harmful ones, is appended to
``experiments/data/judge_pairs.jsonl`` (to be labelled by hand like the others) and their
scores to ``judge_scores.jsonl``.

    python experiments/judge_run_pairs.py RUN=NAME [RUN=NAME ...] [--n 40]
    python experiments/judge_run_pairs.py runs/smollm2-135m=smollm2-organism \\
        runs/mitigate/smollm2-135m=smollm2-organism runs/mitigate/qwen2.5-coder-0.5b

``NAME`` is the studied model's name in the pairs file (``smollm2-organism``,
``qwen2.5-coder-0.5b``; default the run folder's name). Ids are
``{NAME}/{condition slug}/{set}/NN``; conditions are ``realign: <D_b>`` and ``search: …``
(``judge_agreement.group_of`` files them under re-aligned and search). Lines are only
appended; a pair whose id is in the file already is skipped. The answers are as long as the
run generated (``max_new_tokens``, 32 by default), where the direction-edit pairs have 64.
``--smoke``: a synthetic run folder (one re-aligned organism, one search winner, 6 answers
each), 4 pairs per condition, appended twice into files in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from pathlib import Path

from common import add_smoke_flag, parse, project_path
from judge_agreement import PAIRS, read_jsonl
from judge_conditions import SCORES

from refusal_lens.pipeline.registry import FOLDERS

REALIGNED = ("sanitized", "rass")  # 09-mitigations' re-aligned D_b folders


def arguments() -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("runs", nargs="*", help="RUN[=NAME]: a run folder and the model's name")
    cli.add_argument("--n", type=int, default=40, help="answers per condition")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--pairs", type=project_path, default=PAIRS)
    cli.add_argument("--scores", type=project_path, default=SCORES)
    cli.add_argument("--out", type=project_path, default=None, help="--smoke's folder")
    add_smoke_flag(cli)
    args = parse(cli, smoke={"n": 4})
    if args.smoke:
        args.runs = [f"{synthetic_run(args.out / 'run')}=tiny"]
        args.pairs, args.scores = args.out / PAIRS.name, args.out / SCORES.name
    elif not args.runs:
        cli.error("give at least one run folder")
    return args


def synthetic_run(run: Path) -> Path:
    """A run folder with one re-aligned organism's and one search winner's answers."""
    rows = [
        {"set": s, "kind": k, "text": f"{s} prompt {i}", "completion": f"answer {i}", "score": i}
        for i in range(3)
        for s, k in (("borderline", "benign"), ("AdvBench", "harmful"))
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    for folder in (f"{FOLDERS['mitigations']}/sanitized", f"{FOLDERS['search']}/heldout/03"):
        (run / folder).mkdir(parents=True, exist_ok=True)
        (run / folder / "evaluation_prompts.jsonl").write_text(text)
    folders = {"no edit": "heldout/00", "search: seed 0 (chosen)": "heldout/03"}
    (run / FOLDERS["search"] / "search.json").write_text(json.dumps({"heldout_folders": folders}))
    return run


def conditions(run: Path) -> dict[str, Path]:
    """condition -> its answers file, for the run's re-aligned organisms and search winners."""
    out = {}
    for name in REALIGNED:
        path = run / FOLDERS["mitigations"] / name / "evaluation_prompts.jsonl"
        if path.is_file():
            out[f"realign: {name} D_b"] = path
    search = run / FOLDERS["search"] / "search.json"
    if search.is_file():
        folders = json.loads(search.read_text())["heldout_folders"]
        for label, folder in folders.items():
            if label.startswith("search"):
                out[label] = run / FOLDERS["search"] / folder / "evaluation_prompts.jsonl"
    return out


def slug(condition: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", condition.lower()).strip("-")


def sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` rows, half benign and half harmful (as many as there are), in a seeded order."""
    rng = random.Random(seed)
    benign = [r for r in rows if r["kind"] == "benign"]
    harmful = [r for r in rows if r["kind"] != "benign"]
    rng.shuffle(benign)
    rng.shuffle(harmful)
    k = min(n // 2, len(benign))
    return benign[:k] + harmful[: n - k]


def pairs_of(run: Path, name: str, spec: str, n: int, seed: int) -> list[tuple[dict, dict]]:
    """(pair, score line) for every sampled answer of the run's conditions."""
    out = []
    for i, (condition, path) in enumerate(conditions(run).items()):
        counts: dict[str, int] = {}
        for row in sample(read_jsonl(path), n, seed + i):
            counts[row["set"]] = counts.get(row["set"], 0) + 1
            pid = f"{name}/{slug(condition)}/{row['set']}/{counts[row['set']]:02d}"
            pair = {
                "id": pid, "model": name, "spec": spec, "source": row["set"],
                "condition": condition, "run": str(run), "prompt": row["text"],
                "response": row["completion"],
            }  # fmt: skip
            out.append((pair, {"id": pid, "score": round(float(row["score"]), 4)}))
    return out


def append(path: Path, rows: list[dict]) -> None:
    """The file with ``rows`` added, written whole to a temporary file and renamed over it (an
    interrupted call leaves the file as it was)."""
    before = path.read_text(encoding="utf-8") if path.is_file() else ""
    added = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(before + added, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    args = arguments()
    add_pairs(args)
    if args.smoke:  # a rerun appends nothing
        add_pairs(args)


def add_pairs(args: argparse.Namespace) -> None:
    existing = read_jsonl(args.pairs) if args.pairs.is_file() else []
    known = {p["id"] for p in existing}
    specs = {p["model"]: p["spec"] for p in existing}
    new: list[tuple[dict, dict]] = []
    for item in args.runs:
        folder, _, name = item.partition("=")
        run = Path(folder)
        name = name or run.name
        found = pairs_of(run, name, specs.get(name, str(run)), args.n, args.seed)
        if not found:
            raise SystemExit(f"{run}: no re-aligned organism or search winner answers found")
        new += [(p, s) for p, s in found if p["id"] not in known]
        known |= {p["id"] for p, _ in found}
    append(args.pairs, [p for p, _ in new])
    append(args.scores, [s for _, s in new])
    by_condition: dict[str, int] = {}
    for p, _ in new:
        key = f"{p['model']} / {p['condition']}"
        by_condition[key] = by_condition.get(key, 0) + 1
    print(f"appended {len(new)} pairs to {args.pairs}: {by_condition}")


if __name__ == "__main__":
    main()
