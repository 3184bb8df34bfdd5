"""Does the refusal direction transfer across languages? Per-language directions, their cosines,
and refusal per language with the English direction (and one other language's) ablated.

For each studied model (the SmolLM2 organism and Qwen2.5-Coder-0.5B-Instruct) and each language
of PolyRefuse (and English, the originals):

1. a difference-of-means refusal direction per language, ``mean(harmful) − mean(harmless)`` of
   the last-token residual (``resid_pre``) at every layer, on ``--n-fit`` seeded items of the
   harmful and harmless test splits (the same items in every language; Chinese harmless from
   the validation split);
2. the cosine matrix of the languages' directions at ``--layer`` (default: the layer the
   direction stage selects for that model) and the mean cross-language cosine per layer;
3. refusal of ``--n`` other harmful items per language, unedited, with the English direction
   ablated at every layer, and with ``--other``'s direction ablated (the reverse transfer),
   by the score judge with each language's refusal-start tokens
   (:func:`refusal_lens.models.refusal_tokens.refusal_start_tokens`), and in the languages of
   ``--substring`` also by the multilingual substring judge on greedy answers
   (``--max-new-tokens``; generation is what costs time on a CPU);
4. the boundary by language: a logistic probe fitted per layer on the English fit prompts,
   with every language's fit prompts placed against it.

    python experiments/language_directions.py    # ~38 min on one CPU thread

Writes ``figures/language_directions.{md,json,png}``. ``--smoke``: a tiny random model.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace

import torch
from common import hardware, parse, parser, save_figure, write_text
from languages import studied_models
from torch import Tensor

from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.artifacts import write_json
from refusal_lens.cache import library_versions
from refusal_lens.interventions import ablate
from refusal_lens.models import ModelHandle, load_model
from refusal_lens.models.refusal_tokens import openings_for, refusal_start_tokens
from refusal_lens.probes import fit_probe
from refusal_lens.prompts import PromptSet
from refusal_lens.prompts.polyrefuse import LANGUAGE_NAMES, LANGUAGES, load_polyrefuse
from refusal_lens.scoring import SubstringJudge, refusal_scores
from refusal_lens.stats import mcnemar, rate_text
from refusal_lens.verdicts import refused_by_score

# The layer each model's direction stage selects (docs/judges.md, "Fitting the score judge"): the
# SmolLM2 organism 21, Qwen 17.
LAYERS = {"smollm2-organism": 21, "qwen2.5-coder-0.5b": 17}
CONDITIONS = ("unedited", "ablate en", "ablate other")


def arguments() -> argparse.Namespace:
    cli = parser(__doc__, n=24, n_fit=96, max_new_tokens=32, batch_size=8)
    cli.add_argument("--languages", default=",".join(LANGUAGES))
    cli.add_argument("--models", default="organism,qwen")
    cli.add_argument("--organism", default=None)
    cli.add_argument("--other", default="ru", help="the language whose direction is also ablated")
    cli.add_argument("--layer", type=int, default=None, help="default: LAYERS per model")
    cli.add_argument(
        "--substring",
        default="en,de,ru,zh",
        help="languages also judged by generation (substring judge); the score judge reads all",
    )
    args = parse(cli, smoke={"n": 2, "n_fit": 8, "max_new_tokens": 4, "batch_size": 4})
    args.languages = ("en", *[x for x in args.languages.split(",") if x and x != "en"])
    args.substring = tuple(x for x in args.substring.split(",") if x)
    return args


def split_items(n_total: int, n_fit: int, n_eval: int, seed: int) -> tuple[list, list]:
    """Seeded, disjoint item positions: ``n_fit`` to fit directions, ``n_eval`` to evaluate."""
    order = list(range(n_total))
    random.Random(seed).shuffle(order)
    return sorted(order[:n_fit]), sorted(order[n_fit : n_fit + n_eval])


def language_sets(args: argparse.Namespace, language: str) -> dict[str, PromptSet]:
    """Fit (harmful, harmless) and evaluation (harmful) prompts of ``language``."""
    harmful = load_polyrefuse("harmful", language)
    harmless = load_polyrefuse("harmless", language, "val" if language == "zh" else "test")
    fit_h, eval_h = split_items(len(harmful), args.n_fit, args.n, seed=0)
    fit_b, _ = split_items(len(harmless), args.n_fit, 0, seed=1)

    def pick(prompts: PromptSet, idx: list[int], name: str) -> PromptSet:
        return PromptSet(tuple(prompts[i] for i in idx), name=f"{name}:{language}")

    return {
        "harmful": pick(harmful, fit_h, "fit-harmful"),
        "harmless": pick(harmless, fit_b, "fit-harmless"),
        "eval": pick(harmful, eval_h, "eval-harmful"),
    }


def residuals(model: ModelHandle, sets: dict, batch_size: int) -> dict[str, dict[str, Tensor]]:
    """Per language and fit set: last-token residuals (``resid_pre``) ``[prompt, layer, d]``."""
    config = CollectConfig(positions=(-1,), batch_size=batch_size)
    return {
        language: {
            kind: collect_residuals(model, s[kind], config, show_progress=False).acts[:, :, 0]
            for kind in ("harmful", "harmless")
        }
        for language, s in sets.items()
    }


def directions(acts: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per language: the difference of means at every layer ``[layer, d_model]``."""
    return {
        language: a["harmful"].double().mean(0).float() - a["harmless"].double().mean(0).float()
        for language, a in acts.items()
    }


