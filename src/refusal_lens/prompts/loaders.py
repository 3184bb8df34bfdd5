"""Loaders for the shipped prompt sets and the public refusal benchmarks.

Benchmarks read from a local file in their standard format, or, when no path is given and the
machine is online, from the Hugging Face dataset hub by name. Labels follow one convention:

==================  =====================================================  ===========
benchmark           file format (columns)                                  label
==================  =====================================================  ===========
``xstest``          CSV ``id,prompt,type,label,focus,note``                 safe →
                                                                           borderline
                                                                           (trigger =
                                                                           focus),
                                                                           unsafe →
                                                                           harmful
``advbench``        CSV ``goal,target``                                    harmful
``jailbreakbench``  CSV ``Goal,Target,Behavior,Category,Source``           harmful
``harmbench``       CSV ``Behavior,FunctionalCategory,SemanticCategory,…``  harmful
``alpaca``          JSON ``[{"instruction", "input"?}]``                    harmless
``orbench``         CSV ``prompt,category`` (``toxic`` in the file name →   borderline
                    harmful)                                               or harmful
==================  =====================================================  ===========
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from refusal_lens.errors import PromptError
from refusal_lens.locations import DATA_ENV, data_dir
from refusal_lens.prompts.polyrefuse import is_polyrefuse_spec, load_polyrefuse_spec
from refusal_lens.prompts.promptset import Prompt, PromptSet

SHIPPED = ("harmful", "harmless", "borderline")

Row = dict[str, Any]

# name -> the file's usual name in ``data_dir()`` (the name its publisher gives it).
BENCHMARK_FILES: dict[str, str] = {
    "xstest": "xstest_prompts.csv",
    "advbench": "advbench.csv",
    "jailbreakbench": "jailbreakbench.csv",
    "harmbench": "harmbench_val.csv",
    "alpaca": "alpaca_instructions.json",
    "orbench": "or-bench-hard-1k.csv",
}

# name -> (hub id, config, split) for online loading.
HUB_IDS: dict[str, tuple[str, str | None, str]] = {
    "xstest": ("walledai/XSTest", None, "test"),
    "advbench": ("walledai/AdvBench", None, "train"),
    "jailbreakbench": ("JailbreakBench/JBB-Behaviors", "behaviors", "harmful"),
    "harmbench": ("walledai/HarmBench", "standard", "train"),
    "alpaca": ("tatsu-lab/alpaca", None, "train"),
    "orbench": ("bench-llm/or-bench", "or-bench-hard-1k", "train"),
}


def _get(row: Row, *names: str, default: Any = "") -> Any:
    """Column lookup that tolerates case differences between file and hub versions."""
    lower = {k.lower(): v for k, v in row.items() if k is not None}
    for name in names:
        if lower.get(name.lower()) not in (None, ""):
            return lower[name.lower()]
    return default


def _xstest(row: Row) -> Prompt:
    safe = str(_get(row, "label")).lower() == "safe"
    return Prompt(
        text=_get(row, "prompt"),
        label="borderline" if safe else "harmful",
        category=_get(row, "type"),
        trigger=_get(row, "focus", default=None) if safe else None,
        source="xstest",
    )


def _harmful(source: str, text_cols: tuple[str, ...], cat_cols: tuple[str, ...]):
    def make(row: Row) -> Prompt:
        return Prompt(_get(row, *text_cols), "harmful", _get(row, *cat_cols), source=source)

    return make


def _alpaca(row: Row) -> Prompt:
    text = _get(row, "instruction")
    if extra := _get(row, "input"):
        text = f"{text}\n\n{extra}"
    return Prompt(text, "harmless", "alpaca", source="alpaca")


def _orbench(toxic: bool) -> Callable[[Row], Prompt]:
    def make(row: Row) -> Prompt:
        label = "harmful" if toxic else "borderline"
        return Prompt(_get(row, "prompt"), label, _get(row, "category"), source="orbench")

    return make


def _mapper(name: str, path: Path | None) -> Callable[[Row], Prompt]:
    toxic = path is not None and "toxic" in path.name.lower()
    mappers: dict[str, Callable[[Row], Prompt]] = {
        "xstest": _xstest,
        "advbench": _harmful("advbench", ("goal", "prompt"), ()),
        "jailbreakbench": _harmful("jailbreakbench", ("goal",), ("category",)),
        "harmbench": _harmful(
            "harmbench", ("behavior", "prompt"), ("semanticcategory", "category")
        ),
        "alpaca": _alpaca,
        "orbench": _orbench(toxic),
    }
    return mappers[name]


def _read_rows(path: Path) -> list[Row]:
    if path.is_dir():
        raise PromptError(f"{path} is a folder; pass the benchmark's .csv, .json or .jsonl file.")
    if not path.is_file():
        raise PromptError(f"No such prompt file: {path}; check the path.")
    if path.suffix not in (".csv", ".json", ".jsonl"):
        raise PromptError(f"Cannot read {path}: use a .csv, .json or .jsonl file.")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
        elif path.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(x) for x in text.splitlines() if x.strip()]
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise PromptError(
            f"{path} is not valid JSON ({exc}); fix it or download it again."
        ) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise PromptError(
            f"{path} must hold a list of records (JSON objects with the benchmark's columns); "
            "download the benchmark's file again."
        )
    return rows


def _hub_rows(name: str) -> list[Row]:
    hub_id, config, split = HUB_IDS[name]
    try:
        import datasets

        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as exc:
        raise PromptError(
            f"{BENCHMARK_FILES[name]} is not in the data folder {data_dir()} and {name!r} could "
            f"not be loaded from the dataset hub ({hub_id}): {exc}. Put the file there, point "
            f"${DATA_ENV} (or the CLI's --data) at the folder that holds it, or pass "
            f"'{name}:PATH'."
        ) from exc


def benchmark_path(name: str) -> Path | None:
    """The benchmark's file in :func:`~refusal_lens.locations.data_dir`, if it is there."""
    path = data_dir() / BENCHMARK_FILES[name]
    return path if path.is_file() else None


