"""Answers of *edited* models for the judge validation: pairs appended to the judge pairs file.

The hand-labelled pairs of ``judge_agreement.py`` hold only what the unedited models say. The
judges are also run on models under an edit of their refusal direction, whose answers look
different (compliance with harmful requests, loops, refusals of benign ones), so this script
adds such answers to ``experiments/data/judge_pairs.jsonl``, to be labelled by hand like the
others. Per studied model (the same two as ``judge_agreement.py``: the SmolLM2 organism, by
default the spec its pairs in the file record, and Qwen2.5-Coder-0.5B-Instruct):

1. The refusal direction r: :func:`~refusal_lens.directions.find.find_direction` on the
   shipped harmful vs harmless prompts with the pipeline's quick counts (64 train + 16
   validation prompts per class, top 8 candidates scored). Wang et al.'s w: the mean
   difference of 48 shipped borderline and 48 shipped harmless prompts (none of them r's) at
   r's layer and position (:func:`~refusal_lens.directions.false_refusal_vector` at λ = 0);
   w′ = w − λ r̂ r̂ᵀ w (:meth:`~refusal_lens.residual_direction.Direction.orthogonalize`).
2. Greedy answers (64 new tokens, :func:`~refusal_lens.generation.generate`) under each edit,
   run as forward hooks on the bridge during generation (the hooks of
   :func:`refusal_lens.interventions.ablate` and :func:`~refusal_lens.interventions.add`,
   counted to check that they fire on every generated token):

   - ``ablation``: r ablated at every layer and position (Arditi et al.);
   - ``w′ λ=1``, ``w′ λ=0.8``, ``w′ λ=0.6``: w′ ablated the same way;
   - ``addition``: r added (coefficient 1) before block ``r.layer``, at every position.

   Per condition ``--n`` (34) prompts, seeded samples (seed per condition) of the
   ``judge_agreement.SOURCES`` sets, none of them used for r or w nor, for the organism, one of
   its alignment prompts: for the ablations mostly harmful and look-alikes (10 AdvBench,
   8 XSTest-unsafe, 8 XSTest-safe, 8 borderline), for the addition benign ones (12 Alpaca,
   11 XSTest-safe, 11 borderline); another ``--n`` scales these counts.

Each pair is one line ``id``, ``model``, ``spec``, ``source``, ``condition``, ``prompt``,
``response``, with id ``{model}/{condition slug}/{source}/NN`` (slugs ``ablation``,
``wprime-1.0``, ``wprime-0.8``, ``wprime-0.6``, ``addition``). Lines are only appended; a pair
whose id is already in the file is skipped (a rerun adds nothing, and a model whose pairs are
all there is not even loaded). The older lines have no ``condition``: they are ``unedited``.

    python experiments/judge_conditions.py    # 340 pairs; 26 min on 1 CPU thread (busy 2 cores)
    python experiments/judge_conditions.py --scores   # the score judge under each edit

``--scores``: the refusal score of every edited pair's prompt at the first answer position,
under the pair's edit (the same directions again: they are deterministic), appended to
``experiments/data/judge_scores.jsonl`` (``id``, ``score``); ``judge_agreement.py`` reads the
score judge's verdict on edited pairs from there (~10 min).

``--smoke``: the tiny random model as both models, a few prompts, 8 new tokens, into
``OUT/judge_pairs.jsonl`` (see ``common.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from common import hardware, parse, parser, project_path
from judge_agreement import PAIRS, QWEN, SOURCES, pair_ids, read_jsonl, studied_models

from refusal_lens.artifacts import local_path
from refusal_lens.directions import SelectConfig, false_refusal_vector
from refusal_lens.directions.find import DirectionConfig, find_direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.evaluation import held_out, training_prompts_of
from refusal_lens.generation import generate
from refusal_lens.interventions import Hooks, addition_hooks, intervene, projection_hooks
from refusal_lens.models import ModelHandle, load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import refusal_scores

SCORES = Path("experiments/data/judge_scores.jsonl")  # from the project root

ORGANISM_NAME = "smollm2-organism"  # judge_agreement.studied_models' name for it
HARMFUL_MIX = {"advbench": 10, "xstest-unsafe": 8, "xstest-safe": 8, "borderline": 8}
BENIGN_MIX = {"alpaca": 12, "xstest-safe": 11, "borderline": 11}
LAMBDAS = (1.0, 0.8, 0.6)
ADD_COEF = 1.0
# condition -> (id slug, prompt mix, sampling seed); the edit itself: see edit_hooks
CONDITIONS = {
    "ablation": ("ablation", HARMFUL_MIX, 101),
    **{
        f"w′ λ={lam:g}": (f"wprime-{lam:.1f}", HARMFUL_MIX, 102 + i)
        for i, lam in enumerate(LAMBDAS)
    },
    "addition": ("addition", BENIGN_MIX, 105),
}


def arguments() -> argparse.Namespace:
    cli = parser(__doc__, n=34, max_new_tokens=64, batch_size=16)
    cli.add_argument("--organism", default=None, help="the SmolLM2 organism (default: see doc)")
    cli.add_argument("--other", default=QWEN, help="the second studied model")
    cli.add_argument("--pairs", type=project_path, default=PAIRS)
    cli.add_argument("--n-train", type=int, default=64, help="r: train prompts per class")
    cli.add_argument("--n-val", type=int, default=16, help="r: validation prompts per class")
    cli.add_argument("--top-k", type=int, default=8, help="r: candidates fully scored")
    cli.add_argument("--n-w", type=int, default=48, help="w: prompts per class")
    cli.add_argument("--scores", action="store_true", help="score the pairs under their edit")
    smoke = {"n": 4, "max_new_tokens": 8, "batch_size": 4, "n_train": 8, "n_val": 4}
    args = parse(cli, smoke=smoke | {"top_k": 2, "n_w": 8})
    args.scores_file = SCORES
    if args.smoke:
        args.pairs, args.scores_file = args.out / PAIRS.name, args.out / SCORES.name
    if args.organism is None and not args.smoke and args.pairs.is_file():
        specs = {p["spec"] for p in read_jsonl(args.pairs) if p["model"] == ORGANISM_NAME}
        args.organism = next(iter(sorted(specs)), None)  # the organism the pairs were made with
    return args


def scaled(mix: dict[str, int], n: int) -> dict[str, int]:
    """``mix``'s counts scaled to ``n`` in all (largest remainders), none below 1."""
    total = sum(mix.values())
    exact = {s: c * n / total for s, c in mix.items()}
    counts = {s: max(1, math.floor(x)) for s, x in exact.items()}
    rest = sorted(mix, key=lambda s: exact[s] - math.floor(exact[s]), reverse=True)
    for s in rest[: max(0, n - sum(counts.values()))]:
        counts[s] += 1
    return counts


