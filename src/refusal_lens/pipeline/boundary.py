"""Steps 7–8 of the method: where benign look-alikes sit against the boundary at every layer,
which layer's boundary predicts the model's refusals, and RASS's prompts near it."""

from __future__ import annotations

from typing import Any

from refusal_lens.artifacts import write_json
from refusal_lens.boundary.geometry import Geometry, boundary_geometry
from refusal_lens.boundary.rass import rass
from refusal_lens.boundary.rass_config import RASSConfig
from refusal_lens.boundary.rass_result import RASSResult
from refusal_lens.boundary.refusal_fit import BoundaryFit, boundary_fit
from refusal_lens.boundary.views import plot_rass_margins, write_geometry_figures
from refusal_lens.evaluation import EvalResult
from refusal_lens.pipeline.config import RunConfig
from refusal_lens.pipeline.context import StageContext
from refusal_lens.pipeline.records import (
    CLAIM_FILE,
    FIT_FILE,
    HARM_JUDGE_DIR,
    MASKS_DIR,
    read_fit,
    reference_sets,
)
from refusal_lens.pipeline.registry import DIRECTION, EVALUATE, GEOMETRY, TRIGGERS
from refusal_lens.pipeline.sections import figure, table
from refusal_lens.pipeline.settings import harmful_queries
from refusal_lens.plots import pyplot
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import refusal_rates
from refusal_lens.stats import fisher_exact, rate_text
from refusal_lens.triggers.harm import HarmJudge, harm_scorer
from refusal_lens.triggers.masks import LEXICON_NAME, load_lexicon

CLAIM_BASELINE = "XSTest-safe"
LOOKALIKE_JUDGE = "substring"  # the validated default judge (figures/judge_agreement.md)


def lookalikes(ctx: StageContext) -> tuple[PromptSet, list[bool]]:
    """Validation look-alikes (borderline prompts that are no test or training prompt) and
    whether the model refuses each (its answer, judged by :data:`LOOKALIKE_JUDGE`)."""
    c, model = ctx.config, ctx.model()
    prompts = ctx.unseen("borderline").sample(c.geometry.n_lookalikes, c.seed + 6)
    reports = refusal_rates(model, {"look-alikes": prompts}, (LOOKALIKE_JUDGE,), c.max_new_tokens)
    return prompts, list(reports["look-alikes"][LOOKALIKE_JUDGE].refused)


def geometry(ctx: StageContext) -> None:
    """7. The boundary at every layer: a probe per layer, where the validation look-alikes
    sit against it split by whether the model refused them, and the layer and band where
    the margin predicts refusal best (what RASS selects in)."""
    c, model, out = ctx.config, ctx.model(), ctx.out
    harmful = ctx.unseen("advbench").sample(c.geometry.n, c.seed + 5)
    harmless = ctx.unseen("harmless").sample(c.geometry.n, c.seed + 5)
    borderline, refused = lookalikes(ctx)
    r = Direction.load(ctx.input(DIRECTION))
    geo = boundary_geometry(
        model,
        harmful,
        harmless,
        borderline,
        r,
        ctx.settings["geometry"],
        refused=refused,
        residuals_out=out / "residuals",  # kept for notebooks: Residuals.load(folder / set)
    )
    geo.save(out)
    fit = boundary_fit(geo.layers, geo.margin["borderline"], geo.refused)
    write_json(out / FIT_FILE, fit.to_dict())
    write_geometry_figures(geo, out)
    ctx.write_section(
        text=geometry_text(geo, fit, sum(refused)),
        tables=[geometry_table(geo, fit)],
        figures=[
            figure("grid.png", "Prompts in each layer's 2-D view, with the boundary"),
            figure("margins.png", "Margin to the boundary per layer"),
            figure("probe_accuracy.png", "Probe accuracy per layer"),
        ],
    )


def geometry_text(geo: Geometry, fit: BoundaryFit, n_refused: int) -> list[str]:
    n = len(geo.texts["borderline"])
    return [
        f"A logistic probe per layer separates {len(geo.texts['harmful'])} harmful from "
        f"{len(geo.texts['harmless'])} harmless prompts; {n} validation look-alikes (borderline "
        f"prompts, none of them test prompts) are placed against it, split by the model's "
        f"answer ({LOOKALIKE_JUDGE} judge: refused {rate_text(n_refused, n)}). Margin: signed "
        "distance to the boundary (> 0: harmful side); AUROC: how well the margin tells "
        "refused from answered look-alikes (0.5: not at all).",
        f"RASS selects at {fit.describe()}.",
    ]