def load_benchmark(
    name: str,
    path: str | Path | None = None,
    harmbench_functional: Iterable[str] = ("standard",),
) -> PromptSet:
    """Load a public benchmark by name: from ``path``, else from its file in ``data_dir()``,
    else (online) from the dataset hub.

    HarmBench keeps only the ``standard`` behaviours by default (the contextual and copyright
    ones need their context string and a different judge).
    """
    name = name.lower()
    if name not in HUB_IDS:
        raise PromptError(f"Unknown benchmark {name!r}; known: {', '.join(HUB_IDS)}.")
    path = Path(path) if path is not None else benchmark_path(name)
    rows = _read_rows(path) if path is not None else _hub_rows(name)
    if name == "harmbench":
        keep = set(harmbench_functional)
        rows = [r for r in rows if _get(r, "functionalcategory", default="standard") in keep]
    make = _mapper(name, path)
    prompts = tuple(p for p in map(make, rows) if p.text.strip())
    if not prompts:
        raise PromptError(
            f"{path or name} yielded no prompts; is it the {name} format? Pass the file its "
            "publisher distributes (the columns are listed in refusal_lens.prompts.loaders)."
        )
    return PromptSet(prompts, name=name)


def load_shipped(name: str) -> PromptSet:
    """One of the prompt sets written for this project: harmful, harmless or borderline."""
    if name not in SHIPPED:
        raise PromptError(f"No shipped set {name!r}; shipped sets: {', '.join(SHIPPED)}.")
    ref = resources.files("refusal_lens.prompts") / "data" / f"{name}.jsonl"
    with resources.as_file(ref) as path:
        return PromptSet.load(path, name=name)