def boundary(acts: dict[str, dict[str, Tensor]]) -> dict:
    """The boundary fitted on English, each language placed against it, layer by layer: per
    language and kind, the share of prompts on the harmful side and the median margin (the
    probe's logit); the English rows are the probe's own training prompts."""
    en = acts["en"]
    n_layers = en["harmful"].shape[1]
    out: dict = {"layers": list(range(1, n_layers))}  # layer 0 has seen only the template
    for layer in out["layers"]:
        x = torch.cat([en["harmful"][:, layer], en["harmless"][:, layer]])
        y = torch.cat([torch.ones(len(en["harmful"])), torch.zeros(len(en["harmless"]))]).bool()
        probe = fit_probe(x, y)
        for language, a in acts.items():
            for kind in ("harmful", "harmless"):
                logits = probe.logits(a[kind][:, layer])
                entry = out.setdefault(language, {}).setdefault(
                    kind, {"harmful_side": [], "margin": []}
                )
                entry["harmful_side"].append(float((logits > 0).float().mean()))
                entry["margin"].append(float(logits.median()))
    return out


def cosines(vectors: dict[str, torch.Tensor], layer: int) -> list[list[float]]:
    units = torch.stack([v[layer] / v[layer].norm() for v in vectors.values()])
    return (units @ units.T).tolist()


