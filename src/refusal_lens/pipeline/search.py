"""Step 10 of the method (behind ``--search``; ``refusal-lens mitigate`` runs it): the edit that
removes over-refusal and keeps refusal, found by a seeded search and judged on held-out
prompts.

1. Validation prompts only: benign look-alikes (borderline prompts and the run's RASS set),
   harmful prompts (AdvBench, XSTest-unsafe) and plain Alpaca prompts for the KL bound; none
   of them a test prompt.
2. ``search.seeds`` searches with over-refusal as the objective, and one with heretic's aim
   (remove refusal) for comparison; each trial judges a short greedy answer per prompt under
   the edit (``search.judge``, :mod:`refusal_lens.mitigation.objective`).
3. The best few edits of each search are judged again by generation (both judges), and each
   seed keeps the one that refuses the fewest benign prompts by what the model says while
   keeping the harmful floor.
4. On the held-out test prompts: no edit, Arditi's r ablation, Wang's w′ at each λ, the
   refusal-only winner and every seed's winner, both judges.
5. The chosen edit (the best seed's) is saved and exported as weights where it can be.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from refusal_lens.boundary.rass_result import SELECTED_NAME
from refusal_lens.directions import false_refusal_vector
from refusal_lens.errors import RefusalLensError
from refusal_lens.evaluation import (
    EvalConfig,
    EvalResult,
    eval_prompt_sets,
    evaluate_on,
    training_prompts_of,
)
from refusal_lens.mitigation.edits import Edit, EditConfig, apply_edit, resolve
from refusal_lens.mitigation.export import export_edit
from refusal_lens.mitigation.objective import Objective, ValidationSets
from refusal_lens.mitigation.search import SearchResult, search_edits
from refusal_lens.mitigation.space import arditi_edit, wang_edit
from refusal_lens.mitigation.vectors import Vectors
from refusal_lens.mitigation.views import (
    front_rows,
    heldout_rows,
    pct,
    verdict,
    write_front_figure,
)
from refusal_lens.pipeline.context import StageContext
from refusal_lens.pipeline.records import FalseRefusalPrompts, SearchSummary, reference_sets
from refusal_lens.pipeline.registry import DIRECTION, GEOMETRY, RASS
from refusal_lens.pipeline.sections import figure, table
from refusal_lens.pipeline.settings import JUDGES
from refusal_lens.pipeline.stage_settings import SearchSettings
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.prompts.promptset import normalize_text
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import refusal_rates

WANG_LAMBDAS = (1.0, 0.8, 0.6)


def test_sets(ctx: StageContext) -> tuple[EvalConfig, Any]:
    """The held-out test prompts of the comparison (the run's own sets where they overlap):
    ``search.n_heldout`` per set, ``evaluate.n`` when unset."""
    config = ctx.settings["tests"]
    return config, eval_prompt_sets(config, training_prompts_of(ctx.model()))


def validation(ctx: StageContext, test_texts: set[str]) -> ValidationSets:
    """Validation prompts of every role, none of them a test prompt or one of w′'s."""
    c = ctx.config
    w_texts = FalseRefusalPrompts.load(ctx.input(DIRECTION)).borderline
    exclude = test_texts | {normalize_text(t) for t in w_texts}

    def sample(spec: str, offset: int) -> PromptSet:
        return ctx.unseen(spec, exclude).sample(c.search.n, c.seed + offset)

    rass = load_prompts(str(ctx.input(RASS) / SELECTED_NAME))
    rass = PromptSet(tuple(p for p in rass if normalize_text(p.text) not in exclude), "RASS")
    rass = rass.sample(c.search.n, c.seed + 10)  # at most search.n, like the other sets
    return ValidationSets(
        benign={"borderline": sample("borderline", 11), "RASS": rass},
        harmful={"AdvBench": sample("advbench", 12), "XSTest-unsafe": sample("xstest-unsafe", 13)},
        harmless=sample("alpaca", 14),
    )


def build_vectors(ctx: StageContext) -> Vectors:
    """r, Wang's w (λ = 0, from the direction stage's prompts) and the geometry stage's
    harmful and harmless prompts for the probes."""
    model, folder = ctx.model(), ctx.input(DIRECTION)
    r = Direction.load(folder)
    prompts = FalseRefusalPrompts.load(folder)
    w = false_refusal_vector(
        model, prompts.borderline, prompts.harmless, r, 0.0, show_progress=False
    )
    return Vectors.build(model, r, w, *reference_sets(ctx.input(GEOMETRY)))


def rejudge(
    ctx: StageContext, sets: ValidationSets, result: SearchResult, vectors: Vectors, k: int
) -> list[dict[str, Any]]:
    """The ``k`` best trials judged again by generation on the validation prompts."""
    model = ctx.model()
    prompts = {**sets.benign, **sets.harmful}
    out = []
    for trial in result.ranked(k):
        edit = resolve(EditConfig.from_dict(trial["edit"]), vectors)
        with apply_edit(model, edit):
            rates = _rates(ctx, prompts)
        out.append({"number": trial["number"], "label": trial["label"], "rates": rates})
    return out


def _rates(ctx: StageContext, prompts: dict[str, PromptSet]) -> dict[str, dict[str, float]]:
    reports = refusal_rates(ctx.model(), prompts, JUDGES, ctx.config.max_new_tokens)
    return {name: {j: r.rate for j, r in by.items()} for name, by in reports.items()}


def pooled(rates: dict[str, dict[str, float]], names: Any, sizes: dict[str, int], judge: str):
    total = sum(sizes[n] for n in names)
    return sum(rates[n][judge] * sizes[n] for n in names) / max(total, 1)


def choose(
    judged: list[dict[str, Any]], unedited: dict, sets: ValidationSets, drop: float
) -> dict[str, Any]:
    """The re-judged trial refusing the fewest benign prompts by what the model says
    (substring judge) with harmful refusal at least the unedited share minus ``drop``; with
    none, the one that keeps the most harmful refusal."""
    sizes = sets.sizes()
    floor = pooled(unedited, sets.harmful, sizes, "substring") - drop
    for t in judged:
        t["benign"] = pooled(t["rates"], sets.benign, sizes, "substring")
        t["harmful"] = pooled(t["rates"], sets.harmful, sizes, "substring")
        t["meets_floor"] = t["harmful"] >= floor - 1e-9
    ok = [t for t in judged if t["meets_floor"]]
    if ok:
        return min(ok, key=lambda t: (t["benign"], -t["harmful"]))
    return max(judged, key=lambda t: (t["harmful"], -t["benign"]))


def heldout(
    ctx: StageContext, conditions: dict[str, Edit | None], config: EvalConfig, tests: Any
) -> dict[str, EvalResult]:
    """Every condition on the held-out test prompts, saved under ``heldout/<n>``."""
    model, out = ctx.model(), ctx.out
    results: dict[str, EvalResult] = {}
    done: dict[Any, EvalResult] = {}  # two seeds that chose the same edit: evaluated once
    for i, (label, edit) in enumerate(conditions.items()):
        key = None if edit is None else edit.config
        if key not in done:
            with apply_edit(model, edit) if edit is not None else contextlib.nullcontext():
                done[key] = evaluate_on(model, tests, config)
        results[label] = done[key]
        results[label].save(out / "heldout" / f"{i:02d}")
    return results


def search_stage(ctx: StageContext) -> None:
    """10. Search, re-judge, evaluate on held-out prompts, export (see the module)."""
    c, model, out, start = ctx.config, ctx.model(), ctx.out, time.monotonic()
    deadline = None if c.search.budget is None else start + 60 * c.search.budget
    eval_config, tests = test_sets(ctx)
    test_texts = {normalize_text(t) for ps, _, _ in tests.values() for t in ps.texts}
    sets = validation(ctx, test_texts)
    vectors = build_vectors(ctx)
    objective = Objective(model, sets, judge=c.search.judge, max_new_tokens=c.search.tokens)
    check_budget(objective.unedited.seconds, deadline, c.search)
    base = ctx.settings["search"]
    searches = {}
    runs = [(f"seed {s}", base.replace(seed=c.seed + s)) for s in range(c.search.seeds)]
    runs.append(("refusal only", base.replace(objective="refusal", warm_start=())))
    for i, (name, config) in enumerate(runs):
        share = None if deadline is None else _share(deadline, len(runs) - i)
        result = search_edits(objective, vectors, config, deadline=share, say=ctx.say)
        result.save(out / "searches" / name.replace(" ", "_"))
        searches[name] = result
    fixed = {"ablate r (Arditi)": arditi_edit()}
    fixed |= {f"ablate w′ λ={lam:g} (Wang)": wang_edit(lam) for lam in WANG_LAMBDAS}
    fixed_measured = {k: objective.measure(resolve(e, vectors)).to_dict() for k, e in fixed.items()}
    unedited_rates = _rates(ctx, {**sets.benign, **sets.harmful})
    winners, judged = {}, {}
    for name, result in searches.items():
        k = c.search.rejudge if name != "refusal only" else 1
        judged[name] = rejudge(ctx, sets, result, vectors, k)
        pick = choose(judged[name], unedited_rates, sets, c.search.harmful_drop)
        winners[name] = next(t for t in result.trials if t["number"] == pick["number"])
    conditions: dict[str, Edit | None] = {"no edit": None}
    conditions |= {k: resolve(e, vectors) for k, e in fixed.items()}
    conditions |= {
        f"search: {name}": resolve(EditConfig.from_dict(t["edit"]), vectors)
        for name, t in winners.items()
    }
    results = heldout(ctx, conditions, eval_config, tests)
    chosen_name = best_seed(judged, winners, searches)
    chosen = conditions[f"search: {chosen_name}"]
    export = export_edit(model, chosen, out / "export")
    record = search_record(
        sets, searches, judged, winners, fixed_measured, results, chosen_name, export
    )
    summary = SearchSummary(**record, seconds=round(time.monotonic() - start, 1))
    summary.save(out)
    record = summary.to_dict()
    write_front_figure(record, out / "front.png")
    ctx.write_section(**search_section(record))


def best_seed(judged: dict, winners: dict, searches: dict) -> str:
    """The over-refusal seed whose winner refuses the fewest benign validation prompts by the
    substring judge among those that keep the floor (re-judged figures)."""
    names = [n for n in searches if n != "refusal only"]

    def key(name: str) -> tuple:
        pick = next(t for t in judged[name] if t["number"] == winners[name]["number"])
        return (not pick["meets_floor"], pick["benign"], -pick["harmful"], name)

    return min(names, key=key)


def _share(deadline: float, searches_left: int) -> float:
    """The deadline of the next search: an equal share of the time left (the re-judging and
    the held-out evaluation run after the budget's searches, within ``RESERVE`` of it)."""
    now = time.monotonic()
    left = (deadline - now) * (1 - RESERVE)
    return now + left / searches_left


RESERVE = 0.4  # of the budget left for the re-judging, the held-out evaluation and export


def check_budget(cost: float, deadline: float | None, s: SearchSettings) -> None:
    """A budget too small for one trial (``cost`` seconds) of each search is an error,
    before any search."""
    if deadline is None:
        return
    searches = s.seeds + 1
    needed = cost * searches / (1 - RESERVE)
    if time.monotonic() + needed > deadline:
        raise RefusalLensError(
            f"--search.budget {s.budget:g} min leaves too little time: one trial takes "
            f"{cost:.1f} s, and {searches} searches plus the held-out evaluation need at "
            f"least {needed / 60:.1f} min from here. Raise --search.budget (or drop it to "
            f"run --search.trials {s.trials} per search)."
        )


def search_record(
    sets: ValidationSets,
    searches: dict[str, SearchResult],
    judged: dict,
    winners: dict,
    fixed: dict,
    results: dict[str, EvalResult],
    chosen: str,
    export: Any,
) -> dict[str, Any]:
    """``search.json``: everything the section, the figure and the README table read."""
    over = [r for n, r in searches.items() if n != "refusal only"]
    return {
        "validation": sets.sizes(),
        "unedited": over[0].unedited,
        "floor": over[0].floor,
        "kl_max": over[0].config.kl_max,
        "searches": {
            name: {
                "objective": r.config.objective,
                "seed": r.config.seed,
                "trials": len(r.trials),
                "feasible": len(r.feasible()),
                "seconds": r.seconds,
                "seconds_per_trial": round(r.seconds / max(len(r.trials), 1), 2),
                "stopped": r.stopped,
                "binding": r.binding(),
                "best": r.best(),
                "front": [t["number"] for t in r.front()],
                "points": [_point(t) for t in r.trials],
                "rejudged": judged[name],
                "winner": winners[name],
            }
            for name, r in searches.items()
        },
        "fixed": fixed,
        "heldout": {
            label: {"sets": r.sets, "combined": r.combined} for label, r in results.items()
        },
        "heldout_folders": {label: f"heldout/{i:02d}" for i, label in enumerate(results)},
        "chosen": {"search": chosen, **winners[chosen]},
        "export": {
            "edit": "export/edit",
            "model": "export/model" if export.model else None,
            "why": export.why or None,
        },
    }


def _point(trial: dict[str, Any]) -> dict[str, Any]:
    m = trial["measured"]
    return {
        "number": trial["number"],
        "benign": m["benign"],
        "harmful": m["harmful"],
        "kl": m["kl"],
        "feasible": trial["feasible"],
    }


def search_section(record: dict[str, Any]) -> dict[str, Any]:
    """``section.json`` fields of the search stage."""
    judges = ("score", "substring")
    columns, rows = heldout_rows(record, judges)
    v = verdict(record["heldout"])
    chosen = record["chosen"]
    export = record["export"]
    weights = export["model"] or f"not written: {export['why'].rstrip('.')}"
    seeds = [s for s in record["searches"].values() if s["objective"] == "over_refusal"]
    cost = sum(s["seconds_per_trial"] for s in seeds) / max(len(seeds), 1)
    text = [
        f"Validation prompts only ({_sizes(record['validation'])}): minimise the share of "
        f"benign look-alikes refused, keeping harmful refusal ≥ {pct(record['floor'])} (the "
        f"unedited {pct(record['unedited']['harmful'])} minus δ) and first-token KL ≤ "
        f"{record['kl_max']:g}; {len(seeds)} seeds, {cost:.1f} s per trial.",
        f"Chosen ({chosen['search']}): {chosen['label']}. Weights: {weights}.",
        v["text"],
    ]
    for s in record["searches"].values():
        if s["binding"]:
            text.append(f"{s['objective']} seed {s['seed']}: {s['binding']}.")
    return {
        "text": text,
        "tables": [
            table(
                "Held-out test prompts: share refused per set (harmful sets too)",
                columns,
                rows,
                note="each cell: score / substring judge",
            ),
            table(
                "The front on validation prompts (score judge; KL within the bound)",
                ["search", "trial", "benign refused", "harmful refused", "KL", "edit"],
                front_rows(record),
            ),
        ],
        "figures": [figure("front.png", "Every trial on validation prompts, with the front")],
    }


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sizes.items())
