"""Can a small local chat model translate RASS's prompts? Qwen2.5-Coder-0.5B as the
multilingual RASS translator (``refusal_lens.boundary.translate.model_translator``).

1. **Translations**: a seeded sample of ``--n`` prompts RASS selected on the SmolLM2 organism
   (``runs/smollm2-135m/08-rass/rass.jsonl``, written by ``refusal-lens run smollm2-135m``)
   translated into each of ``--languages`` (default French, German, Spanish).
2. **Hand labels** (``experiments/data/translator_labels.jsonl``, rules in
   ``translator_labels.md``): is each translation a faithful translation in the target
   language? A label is used only while its text is the translation this run made.
3. **Automatic**, as RASS counts them: empty and unchanged (= the source) translations.
4. With ``--rass``: a small multilingual RASS run (``refusal_lens.boundary.rass``) on the
   organism with the Qwen translator, languages en + ``--rass-languages`` (fr de): per
   language, the candidates generated and selected, and the translation counts RASS reports
   (written to a temporary folder; only the counts are kept).

    python experiments/translator_eval.py [--n 24] [--languages fr de es] [--rass]
    python experiments/translator_eval.py --report-only   # tables from the saved JSON
    python experiments/translator_eval.py --report-only --rass --rass-languages fr
        # the saved translations, plus the RASS run

Writes ``figures/translator_eval.{md,json}``. ``--smoke``: a tiny random model translates a
few shipped prompts (see ``common.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from common import hardware, parse, parser, project_path, write_text

from refusal_lens.artifacts import write_json
from refusal_lens.boundary.translate import LANGUAGES, model_translator
from refusal_lens.models import load_model
from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.prompts import PromptSet, load_prompts

LABELS = Path("experiments/data/translator_labels.jsonl")
RUN = Path("runs/smollm2-135m")


def arguments() -> argparse.Namespace:
    cli = parser(__doc__, n=24, batch_size=8, rass_seeds=6, rass_reference=12)
    cli.add_argument("--translator", default="qwen2.5-coder-0.5b", help="model spec")
    cli.add_argument("--languages", nargs="+", default=["fr", "de", "es"])
    cli.add_argument("--run", type=project_path, default=RUN, help="a `refusal-lens run` folder")
    cli.add_argument("--rass", action="store_true", help="also a small multilingual RASS run")
    cli.add_argument("--rass-languages", nargs="+", default=["fr", "de"], help="besides en")
    cli.add_argument("--report-only", action="store_true", help="tables from the saved JSON")
    return parse(cli, smoke={"n": 3, "languages": ["fr"]})


def sources(args: argparse.Namespace) -> list[str]:
    """The prompts to translate: a seeded sample of the run's RASS set."""
    pool = (
        load_prompts("harmless")
        if args.smoke
        else PromptSet.load(args.run / f"{FOLDERS['rass']}/rass.jsonl")
    )
    return random.Random(0).sample(pool.texts, min(args.n, len(pool)))


def translations(args: argparse.Namespace, texts: list[str]) -> tuple[dict, dict]:
    """Per language: the translations and the seconds they took."""
    model = load_model(args.model if args.smoke else args.translator, device="cpu")
    translate = model_translator(model, batch_size=args.batch_size)
    out, seconds = {}, {}
    for language in args.languages:
        start = time.time()
        out[language] = translate(texts, language)
        seconds[language] = time.time() - start
        print(language, f"{seconds[language]:.0f} s", flush=True)
    return out, seconds