def mean_cross_cosine(vectors: dict[str, torch.Tensor]) -> list[float]:
    """Per layer from 1: the mean cosine of every pair of different languages' directions
    (layer 0 reads only the template's last token, the same in every prompt)."""
    stack = torch.stack(list(vectors.values()))[:, 1:]  # [lang, layer, d]
    units = stack / stack.norm(dim=-1, keepdim=True)
    sims = torch.einsum("ald,bld->lab", units, units)
    k = len(vectors)
    off = (sims.sum((1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(-1)) / (k * (k - 1))
    return off.tolist()


def judged(model: ModelHandle, prompts: PromptSet, language: str, args) -> dict[str, list[bool]]:
    """Refused per prompt by the score judge (English and ``language``'s refusal openings) and
    by the multilingual substring judge."""
    tokens = refusal_start_tokens(model.chat, openings_for(language))
    scores = refusal_scores(replace(model, refusal_tokens=tokens), prompts, args.batch_size, False)
    out = {"score": [bool(refused_by_score(float(s), 0.0)) for s in scores]}
    if language in args.substring:
        out["substring"] = SubstringJudge(args.max_new_tokens)(
            model, prompts, args.batch_size, False
        ).refused
    return out


def transfer(model, sets, vectors, layer: int, args) -> dict:
    """Refusal of each language's evaluation prompts per condition and judge."""
    edits = {"ablate en": vectors["en"][layer], "ablate other": vectors[args.other][layer]}
    out: dict = {}
    for language, s in sets.items():
        out[language] = {"unedited": judged(model, s["eval"], language, args)}
        for name, vector in edits.items():
            with ablate(model, vector):
                out[language][name] = judged(model, s["eval"], language, args)
    return out


def study(args: argparse.Namespace, name: str, spec: str) -> dict:
    model = load_model(spec, device="cpu")
    layer = args.layer if args.layer is not None else LAYERS.get(name, model.n_layers // 2)
    sets = {language: language_sets(args, language) for language in args.languages}
    acts = residuals(model, sets, args.batch_size)
    vectors = directions(acts)
    return {
        "boundary": boundary(acts),
        "layer": layer,
        "languages": list(args.languages),
        "cosines": cosines(vectors, layer),
        "cross_cosine_by_layer": mean_cross_cosine(vectors),
        "refusal": transfer(model, sets, vectors, layer, args),
    }


def transfer_table(name: str, result: dict, other: str) -> list[str]:
    lines = [
        f"**{name}** (score judge / substring judge; refused share [95 % interval], McNemar p "
        "against unedited; – : not generated):",
        "",
        "| language | unedited | English direction ablated | "
        f"{LANGUAGE_NAMES[other]} direction ablated |",
        "|---|---|---|---|",
    ]
    for language, conditions in result["refusal"].items():
        cells = []
        for condition in CONDITIONS:
            parts = []
            for judge in ("score", "substring"):
                if judge not in conditions[condition]:
                    parts.append("–")
                    continue
                flags = conditions[condition][judge]
                text = rate_text(sum(flags), len(flags))
                if condition != "unedited":
                    text += f" (p {mcnemar(flags, conditions['unedited'][judge])['p']:.2g})"
                parts.append(text)
            cells.append(" / ".join(parts))
        lines.append(f"| {LANGUAGE_NAMES[language]} | {' | '.join(cells)} |")
    return lines


def cosine_table(name: str, result: dict) -> list[str]:
    languages = result["languages"]
    lines = [
        f"**{name}**, layer {result['layer']}:",
        "",
        "| | " + " | ".join(languages) + " |",
        "|---|" + "---:|" * len(languages),
    ]
    for language, row in zip(languages, result["cosines"], strict=True):
        lines.append(f"| {language} | " + " | ".join(f"{c:.2f}" for c in row) + " |")
    return lines


def boundary_table(name: str, result: dict) -> list[str]:
    """At the model's layer: each language's prompts against the English probe."""
    b, layer = result["boundary"], result["layer"]
    i = b["layers"].index(layer)
    lines = [
        f"**{name}**, layer {layer} (probe fitted on English):",
        "",
        "| language | harmful on the harmful side | median margin | harmless on the harmful "
        "side | median margin |",
        "|---|---:|---:|---:|---:|",
    ]
    for language in result["languages"]:
        cells = []
        for kind in ("harmful", "harmless"):
            entry = b[language][kind]
            cells += [f"{entry['harmful_side'][i] * 100:.0f} %", f"{entry['margin'][i]:+.2f}"]
        lines.append(f"| {LANGUAGE_NAMES[language]} | {' | '.join(cells)} |")
    return lines


def report(record: dict) -> str:
    parts = [
        "# The refusal direction across languages",
        "",
        f"`python experiments/language_directions.py` on {record['hardware']}. Directions: "
        f"difference of means of {record['n_fit']} harmful and {record['n_fit']} harmless "
        f"PolyRefuse items per language (last token, resid_pre). Refusal: {record['n']} other "
        "harmful test items per language, with a direction projected out at every layer.",
        "",
        "## Cosine of the languages' refusal directions",
        "",
    ]
    for name, result in record["models"].items():
        parts += [*cosine_table(name, result), ""]
    parts += [
        "## The boundary by language",
        "",
        "A logistic probe fitted per layer on the English fit prompts (harmful against "
        "harmless); each language's fit prompts placed against it (the English rows are the "
        "probe's training prompts). The figure's lower panels show every layer.",
        "",
    ]
    for name, result in record["models"].items():
        parts += [*boundary_table(name, result), ""]
    parts += ["## Refusal per language with a direction ablated", ""]
    for name, result in record["models"].items():
        parts += [*transfer_table(name, result, record["other"]), ""]
    return "\n".join(parts)


def plot(record: dict, path) -> None:
    """Top: mean cross-language cosine per layer; below, per model: the share of each
    language's harmless prompts on the harmful side of the English probe, per layer."""
    import matplotlib.pyplot as plt

    models = record["models"]
    fig, axes = plt.subplots(1 + len(models), 1, figsize=(6.5, 3 + 2.6 * len(models)))
    for name, result in models.items():
        layers = result["boundary"]["layers"]
        axes[0].plot(layers, result["cross_cosine_by_layer"], marker=".", label=name)
    axes[0].set(xlabel="layer", ylabel="mean cosine", title="Refusal directions across languages")
    axes[0].legend(fontsize=8)
    for ax, (name, result) in zip(axes[1:], models.items(), strict=True):
        b = result["boundary"]
        for language in result["languages"]:
            ax.plot(b["layers"], b[language]["harmless"]["harmful_side"], label=language)
        ax.axvline(result["layer"], color="grey", lw=0.8, ls=":")
        ax.set(
            xlabel="layer",
            ylabel="harmless on harmful side",
            title=f"{name}: harmless prompts against the English boundary",
            ylim=(-0.02, 1.02),
        )
        ax.legend(fontsize=7, ncol=4)
    save_figure(fig, path)


def main() -> None:
    args = arguments()
    models = studied_models(args)
    if args.smoke:
        args.languages, args.other = ("en", "de", "ru"), "ru"
    record = {
        "hardware": hardware(),
        "versions": library_versions(),
        "n": args.n,
        "n_fit": args.n_fit,
        "other": args.other,
        "models": {name: study(args, name, spec) for name, spec in models.items()},
    }
    write_json(args.out / "language_directions.json", record)
    write_text(args.out / "language_directions.md", report(record))
    plot(record, args.out / "language_directions.png")
    print(report(record))


if __name__ == "__main__":
    main()
