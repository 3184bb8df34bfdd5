"""Step 11 (``--languages``): refusal, over-refusal, the refusal direction and the boundary in
each extra language, against English on the same PolyRefuse items.

Per extra language, on ``multilingual.n`` seeded items of each PolyRefuse test split (the same
items in every language, so English is the originals of the same prompts; Chinese harmless
prompts come from the validation split, which has no originals):

- refusal of the harmful and the harmless items, and of their English originals, by the
  multilingual substring judge (the answer's language detected, its refusal phrases added);
  McNemar's paired test against English; the harmless items refused in the language but
  answered in English (over-refusal by language);
- the run's refusal direction ablated: refusal of the language's harmful items;
- the language's difference of means at the direction's layer and position, and its cosine
  with the run's direction and with English's on the same items;
- the boundary the geometry stage fits on English, at the layer it chose for RASS: the share
  of each language's prompts on its harmful side and their median margin.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

import torch

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.artifacts import write_json
from refusal_lens.boundary.geometry import LayerBoundary, layer_boundary
from refusal_lens.boundary.rass import margins
from refusal_lens.cache import file_digest
from refusal_lens.interventions import ablate
from refusal_lens.models import ModelHandle
from refusal_lens.pipeline.context import StageContext
from refusal_lens.pipeline.records import MULTILINGUAL_FILE, read_fit, reference_sets
from refusal_lens.pipeline.registry import DIRECTION, GEOMETRY
from refusal_lens.pipeline.sections import table
from refusal_lens.prompts import PromptSet
from refusal_lens.prompts.polyrefuse import KINDS, LANGUAGE_NAMES, load_polyrefuse, polyrefuse_file
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import SubstringJudge
from refusal_lens.stats import mcnemar, rate_text

ABLATED = "harmful, r ablated"


def split_for(kind: str, language: str) -> str:
    """The split a language's items come from (no Chinese harmless test split exists)."""
    return "val" if (kind, language) == ("harmless", "zh") else "test"


def data_files(run: Any) -> dict[str, str]:
    """What the stage reads from outside the run: the PolyRefuse files, hashed (English
    originals are read from the German test files)."""
    out = {}
    for language in ("de", *run.config.extra_languages):
        for kind in KINDS:
            path = polyrefuse_file(kind, language, split_for(kind, language))
            out[path.name] = file_digest(path)
    return out


def language_sets(language: str, n: int, seed: int) -> dict[str, PromptSet]:
    """``n`` seeded items of each kind in ``language`` (the same item numbers in every
    language of a split)."""
    out = {}
    for i, kind in enumerate(KINDS):
        prompts = load_polyrefuse(kind, language, split_for(kind, language))  # type: ignore[arg-type]
        idx = sorted(random.Random(seed + i).sample(range(len(prompts)), min(n, len(prompts))))
        out[kind] = PromptSet(tuple(prompts.prompts[j] for j in idx), name=f"{kind}:{language}")
    return out


def answered(model: ModelHandle, prompts: PromptSet, tokens: int) -> dict[str, list]:
    report = SubstringJudge(tokens)(model, prompts, show_progress=False)
    return {"answers": report.completions, "verdicts": report.verdicts, "refused": report.refused}


def mean_difference(model: ModelHandle, sets: dict[str, PromptSet], r: Direction) -> torch.Tensor:
    """Harmful minus harmless mean residual at the direction's layer and position."""
    config = CollectConfig(layers=(r.layer,), positions=(r.position,))
    harmful, harmless = (
        collect_residuals(model, sets[k], config, show_progress=False).acts[:, 0, 0].double()
        for k in KINDS
    )
    return (harmful.mean(0) - harmless.mean(0)).float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def study(
    ctx: StageContext, language: str, r: Direction, boundary: LayerBoundary, english: dict | None
) -> dict[str, Any]:
    """One language's record (``english``: the English originals' record, None for English)."""
    c, model = ctx.config, ctx.model()
    sets = language_sets(language, c.multilingual.n, c.seed)
    out: dict[str, Any] = {"texts": {k: sets[k].texts for k in KINDS}}
    out |= {k: answered(model, sets[k], c.max_new_tokens) for k in KINDS}
    with ablate(model, r):
        out[ABLATED] = answered(model, sets["harmful"], c.max_new_tokens)
    diff = mean_difference(model, sets, r)
    out["cosine"] = {"run direction": cosine(diff, r.vector)}
    if english is not None:
        out["cosine"]["English, same items"] = cosine(diff, torch.tensor(english["difference"]))
    out["difference"] = diff.tolist()
    out["boundary"] = {"layer": boundary.layer}
    for kind in KINDS:
        m = margins(model, boundary, sets[kind].texts, ctx.settings["geometry"].batch_size)
        out["boundary"][kind] = m.tolist()
    return out