def geometry_table(geo: Geometry, fit: BoundaryFit) -> dict[str, Any]:
    """Every few layers and the chosen one: probe accuracy, medians and AUROC."""
    summary = geo.summary()
    step = max(1, len(summary) // 10)
    shown = [s for i, s in enumerate(summary) if i % step == 0 or s["layer"] == fit.layer]
    cells = [
        [f"{s['layer']}" + (" (chosen)" if s["layer"] == fit.layer else ""), *geometry_cells(s)]
        for s in shown
    ]
    columns = [
        "layer",
        "probe accuracy",
        "median margin, refused",
        "median margin, answered",
        "AUROC refused vs answered",
    ]
    return table("Validation look-alikes against the boundary", columns, cells)


def geometry_cells(row: dict[str, Any]) -> list[str]:
    """One layer of :meth:`Geometry.summary` as table cells (– where a group is empty)."""

    def num(value: float | None, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    return [
        num(row["probe_accuracy"], ".2f"),
        num(row["refused_margin_median"], "+.2f"),
        num(row["answered_margin_median"], "+.2f"),
        num(row["margin_auroc_refused"], ".2f"),
    ]


def rass_config(
    c: RunConfig, base: RASSConfig, fit: BoundaryFit | None, layer: int
) -> tuple[RASSConfig, str]:
    """RASS's settings (``base``, the stage's) and a sentence on where it selects: with
    ``rass.rule`` refusal, the geometry stage's ``fit`` (its layer and band); with margin, or
    a fit that chose no band, the direction's ``layer`` and ``|margin| ≤ rass.band``."""
    rule = f"the direction's layer {layer}, |margin| ≤ {c.rass.band:g}"
    if c.rass.rule == "margin" or fit is None:
        return base, f"{rule} (rass.rule margin)"
    if fit.layer is None or fit.band is None:
        return base, f"{rule}, as the geometry stage chose no band. {fit.describe()}"
    return base.replace(layer=fit.layer, band_range=fit.band), fit.describe()


def rass_stage(ctx: StageContext) -> None:
    """8. RASS: steer the model along r to write candidates from seeds, screen them, keep
    those in the band where the boundary predicts refusal that the harm judge calls benign."""
    c, model, base, out = ctx.config, ctx.model(), ctx.base(), ctx.out
    folder, shape = ctx.input(TRIGGERS), ctx.input(GEOMETRY)
    judge = HarmJudge.load(folder / HARM_JUDGE_DIR)
    r = Direction.load(ctx.input(DIRECTION))
    alpaca = ctx.unseen("alpaca")
    seeds = harmful_queries(c.triggers.n_masks).texts[: c.rass.n_seeds // 2]
    seeds += alpaca[: c.rass.n_seeds - len(seeds)].texts
    fit = read_fit(shape) if c.rass.rule == "refusal" else None
    config, where = rass_config(c, ctx.settings["rass"], fit, r.layer)
    result = rass(
        model,
        seeds,
        r,
        reference_sets(shape),
        harm_scorer(judge, base),
        config,
        lexicon=load_lexicon(folder / MASKS_DIR / LEXICON_NAME),
        benign_contexts=alpaca[c.rass.n_seeds : c.rass.n_seeds + 200].texts,
    )
    result.save(out)
    claim = rass_claim(ctx, result)
    pyplot().close(plot_rass_margins(result, out / "rass_margins.png"))
    ctx.write_section(
        text=[
            f"{len(result.candidates)} candidates from {len(seeds)} seeds; "
            f"{len(result.selected)} selected and judged benign. Selection: {where}.",
            claim,
            *result.warnings,
        ],
        tables=[closest_table(result)],
        figures=[figure("rass_margins.png", "Margins of the candidates, by generator")],
    )


def rass_claim(ctx: StageContext, result: RASSResult) -> str:
    """Paper 1's claim on this run: the model answers RASS's selected prompts (greedy,
    :data:`LOOKALIKE_JUDGE`), their refused share against XSTest-safe's in the evaluate stage
    (different prompts: Fisher's exact test). Writes :data:`CLAIM_FILE`; the sentence."""
    c = ctx.config
    evaluated = EvalResult.load(ctx.input(EVALUATE) / "model").sets.get(CLAIM_BASELINE)
    if not result.selected or evaluated is None:
        why = "nothing was selected" if not result.selected else f"{CLAIM_BASELINE} not evaluated"
        return f"Paper 1's claim (RASS finds prompts the model over-refuses): not tested, {why}."
    prompts = PromptSet.from_texts([x.text for x in result.selected], "borderline", "rass")
    reports = refusal_rates(ctx.model(), {"rass": prompts}, (LOOKALIKE_JUDGE,), c.max_new_tokens)
    report = reports["rass"][LOOKALIKE_JUDGE]
    k, n = sum(report.refused), report.n
    kb, nb = evaluated["counts"][LOOKALIKE_JUDGE]["refused"], evaluated["n"]
    p = fisher_exact(k, n, kb, nb)
    word = "not determined" if p >= 0.05 else ("higher" if k / n > kb / nb else "lower")
    outcome = {"higher": "it reproduces", "lower": "it does not reproduce"}.get(
        word, "this run does not decide it"
    )
    record = {"judge": LOOKALIKE_JUDGE, "selected": [k, n], CLAIM_BASELINE: [kb, nb], "p": p}
    record |= {"verdict": word, "answers": report.completions, "verdicts": report.verdicts}
    write_json(ctx.out / CLAIM_FILE, record)
    return (
        f"Paper 1's claim (RASS finds prompts the model over-refuses): the selected prompts are "
        f"refused {rate_text(k, n)}, {CLAIM_BASELINE} {rate_text(kb, nb)} ({LOOKALIKE_JUDGE} "
        f"judge, {c.max_new_tokens} new tokens; Fisher p = {p:.2g}): {word}, so {outcome} "
        "on this run."
    )


def closest_table(result: RASSResult) -> dict[str, Any]:
    """The eight selected prompts nearest the band's centre."""
    band = result.config.band_range
    centre = sum(band) / 2 if band else 0.0
    chosen = sorted(result.records(), key=lambda x: abs(x["margin"] - centre))[:8]
    rows = [[x["text"], f"{x['margin']:+.2f}", f"{x['p_harmful']:.2f}"] for x in chosen]
    return table(
        "Selected prompts nearest the band's centre", ["prompt", "margin", "p(harmful)"], rows
    )