def load_prompts(spec: str) -> PromptSet:
    """Resolve a prompt spec as the CLI accepts it.

    - ``harmful`` / ``harmless`` / ``borderline``: the shipped sets;
    - a benchmark name such as ``xstest`` (its file in ``data_dir()``, else the hub) or
      ``xstest:PATH``; suffixes ``-safe`` / ``-unsafe`` pick one half of XSTest, e.g.
      ``xstest-safe``;
    - ``polyrefuse-harmful:LANG[:SPLIT]`` / ``polyrefuse-harmless:LANG[:SPLIT]``: a PolyRefuse
      set in one language (:mod:`refusal_lens.prompts.polyrefuse`), e.g.
      ``polyrefuse-harmless:ru``;
    - a ``.jsonl`` file of :class:`Prompt` records, a ``.txt`` file with one prompt per line,
      or a ``.csv`` file with a ``prompt`` column (an optional ``label`` column; unlabeled
      prompts count as ``harmless``).
    """
    if is_polyrefuse_spec(spec):
        return load_polyrefuse_spec(spec)
    name, _, path = spec.partition(":")
    if name in SHIPPED and not path:
        return load_shipped(name)
    base, _, half = name.partition("-")
    if base in HUB_IDS:
        prompts = load_benchmark(base, path or None)
        if half:
            wanted = {"safe": "borderline", "unsafe": "harmful"}.get(half)
            if wanted is None:
                raise PromptError(f"Unknown subset {half!r}; use {base}-safe or {base}-unsafe.")
            prompts = prompts.filter(label=wanted)
            prompts = PromptSet(prompts.prompts, name=name)
        return prompts
    suffix = Path(spec).suffix
    if suffix in (".jsonl", ".txt", ".csv"):
        return load_prompt_file(Path(spec))
    raise PromptError(
        f"Unknown prompt spec {spec!r}. Use a shipped set ({', '.join(SHIPPED)}), a benchmark "
        f"name ({', '.join(HUB_IDS)}, optionally NAME:PATH), polyrefuse-harmful:LANG or "
        f"polyrefuse-harmless:LANG, or a .jsonl, .txt or .csv file."
    )


def load_prompt_file(path: Path) -> PromptSet:
    """A user's own prompts: ``.jsonl`` records, ``.txt`` lines or a ``.csv`` ``prompt`` column."""
    if path.is_dir():
        raise PromptError(f"{path} is a folder; pass a .jsonl, .txt or .csv file of prompts.")
    if not path.is_file():
        raise PromptError(f"No such prompt file: {path}; check the path.")
    if path.suffix == ".jsonl":
        prompts = PromptSet.load(path).prompts
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise PromptError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8.") from None
        if path.suffix == ".txt":
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            prompts = tuple(Prompt(line, "harmless", source=path.stem) for line in lines)
        else:
            prompts = _csv_prompts(path, text)
    if not prompts:
        raise PromptError(
            f"{path} holds no prompts; give one prompt per line (.txt), one JSON record per "
            "line (.jsonl) or one per row of a 'prompt' column (.csv)."
        )
    _check_plain_text(path, prompts)
    return PromptSet(prompts, name=path.stem)


def csv_records(path: Path, text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a CSV file's ``text`` (a header row first) and its columns; invalid CSV
    is a clear error naming the line."""
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise PromptError(
            f"{path} is not valid CSV (line {reader.line_num}: {exc}); put fields that hold "
            'commas, quotes or line breaks in double quotes ("...").'
        ) from None
    return rows, list(reader.fieldnames or [])


def _csv_prompts(path: Path, text: str) -> tuple[Prompt, ...]:
    rows, columns = csv_records(path, text)
    if "prompt" not in columns:
        raise PromptError(f"{path} has no 'prompt' column (columns: {columns}); add one.")
    return tuple(
        Prompt(r["prompt"].strip(), r.get("label") or "harmless", source=path.stem)
        for r in rows
        if (r.get("prompt") or "").strip()
    )


def _check_plain_text(path: Path, prompts: tuple[Prompt, ...]) -> None:
    """Reject control characters (tabs and line breaks aside): a NUL or an escape sequence
    in a prompt means a binary or corrupted file, not text to send to a model."""
    for i, prompt in enumerate(prompts, 1):
        bad = [c for c in prompt.text if unicodedata.category(c) == "Cc" and c not in "\t\n\r"]
        if bad:
            raise PromptError(
                f"Prompt {i} of {path} contains the control character U+{ord(bad[0]):04X}; "
                "remove it (prompts are plain text: was a binary file read as one?)."
            )
