"""Steps 5–6 of the method: which tokens trigger refusal, and which words are triggers rather
than harmful cues (the trigger lexicon and the sanitized D_b)."""

from __future__ import annotations

from typing import Any

from refusal_lens.attribution.methods import Attributions, attribute
from refusal_lens.attribution.views import attribution_heatmap
from refusal_lens.evaluation import EvalResult
from refusal_lens.pipeline.context import StageContext
from refusal_lens.pipeline.records import HARM_JUDGE_DIR, MASKS_DIR, SANITIZED_DIR
from refusal_lens.pipeline.registry import DIRECTION, EVALUATE
from refusal_lens.pipeline.sections import SIGN, figure, table, verdicts
from refusal_lens.pipeline.settings import harmful_queries
from refusal_lens.plots import pyplot
from refusal_lens.residual_direction import Direction
from refusal_lens.triggers.harm import fit_harm_judge
from refusal_lens.triggers.masks import trigger_masks
from refusal_lens.triggers.sanitize import sanitize
from refusal_lens.triggers.views import plot_lexicon


def over_refused(evaluation: EvalResult, n: int) -> list[dict[str, Any]]:
    """The ``n`` benign test prompts the model refuses most (refused by either judge, highest
    refusal score first; the highest-scored benign prompts when none is refused)."""
    benign = [r for r in evaluation.prompts if r["kind"] == "benign"]
    refused = [r for r in benign if any(r["refused"].values())] or benign
    return sorted(refused, key=lambda r: -r.get("score", 0.0))[:n]


def attribution(ctx: StageContext) -> None:
    """5. Per-token attribution of the most over-refused benign prompts, with the run's
    method, and the projection of every token on r at every layer (the heat map)."""
    c, model, out = ctx.config, ctx.model(), ctx.out
    evaluation = EvalResult.load(ctx.input(EVALUATE) / "model")
    rows = over_refused(evaluation, c.attribution.n)
    texts = [r["text"] for r in rows]
    r = Direction.load(ctx.input(DIRECTION))
    config, projected = ctx.settings["method"], ctx.settings["projection"]
    method = attribute(model, texts, config)
    method.save(out / config.method)
    projection = attribute(model, texts[:1], projected, direction=r)
    projection.save(out / projected.method)
    pyplot().close(attribution_heatmap(projection[0], path=out / "projection.png"))
    ctx.write_section(
        text=[
            f"The {len(texts)} benign test prompts the model refuses most, attributed with "
            f"{config.method}: each token's effect on the refusal score (the "
            "log-odds of a refusal-start token at the first answer position).",
        ],
        figures=[figure("projection.png", f"Projection on r per layer and token: {texts[0]!r}")],
        tokens=token_views(method, rows),
    )


def token_views(attributions: Attributions, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's token views: tokens, scores on one symmetric scale, both verdicts."""
    items = []
    for a, row in zip(attributions, rows, strict=True):
        scores = [] if a.scores is None else [round(float(v), 4) for v in a.scores]
        items.append(
            {
                "prompt": a.prompt,
                "tokens": list(a.tokens),
                "scores": scores,
                "refusal_score": round(a.refusal_score, 4),
                "answer": row.get("completion", ""),
                "verdicts": verdicts(row),
                "note": a.note,
            }
        )
    scale = max((abs(v) for item in items for v in item["scores"]), default=1.0) or 1.0
    return {"method": attributions.config.method, "scale": scale, "sign": SIGN, "items": items}


def triggers(ctx: StageContext) -> None:
    """6. A harm judge (a probe on the base model, fitted on AdvBench rows against harmless
    and borderline prompts, none of them test prompts), trigger masks of D_h, the lexicon and
    the sanitized D_b."""
    c, model, base, out, settings = ctx.config, ctx.model(), ctx.base(), ctx.out, ctx.settings
    fit_harmful = ctx.unseen("advbench").sample(c.triggers.n_judge, c.seed)
    benign = ctx.unseen("harmless") + ctx.unseen("borderline")
    fit_benign = benign.sample(c.triggers.n_judge, c.seed)
    judge = fit_harm_judge(base, fit_harmful, fit_benign, settings["harm_judge"])
    judge.save(out / HARM_JUDGE_DIR)
    queries = harmful_queries(c.triggers.n_masks)
    masks = trigger_masks(model, queries, base, judge, settings["masks"])
    masks.save(out / MASKS_DIR)
    categories = [p.category for p in queries]
    data = sanitize(base, masks.masks, judge, settings["sanitize"], categories=categories)
    data.save(out / SANITIZED_DIR)
    pyplot().close(plot_lexicon(masks.lexicon, out / "lexicon.png", top=20))
    lexicon = [
        [e.word, e.kind, f"{e.carrier_effect:+.2f}", str(e.n_requests)] for e in masks.lexicon[:15]
    ]
    examples = [[i.original, i.text, f"{i.p_harmful:.2f}"] for i in data.kept[:5]]
    ctx.write_section(
        text=[
            f"{len(queries)} harmful queries; {sum(m.refused for m in masks.masks)} "
            f"refused by the model; {len(data.kept)} sanitized rewrites kept as D_b (judged "
            f"benign by the harm judge and answered by the base model).",
        ],
        tables=[
            table(
                "Trigger lexicon (top 15)", ["word", "kind", "carrier effect", "requests"], lexicon
            ),
            table("Sanitized D_b (first 5)", ["original", "sanitized", "p(harmful)"], examples),
            table(
                "Dropped by the harm re-check (cue words: phishing, malware, intrusion, "
                "credential theft), though the harm judge's probe called them benign",
                ["sanitized", "p(harmful)", "why"],
                [
                    [d["text"], f"{d['p_harmful']:.2f}", d["reason"]]
                    for d in data.dropped_by_harm_check
                ],
                "none" if not data.dropped_by_harm_check else "",
            ),
        ],
        figures=[figure("lexicon.png", "Trigger lexicon: carrier effect by word and kind")],
    )