def small_rass(args: argparse.Namespace) -> dict:
    """Step 4: RASS on the organism with the Qwen translator, a few seeds and small reference
    sets; per language, generated and selected candidates and the translation counts."""
    from refusal_lens.boundary import RASSConfig, rass
    from refusal_lens.directions import Direction
    from refusal_lens.triggers import HarmJudge
    from refusal_lens.triggers.harm import harm_scorer

    organism = json.loads((args.run / f"{FOLDERS['organism']}/organism.json").read_text())["model"]
    model = load_model(organism, device="cpu")
    judge = HarmJudge.load(args.run / f"{FOLDERS['triggers']}/harm_judge")
    scorer = harm_scorer(judge, load_model(judge.model_id, device="cpu"))
    k = args.rass_reference
    harmful, harmless = load_prompts("harmful").sample(k, 1), load_prompts("alpaca")[-k:]
    seeds = load_prompts("harmful").sample(args.rass_seeds, 2).texts
    seeds += load_prompts("alpaca")[-k - args.rass_seeds : -k].texts
    config = RASSConfig(contexts=4, samples=2, languages=("en", *args.rass_languages), seed=0)
    translator = model_translator(load_model(args.translator, device="cpu"), batch_size=8)
    start = time.time()
    result = rass(
        model,
        seeds,
        Direction.load(args.run / FOLDERS["direction"]),
        (harmful, harmless),
        scorer,
        config,
        translator=translator,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result.save(tmp)  # checks that the run saves; the counts are kept below
    per_language = {}
    for c in result.candidates:
        row = per_language.setdefault(c.language, {"generated": 0, "screened": 0, "selected": 0})
        row["generated"] += 1
        row["screened"] += "margin" in c.scores
        row["selected"] += c.reason == ""
    return {
        "seconds": time.time() - start,
        "config": {"seeds": len(seeds), "reference": k, "contexts": 4, "samples": 2},
        "per_language": per_language,
        "translations": result.translations,
        "warnings": result.warnings,
    }


def read_labels(path: Path) -> dict[tuple[str, int], dict]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        return {(r["language"], r["index"]): r for r in map(json.loads, f) if r}


def table(record: dict, labels: dict) -> dict[str, dict]:
    """Per language: empty, unchanged, and valid by hand labels (matching texts only)."""
    out = {}
    for language, texts in record["translations"].items():
        sources = record["sources"]
        hand = [
            labels[(language, k)]["valid"]
            for k, text in enumerate(texts)
            if (language, k) in labels and labels[(language, k)]["text"] == text
        ]
        out[language] = {
            "n": len(texts),
            "empty": sum(not t.strip() for t in texts),
            "unchanged": sum(
                t.strip().lower() == s.strip().lower() for t, s in zip(texts, sources, strict=True)
            ),
            "labelled": len(hand),
            "valid": sum(hand) / len(hand) if hand else None,
        }
    return out


def main() -> None:
    args = arguments()
    out = args.out / "translator_eval.json"
    if args.report_only:
        record = json.loads(out.read_text())
    else:
        texts = sources(args)
        translated, seconds = translations(args, texts)
        record = {
            "translator": "tiny" if args.smoke else args.translator,
            "inputs": "smoke" if args.smoke else str(args.run / f"{FOLDERS['rass']}/rass.jsonl"),
            "sources": texts,
            "translations": translated,
            "seconds": seconds,
            "hardware": hardware(),
        }
    if args.rass and not args.smoke:
        record["rass"] = small_rass(args)
    record["table"] = table(record, read_labels(LABELS))
    write_json(out, record)
    md = report(record)
    write_text(args.out / "translator_eval.md", md)
    print(md)


PROMPT_NOTE = (
    'Prompt: `PROMPT` in `src/refusal_lens/boundary/translate.py` ("Translate this text into '
    '{language}. Output only the {language} translation. Text: ... {language}:"). On 6 other '
    "prompts into French and German (12 translations) the previous wording answered 2 instead "
    "of translating and this one (with 'English:' in place of 'Text:', changed since so that "
    "back-translations are framed right) none; a quoted 'Translate from English to "
    "{language}' was slower and left more English. `valid`: hand labels; `empty`, "
    "`unchanged`: as RASS counts them."
)


def report(record: dict) -> str:
    t, n = record["table"], len(record["sources"])
    lines = [
        f"{record['translator']} translating {n} seeded prompts of the SmolLM2 run's RASS set "
        "(rules: `experiments/data/translator_labels.md`).",
        "",
        "| language | n | valid (hand) | labelled | empty | unchanged | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for language, r in t.items():
        valid = "–" if r["valid"] is None else f"{100 * r['valid']:.0f} %"
        lines.append(
            f"| {LANGUAGES.get(language, language)} | {r['n']} | {valid} | {r['labelled']} "
            f"| {r['empty']} | {r['unchanged']} | {record['seconds'][language]:.0f} |"
        )
    lines += ["", PROMPT_NOTE, "", "| source | " + " | ".join(t) + " |"]
    lines.append("|---" * (len(t) + 1) + "|")
    for k, source in enumerate(record["sources"][:6]):
        cells = [source] + [record["translations"][lang][k] for lang in t]
        lines.append("| " + " | ".join(c.replace("|", "/")[:160] for c in cells) + " |")
    if "rass" in record:
        lines += rass_lines(record["rass"])
    lines += [
        "",
        f"{record['hardware']}. Commands: `python experiments/translator_eval.py`"
        + (f", then `{rass_command(record['rass'])}`." if "rass" in record else "."),
    ]
    return "\n".join(lines) + "\n"


def rass_command(r: dict) -> str:
    """The command that adds this RASS run to the saved translations."""
    languages = " ".join(lang for lang in r["per_language"] if lang != "en")
    c = r["config"]
    return (
        "python experiments/translator_eval.py --report-only --rass --rass-languages "
        f"{languages} --rass-seeds {c['seeds'] // 2} --rass-reference {c['reference']}"
    )


def rass_lines(r: dict) -> list[str]:
    c = r["config"]
    lines = [
        "",
        f"Small RASS run on the organism with this translator ({c['seeds']} seeds, "
        f"{c['reference']} + {c['reference']} reference prompts, {c['contexts']} contexts x "
        f"{c['samples']} samples; {r['seconds'] / 60:.1f} min):",
        "",
        "| language | generated | screened | selected |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {lang} | {v['generated']} | {v['screened']} | {v['selected']} |"
        for lang, v in r["per_language"].items()
    ]
    lines += ["", "| translation | texts | empty | unchanged |", "|---|---:|---:|---:|"]
    lines += [
        f"| {k} | {v['texts']} | {v['empty']} | {v['unchanged']} |"
        for k, v in r["translations"].items()
    ]
    return lines


if __name__ == "__main__":
    main()