def sample(mix: dict[str, int], seed: int, seen: list[str]) -> list[tuple[str, str]]:
    """(source, prompt text): a seeded sample of each source in ``mix``, none in ``seen``."""
    return [
        (source, text)
        for source, n in mix.items()
        for text in held_out(load_prompts(SOURCES[source]), seen, n, seed)[0].texts
    ]


def directions(
    args: argparse.Namespace, model: ModelHandle
) -> tuple[Direction, Direction, list[str]]:
    """r, w (w′ at λ = 0) and every prompt either was computed from."""
    config = DirectionConfig(
        harmful="harmful",
        harmless="harmless",
        n_train=args.n_train,
        n_val=args.n_val,
        select=SelectConfig(top_k=args.top_k),
    )
    selection = find_direction(model, config, show_progress=False)
    r, used = selection.direction, [t for ts in selection.prompts.values() for t in ts]
    borderline = held_out(load_prompts("borderline"), used, args.n_w, seed=0)[0]
    harmless = held_out(load_prompts("harmless"), used, args.n_w, seed=1)[0]
    w = false_refusal_vector(model, borderline, harmless, r, 0.0, show_progress=False)
    print(
        f"  r: layer {r.layer}, position {r.position} ({selection.message}); "
        f"cos(w, r) = {w.scores['cosine_w_r']:.3f}",
        flush=True,
    )
    return r, w, used + borderline.texts + harmless.texts


def edit_hooks(model: ModelHandle, condition: str, r: Direction, w: Direction) -> Hooks:
    """The hooks of ``interventions.ablate`` / ``interventions.add`` for ``condition``."""
    if condition == "ablation":
        return projection_hooks(model, [r])
    if condition == "addition":
        return addition_hooks(model, r, ADD_COEF)
    lam = float(condition.split("=")[1])
    return projection_hooks(model, [w.orthogonalize(r, lam)])


@contextlib.contextmanager
def counted(model: ModelHandle, hooks: Hooks) -> Iterator[Counter[str]]:
    """Run ``model`` with ``hooks`` active; yields how often each hook point fired."""
    calls: Counter[str] = Counter()

    def wrap(name: str, fn: Callable) -> Callable:
        def hook(x, *rest, **kwargs):
            calls[name] += 1
            return fn(x, *rest, **kwargs)

        return hook

    with intervene(model, [(name, wrap(name, fn)) for name, fn in hooks]):
        yield calls


def check_hooks(
    model: ModelHandle, hooks: Hooks, prompt: str, calls: Counter[str], n_batches: int
) -> None:
    """The edit was active while generating: every hook point fired on generated tokens, not
    only on the prompts (one call per forward pass, so more calls than batches); and one short
    answer with and without the edit, printed (an edit may leave an answer unchanged)."""
    least = min((calls[name] for name, _ in hooks), default=0)
    if least <= n_batches:
        raise RefusalLensError(
            f"A hook of the edit fired {least} time(s) in {n_batches} batch(es): it was not "
            "active on the generated tokens."
        )
    plain = generate(model, [prompt], 16, 1, show_progress=False)[0]
    with counted(model, hooks):
        edited = generate(model, [prompt], 16, 1, show_progress=False)[0]
    print(f"    check on {prompt[:60]!r}: unedited {plain!r} | edited {edited!r}", flush=True)
    print(
        f"    answers differ: {plain != edited}; calls per hook point: {least} "
        f"({len(hooks)} points, {n_batches} batches)",
        flush=True,
    )