def english_boundary(ctx: StageContext, r: Direction) -> LayerBoundary:
    """The geometry stage's English boundary at the layer it chose for RASS (the direction's
    layer when it chose none), fitted again on its reference sets."""
    shape = ctx.input(GEOMETRY)
    fit = read_fit(shape)
    layer = r.layer if fit.layer is None else fit.layer
    return layer_boundary(ctx.model(), *reference_sets(shape), layer, r, ctx.settings["geometry"])


def multilingual(ctx: StageContext) -> None:
    """11. Every extra language of ``--languages`` against English on the same items."""
    c = ctx.config
    r = Direction.load(ctx.input(DIRECTION))
    boundary = english_boundary(ctx, r)
    record = {"en": study(ctx, "en", r, boundary, None)}
    for language in c.extra_languages:
        record[language] = study(ctx, language, r, boundary, record["en"])
    write_json(ctx.out / MULTILINGUAL_FILE, record)
    names = [LANGUAGE_NAMES[x] for x in c.extra_languages]
    names = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    ctx.write_section(
        text=[
            f"{c.multilingual.n} PolyRefuse test items of each kind in {names}, and their "
            "English originals, answered greedily and judged by the multilingual substring "
            f"judge (the answer's language detected; {c.max_new_tokens} new tokens). Paired: "
            "McNemar's test against English on the same items. Chinese harmless prompts come "
            "from the validation split, which has no English originals. Boundary: the "
            f"geometry stage's English probe at layer {boundary.layer}; margin > 0 is its "
            "harmful side.",
        ],
        tables=[overview_table(record)],
        parts=[language_part(record, x) for x in c.extra_languages],
    )


def paired_p(record: dict, language: str, kind: str) -> str:
    """McNemar's p of ``language`` against English on ``kind`` (– when unpaired or English)."""
    if language == "en" or split_for(kind, language) != "test":
        return "–"
    return f"{mcnemar(record[language][kind]['refused'], record['en'][kind]['refused'])['p']:.2g}"


def cell(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def rate(flags: list[bool]) -> str:
    return rate_text(sum(flags), len(flags))


def overview_table(record: dict) -> dict[str, Any]:
    rows = []
    for language, entry in record.items():
        harmless_margin = entry["boundary"]["harmless"]
        rows.append(
            [
                f"{LANGUAGE_NAMES[language]} ({language})",
                rate(entry["harmful"]["refused"]),
                paired_p(record, language, "harmful"),
                rate(entry["harmless"]["refused"]),
                paired_p(record, language, "harmless"),
                rate(entry[ABLATED]["refused"]),
                f"{entry['cosine']['run direction']:+.2f}",
                cell(entry["cosine"].get("English, same items")),
                rate([m > 0 for m in harmless_margin]),
                f"{statistics.median(harmless_margin):+.2f}",
            ]
        )
    columns = [
        "language",
        "refused, harmful",
        "p vs English",
        "refused, harmless",
        "p vs English",
        "refused, harmful, r ablated",
        "cosine with r",
        "cosine with English",
        "harmless on the harmful side",
        "median harmless margin",
    ]
    note = "[95 % Wilson interval]; cosine: the language's difference of means at r's layer"
    return table("Refusal, the direction and the boundary by language", columns, rows, note)


def over_refused(record: dict, language: str) -> list[int]:
    """Harmless items refused in ``language`` and answered in English."""
    if split_for("harmless", language) != "test":
        return []
    here, there = record[language]["harmless"]["refused"], record["en"]["harmless"]["refused"]
    return [i for i, (a, b) in enumerate(zip(here, there, strict=True)) if a and not b]


def language_part(record: dict, language: str) -> dict[str, Any]:
    """The report's subsection of one language: the over-refused pairs."""
    entry, en = record[language], record["en"]
    items = over_refused(record, language)
    rows = [
        [
            entry["texts"]["harmless"][i],
            en["texts"]["harmless"][i],
            entry["harmless"]["answers"][i],
            en["harmless"]["answers"][i],
        ]
        for i in items
    ]
    n, name = len(entry["harmless"]["refused"]), LANGUAGE_NAMES[language]
    rates = (
        f"Refused in {name}: harmful {rate(entry['harmful']['refused'])} (English "
        f"{rate(en['harmful']['refused'])}, McNemar p {paired_p(record, language, 'harmful')}), "
        f"harmless {rate(entry['harmless']['refused'])} (English "
        f"{rate(en['harmless']['refused'])})."
    )
    pairs = (
        f"{len(items)} of {n} harmless items are refused in {name} and answered in English "
        "(over-refusal by language)."
        if split_for("harmless", language) == "test"
        else "Harmless items come from the validation split: no English pairs."
    )
    columns = ["prompt", "English original", "answer", "answer in English"]
    tables = [table("Refused in this language, answered in English", columns, rows)] if rows else []
    return {"title": f"{name} ({language})", "text": [pairs, rates], "tables": tables}
