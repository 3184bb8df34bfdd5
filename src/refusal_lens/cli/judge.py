"""Command that judges given answers: ``judge`` reads (prompt, response) pairs from a file and
writes one verdict per pair (:mod:`refusal_lens.verdicts`), by the substring judge, the LLM
judge, or both.

The degeneration detector decides first under every judge: an empty answer or a repetition
loop is ``degenerate``, never a compliance or a refusal. Nothing is written unless every pair
was read and judged; ``--out`` is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from refusal_lens.cli.common import Loader, app, model_options
from refusal_lens.errors import RefusalLensError

JUDGES = ("substring", "llm")
FIELDS = ("prompt", "response")
JSON_SUFFIXES = (".jsonl", ".json")
CSV_SUFFIXES = (".csv",)
_FORMAT = (
    "one JSON object per line with 'prompt' and 'response' (.jsonl), or a header row with "
    "'prompt' and 'response' columns (.csv)"
)

Row = dict[str, Any]
Judged = list[tuple[str, str]]  # (verdict, reason) per pair


@app.command(
    epilog="Example: refusal-lens judge answers.jsonl --judge substring --judge llm "
    "--judge-model qwen2.5-coder-0.5b --out verdicts.jsonl"
)
@model_options
def judge(
    pairs: Annotated[
        Path,
        typer.Argument(
            help="The answers to judge: a .jsonl file (one object per line with 'prompt' and "
            "'response'; other fields are passed through) or a .csv file ('prompt' and "
            "'response' columns)."
        ),
    ],
    judges: Annotated[
        list[str] | None,
        typer.Option(
            "--judge",
            metavar="<substring|llm>",
            help="substring (default) or llm; repeat for several (verdict and reason are the "
            "first one's, every judge's under 'verdicts').",
        ),
    ] = None,
    judge_model: Annotated[
        str | None,
        typer.Option(
            "--judge-model",
            metavar="SPEC",
            help="Model spec of the llm judge's chat model (e.g. qwen2.5-coder-0.5b).",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Pairs per forward pass of the llm judge.")
    ] = 8,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="File the JSON lines are written to. Default: stdout (judge reads no model, "
            "so it has no runs/<model>/ folder).",
        ),
    ] = None,
    *,
    load: Loader,
) -> None:
    """Judge given answers: one JSON line per (prompt, response) pair, in input order.

    Each line holds the input's fields plus 'verdict' (complies, refuses, evades or
    degenerate) and 'reason'. A one-line summary per judge (verdict counts, the refused share
    with its 95 % Wilson interval) goes to stderr.
    """
    names = check_judges(judges or ["substring"], judge_model)
    check_out(out)
    rows = read_pairs(pairs)
    with contextlib.redirect_stdout(sys.stderr):  # stdout holds the JSON lines only
        judged = {name: run_judge(name, rows, judge_model, load, batch_size) for name in names}
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in judged_rows(rows, judged))
    write_output(text, out)
    for name, results in judged.items():
        typer.echo(summary(name, [v for v, _ in results]), err=True)
    if out is not None:
        typer.echo(f"wrote {len(rows)} verdicts to {out}", err=True)


# --------------------------------------------------------------------------------------------
# Checking the options


def check_judges(names: list[str], judge_model: str | None) -> list[str]:
    """The judges asked for, each once, in order; an unknown or unusable judge fails before
    any file is read or model loaded."""
    names = list(dict.fromkeys(n.strip().lower() for n in names))
    if "score" in names:
        raise RefusalLensError(
            "The score judge cannot judge given answers: it scores the studied model's first "
            "answer token, so it needs the model and a prompt, not a response. Use --judge "
            "substring or --judge llm here, or `refusal-lens score MODEL PROMPTS` for the "
            "score judge."
        )
    unknown = [n for n in names if n not in JUDGES]
    if unknown:
        raise RefusalLensError(
            f"Unknown judge {unknown[0]!r}; use --judge {' or --judge '.join(JUDGES)} "
            "(repeat --judge for several)."
        )
    if "llm" in names and not judge_model:
        raise RefusalLensError(
            "The llm judge needs a chat model to read the answers; pass --judge-model SPEC "
            "(e.g. --judge-model qwen2.5-coder-0.5b)."
        )
    return names


def check_out(out: Path | None) -> None:
    """``--out`` names a file: not a folder."""
    if out is not None and out.is_dir():
        raise RefusalLensError(
            f"--out {out} is a folder; pass a file name, e.g. --out {out / 'verdicts.jsonl'}."
        )


# --------------------------------------------------------------------------------------------
# Reading the pairs


def read_pairs(path: Path) -> list[Row]:
    """The rows of a .jsonl/.json or .csv file, each with string 'prompt' and 'response'."""
    if path.is_dir():
        raise RefusalLensError(f"{path} is a folder; pass a .jsonl or .csv file of pairs.")
    if not path.is_file():
        raise RefusalLensError(f"No such file: {path}; check the path of the pairs file.")
    suffix = path.suffix.lower()
    if suffix not in JSON_SUFFIXES + CSV_SUFFIXES:
        raise RefusalLensError(
            f"Cannot read {path}: the extension {path.suffix or '(none)'!r} is neither .jsonl "
            f"(or .json) nor .csv. Give the file one of these and {_FORMAT}."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RefusalLensError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8.") from None
    rows = _csv_rows(path, text) if suffix in CSV_SUFFIXES else _json_rows(path, text)
    if not rows:
        raise RefusalLensError(f"{path} holds no pairs; give {_FORMAT}.")
    return rows


def _json_rows(path: Path, text: str) -> list[Row]:
    """JSON lines (blank lines skipped); a .json file may also hold one array of objects."""
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RefusalLensError(f"{path} is not a JSON array ({exc}); {_FORMAT}.") from None
        return [_checked(item, f"item {n} of {path}") for n, item in enumerate(items, 1)]
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is JSON text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RefusalLensError(
                f"Line {n} of {path} is not JSON ({exc.msg}, column {exc.colno}); each line "
                "needs one JSON object with 'prompt' and 'response'."
            ) from None
        rows.append(_checked(row, f"line {n} of {path}"))
    return rows


def _csv_rows(path: Path, text: str) -> list[Row]:
    from refusal_lens.prompts.loaders import csv_records

    records, columns = csv_records(path, text)
    missing = [f for f in FIELDS if f not in columns]
    if columns and missing:
        raise RefusalLensError(
            f"{path} has no {missing[0]!r} column (columns: {list(columns)}); add a header "
            "row with 'prompt' and 'response' columns."
        )
    rows = []
    for n, record in enumerate(records, 1):
        if None in record:
            raise RefusalLensError(
                f"Row {n} of {path} has more fields than the header; put fields that hold "
                'commas in double quotes ("...").'
            )
        rows.append(_checked(record, f"row {n} of {path}"))
    return rows


def _checked(row: Any, where: str) -> Row:
    """``row`` if it is an object with string 'prompt' and 'response'."""
    if not isinstance(row, dict):
        raise RefusalLensError(
            f"{where[0].upper()}{where[1:]} is {_json_type(row)}, not an object; "
            "give an object with 'prompt' and 'response'."
        )
    for field in FIELDS:
        value = row.get(field)
        if value is None:
            raise RefusalLensError(
                f"{where[0].upper()}{where[1:]} has no {field!r}; give every pair a 'prompt' "
                "and a 'response' (\"\" for an empty answer)."
            )
        if not isinstance(value, str):
            raise RefusalLensError(
                f"{where[0].upper()}{where[1:]}: {field!r} is {_json_type(value)}, not a "
                "string; give it as text."
            )
    return row


def _json_type(value: Any) -> str:
    """``value``'s JSON type, with its article: 'a number', 'an array'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {list: "an array", dict: "an object"}.get(type(value), "a string")