def existing(path: Path) -> dict[str, str]:
    """Prompt per pair id already in the file."""
    return {p["id"]: p["prompt"] for p in read_jsonl(path)} if path.is_file() else {}


def append(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` as JSON lines (the file's lines before stay as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        raise RefusalLensError(f"{path} does not end with a newline; fix it before appending.")
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def run_model(args: argparse.Namespace, name: str, spec: str, counts: Counter[str]) -> None:
    """Every condition's missing pairs for one model, appended condition by condition."""
    have = existing(args.pairs)
    wanted = {c: sum(scaled(mix, args.n).values()) for c, (_, mix, _) in CONDITIONS.items()}
    done = {
        c: sum(i.startswith(f"{name}/{slug}/") for i in have)
        for c, (slug, _, _) in CONDITIONS.items()
    }
    if all(done[c] >= wanted[c] for c in CONDITIONS):
        print(f"{name}: all pairs already in {args.pairs}; skipped", flush=True)
        return
    start = time.time()
    print(f"{name} ({spec}):", flush=True)
    model = load_model(str(local_path(spec)), device="cpu")
    r, w, used = directions(args, model)
    seen = used + training_prompts_of(model)
    print(f"  directions: {time.time() - start:.0f} s", flush=True)
    for condition, (slug, mix, seed) in CONDITIONS.items():
        t = time.time()
        prompts = sample(scaled(mix, args.n), seed, seen)
        ids = pair_ids(f"{name}/{slug}", prompts)
        todo = [i for i, pid in enumerate(ids) if pid not in have]
        for pid, (_, text) in zip(ids, prompts, strict=True):
            if pid in have and have[pid] != text:
                raise RefusalLensError(f"{pid} in {args.pairs} has another prompt than now.")
        print(f"  {condition}: {len(todo)} new, {len(ids) - len(todo)} kept", flush=True)
        if not todo:
            continue
        texts = [prompts[i][1] for i in todo]
        hooks = edit_hooks(model, condition, r, w)
        with counted(model, hooks) as calls:
            answers = generate(
                model, texts, args.max_new_tokens, args.batch_size, show_progress=False
            )
        check_hooks(model, hooks, texts[0], calls, math.ceil(len(texts) / args.batch_size))
        rows = [
            {"id": ids[i], "model": name, "spec": spec, "source": prompts[i][0]}
            | {"condition": condition, "prompt": prompts[i][1], "response": answer}
            for i, answer in zip(todo, answers, strict=True)
        ]
        append(args.pairs, rows)
        counts[condition] += len(rows)
        print(f"    {time.time() - t:.0f} s", flush=True)
    print(f"  {name}: {time.time() - start:.0f} s", flush=True)


def score_model(args: argparse.Namespace, name: str, spec: str) -> int:
    """The refusal score under its edit of every edited pair of one model not yet scored."""
    done = {r["id"] for r in read_jsonl(args.scores_file)} if args.scores_file.is_file() else set()
    pairs = [
        p
        for p in read_jsonl(args.pairs)
        if p["model"] == name and p.get("condition", "unedited") != "unedited"
    ]
    todo = [p for p in pairs if p["id"] not in done]
    if not todo:
        return 0
    model = load_model(str(local_path(spec)), device="cpu")
    r, w, _ = directions(args, model)
    rows = []
    for condition in CONDITIONS:
        chosen = [p for p in todo if p["condition"] == condition]
        if not chosen:
            continue
        with intervene(model, edit_hooks(model, condition, r, w)):
            scores = refusal_scores(model, [p["prompt"] for p in chosen], args.batch_size, False)
        scored = zip(chosen, scores.tolist(), strict=True)
        rows += [{"id": p["id"], "score": round(s, 4)} for p, s in scored]
    append(args.scores_file, rows)
    return len(rows)


def main() -> None:
    args = arguments()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.time()
    counts: Counter[str] = Counter()
    if args.scores:
        scored = sum(score_model(args, n, s) for n, s in studied_models(args).items())
        print(f"Scored {scored} edited pairs into {args.scores_file} on {hardware()}.")
        return
    for name, spec in studied_models(args).items():
        run_model(args, name, spec, counts)
    added = ", ".join(f"{c} {counts[c]}" for c in CONDITIONS)
    print(
        f"Appended {sum(counts.values())} pairs to {args.pairs} ({added}) in "
        f"{(time.time() - start) / 60:.1f} min on {hardware()}."
    )


if __name__ == "__main__":
    main()