# --------------------------------------------------------------------------------------------
# Judging


def run_judge(name: str, rows: list[Row], spec: str | None, load: Loader, size: int) -> Judged:
    """(verdict, reason) per row under judge ``name``."""
    responses = [r["response"] for r in rows]
    if name == "substring":
        return substring_verdicts(responses)
    assert spec is not None  # check_judges
    return llm_judge_verdicts([r["prompt"] for r in rows], responses, spec, load, size)


def substring_verdicts(responses: list[str]) -> Judged:
    """The substring judge in each answer's language, after the degeneration detector."""
    from refusal_lens.scoring import judge_text

    return [judge_text(r) for r in responses]


def llm_judge_verdicts(
    prompts: list[str], responses: list[str], spec: str, load: Loader, batch_size: int
) -> Judged:
    """The LLM judge on the answers the degeneration detector passes (the judge model is not
    loaded when it passes none); the label's probability is the reason."""
    from refusal_lens.llm_judge import label_logprobs, labels_of, llm_verdicts
    from refusal_lens.verdicts import degeneration

    broken = [degeneration(r) for r in responses]
    judged = {i: ("degenerate", b) for i, b in enumerate(broken) if b}
    keep = [i for i in range(len(responses)) if i not in judged]
    if keep:
        kept = [responses[i] for i in keep]
        handle = load(spec)
        logprobs = label_logprobs(handle, [prompts[i] for i in keep], kept, batch_size, True)
        verdicts, reasons = llm_verdicts(kept, labels_of(logprobs), logprobs)
        judged.update(zip(keep, zip(verdicts, reasons, strict=True), strict=True))
    return [judged[i] for i in range(len(responses))]


# --------------------------------------------------------------------------------------------
# Output


def judged_rows(rows: list[Row], judged: dict[str, Judged]) -> list[Row]:
    """Each input row with the first judge's ``verdict`` and ``reason`` and, for several
    judges, every judge's under ``verdicts``."""
    first = next(iter(judged))
    out = []
    for i, row in enumerate(rows):
        verdict, reason = judged[first][i]
        extra: Row = {"verdict": verdict, "reason": reason}
        if len(judged) > 1:
            extra["verdicts"] = {
                name: {"verdict": res[i][0], "reason": res[i][1]} for name, res in judged.items()
            }
        out.append({**row, **extra})
    return out


def write_output(text: str, out: Path | None) -> None:
    """``text`` to stdout, or to ``out`` atomically (a temporary sibling renamed into place)."""
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from refusal_lens.artifacts import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")


def summary(name: str, verdicts: list[str]) -> str:
    """``substring: 3 complies, 1 refuses, 0 evades, 1 degenerate; refused 20 % [4–62] of 5``."""
    from refusal_lens.stats import rate_text
    from refusal_lens.verdicts import VERDICTS, shares

    counts = shares(verdicts)
    listed = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    return f"{name}: {listed}; refused {rate_text(counts['refused'], counts['n'])} of {counts['n']}"
