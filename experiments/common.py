"""Shared edges of the experiment (and benchmark) scripts: arguments, smoke mode, hardware note,
figure and table output.

Paths. Every script works from the project root (:func:`parse` changes into it), so the paths
it records in its artifacts are relative to the project (``../shared/data``, ``figures``) or
as the user gave them, never absolute paths of the machine that ran it. A relative path
argument is read from the folder the command was run in (:func:`project_path`).

Smoke mode. ``--smoke`` runs a script end to end on a tiny random chat model (built once into
the cache by ``tests/tiny_models.py``) with a few prompts and writes to a new temporary folder
unless ``--out`` is given (never into ``figures/``): a check that the script still runs, not a
result. The script's own functions run as usual; only the sizes shrink.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

from refusal_lens.artifacts import atomic_path
from refusal_lens.stats import fisher_exact, rate_text, wilson

ROOT = Path(__file__).resolve().parents[1]
INVOKED_FROM = Path.cwd()  # where the command was run (scripts then work from ROOT)
# The public benchmark files (relative to the project root): $REFUSAL_LENS_DATA, or this
# workspace's shared folder. ``parse`` points the library's data_dir() at --data.
DATA = Path(os.environ.get("REFUSAL_LENS_DATA", "../shared/data"))
FIGURES = Path("figures")
DEFAULT_MODEL = "smollm2-135m"
SMOKE_MODEL = {"n_layers": 4, "max_position_embeddings": 1024}  # room for RASS's few-shot lists


def project_path(value: str) -> Path:
    """A path argument: absolute as given; relative, read from the folder the command was run
    in and written relative to the project root (unchanged when run from the root)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    return Path(os.path.relpath(INVOKED_FROM / path, ROOT))


def beside_project(path: Path) -> Path:
    """An absolute path next to the checkout (``$REFUSAL_LENS_DATA=/…/shared/data``) as
    artifacts record it: relative to the project root (``../shared/data``)."""
    if path.is_absolute() and ROOT.parent.resolve() in path.resolve().parents:
        return Path(os.path.relpath(path.resolve(), ROOT.resolve()))
    return path


def model_spec(value: str) -> str:
    """A model argument: a local path is made :func:`project_path`; names pass unchanged."""
    return str(project_path(value)) if (INVOKED_FROM / value).exists() else value


def parser(doc: str | None, n: int, **extra: float) -> argparse.ArgumentParser:
    """Arguments every experiment takes: model, prompts per set, data and output folders, and
    ``--smoke``; ``extra`` adds one typed option per keyword."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    p.add_argument("--model", type=model_spec, default=DEFAULT_MODEL)
    p.add_argument("--n", type=int, default=n, help="prompts per set (seeded sample)")
    p.add_argument("--data", type=project_path, default=DATA)
    p.add_argument("--out", type=project_path, default=FIGURES)
    for name, default in extra.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    add_smoke_flag(p)
    return p


def add_smoke_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--smoke",
        action="store_true",
        help="run end to end on a tiny random model with a few prompts, writing to a new "
        "temporary folder unless --out is given (a check that the script runs, not a result)",
    )


def parse(
    p: argparse.ArgumentParser,
    argv: list[str] | None = None,
    smoke: dict | None = None,
    smoke_out: str | None = None,
) -> argparse.Namespace:
    """Parse the arguments and change into the project root.

    With ``--smoke``, ``smoke`` replaces the defaults (arguments given explicitly still win),
    ``--model`` defaults to the tiny model (:func:`smoke_model`) and ``--out`` to a new
    temporary folder (or ``smoke_out``, a file name, inside it), and an ``--out`` inside
    ``figures/`` is refused.
    """
    has_model = p.get_default("model") is not None
    known, _ = p.parse_known_args(argv)
    if getattr(known, "smoke", False):
        p.set_defaults(out=None, **({"model": None} if has_model else {}), **(smoke or {}))
    args = p.parse_args(argv)
    os.chdir(ROOT)
    if getattr(args, "data", None) is not None:
        os.environ["REFUSAL_LENS_DATA"] = str(Path(args.data).resolve())
        args.data = beside_project(Path(args.data))
    if args.smoke:
        if args.out is None:
            folder = Path(tempfile.mkdtemp(prefix="refusal-lens-smoke-"))
            args.out = folder / smoke_out if smoke_out else folder
        figures = (ROOT / FIGURES).resolve()
        target = (ROOT / args.out).resolve()
        if target == figures or figures in target.parents:
            p.error(f"--smoke never writes into {FIGURES}/; give another --out.")
        if has_model and args.model is None:
            args.model = smoke_model()
        print(f"smoke mode: model {getattr(args, 'model', '-')}; output in {args.out}")
    return args


def load_by_path(name: str, path: Path) -> ModuleType:
    """Import the file at ``path`` as module ``name`` (once), without putting its folder on
    ``sys.path``."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_models() -> ModuleType:
    """``tests/tiny_models.py``: tiny random chat models of real HF architectures."""
    return load_by_path("tiny_models", ROOT / "tests" / "tiny_models.py")


def smoke_model(family: str = "llama") -> str:
    """A tiny random chat model of ``family`` (:data:`SMOKE_MODEL`), built once into the cache
    (seeded, so every build is the same model); its directory, absolute."""
    from refusal_lens.artifacts import atomic_dir
    from refusal_lens.models import cache_dir

    folder = cache_dir() / "smoke" / f"tiny-{family}-{SMOKE_MODEL['n_layers']}l"
    if not (folder / "config.json").is_file():
        with atomic_dir(folder, marker="config.json") as tmp:
            tiny_models().save_tiny_model(family, tmp, **SMOKE_MODEL)
    return str(folder)


def hardware() -> str:
    """Where a result was made: the processor, the threads and the numeric libraries."""
    from refusal_lens.cache import library_versions

    versions = library_versions()
    libraries = ", ".join(
        f"{name} {versions[name]}" for name in ("torch", "transformers", "transformer-lens")
    )
    n = torch.get_num_threads()
    return f"{platform.machine()} CPU, {n} thread{'s' if n != 1 else ''} ({libraries})"


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(fig, path: Path, tight: bool = True) -> None:
    import matplotlib.pyplot as plt

    from refusal_lens.plots import save_figure as save

    if tight:
        fig.tight_layout()
    save(fig, path, dpi=120)
    plt.close(fig)


# The alignment recipe's sizes in smoke mode: a few prompts, short answers.
SMOKE_ALIGN = dict(n_harmful=8, n_benign=8, answer_tokens=4, batch_size=8)


def organism_config(alpha: float = 0.5, smoke: bool = False, **changes):
    """The project's organism recipe (``AlignConfig.organism``) at ``alpha``; with ``smoke``,
    the same recipe on a few prompts (:data:`SMOKE_ALIGN`)."""
    from refusal_lens.alignment import AlignConfig

    return AlignConfig.organism(alpha, **((SMOKE_ALIGN if smoke else {}) | changes))


def organism(model: str, alpha: float = 0.5, smoke: bool = False, **changes) -> Path:
    """Align ``model`` with :func:`organism_config` (cached); the aligned model's directory."""
    from refusal_lens.alignment import align
    from refusal_lens.models import load_model

    config = organism_config(alpha, smoke, **changes)
    return align(load_model(model, device="cpu"), config).path


def smoke_direction(model, folder: Path) -> Path:
    """Select a refusal direction of ``model`` on a few prompts and save it into ``folder``,
    as ``directions.py`` does into ``figures/direction`` at full size (smoke mode only)."""
    from refusal_lens.directions import SelectConfig
    from refusal_lens.directions.find import DirectionConfig, find_direction

    config = DirectionConfig(harmless="alpaca", n_train=8, n_val=4, select=SelectConfig(top_k=2))
    find_direction(model, config, show_progress=False).save(folder)
    return folder


def smoke_refuser(model):
    """``model`` with 3/5 of its vocabulary counted as refusal openings (smoke mode only): a
    tiny random model refuses nothing, so the steps that need refused prompts would have none;
    its next-token distribution is near uniform, so this way it refuses about every prompt."""
    from dataclasses import replace

    return replace(model, refusal_tokens=list(range(1, 3 * len(model.tokenizer) // 5)))


def share_text(rate: float, n: int) -> str:
    """:func:`~refusal_lens.stats.rate_text` of a share saved without its count: ``k`` is
    ``rate × n``, which must be a whole number (else ``n`` is not the share's denominator)."""
    k = round(rate * n)
    if abs(rate * n - k) > 1e-3:
        raise ValueError(f"a share {rate!r} of {n} is no whole count; wrong n?")
    return rate_text(k, n)


def unpaired_verdict(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05) -> str:
    """Whether ``k1/n1`` is ``higher`` or ``lower`` than ``k2/n2`` (two different samples of
    prompts) by Fisher's exact test at level ``alpha``, or ``not determined``; with its p."""
    p = fisher_exact(k1, n1, k2, n2)
    word = "not determined" if p >= alpha else ("higher" if k1 / n1 > k2 / n2 else "lower")
    return f"{word} (Fisher p = {p:.2g})"


def seed_interval(values: list[float], n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of the mean over seeds of rates on the same ``n`` prompts: the
    seeds share the prompts, so it is the interval of ``n`` prompts at the mean rate (its
    count rounded to a whole prompt)."""
    return wilson(round(statistics.mean(values) * n), n)


def mean_sd(values: list[float], n: int | None = None) -> str:
    """``"41 ± 6"`` (percent); with ``n``, ``"41 ± 6 [29–54]"``: and :func:`seed_interval`."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    text = f"{100 * statistics.mean(values):.0f} ± {100 * sd:.0f}"
    if n is None:
        return text
    lo, hi = seed_interval(values, n)
    return f"{text} [{100 * lo:.0f}–{100 * hi:.0f}]"


def newcombe(pa: float, ia: tuple, pb: float, ib: tuple) -> tuple[float, float]:
    """Newcombe's hybrid score 95 % interval of ``pb − pa`` from the Wilson intervals ``ia``
    and ``ib`` of two independent rates (on paired samples it is conservative)."""
    d = pb - pa
    return d - math.hypot(pb - ib[0], ia[1] - pa), d + math.hypot(ib[1] - pb, pa - ia[0])


def seeds_contrast(a: list[dict], b: list[dict], sets: list[str], judge: str) -> list[str]:
    """Per set, ``b``'s seed mean minus ``a``'s in points with :func:`newcombe`'s interval of
    the two :func:`seed_interval`: ``lower`` or ``higher`` when it excludes 0, else ``not
    determined``."""
    out = []
    for s in sets:
        n = a[0]["sets"][s]["n"]
        ra, rb = ([r["sets"][s][judge] for r in x] for x in (a, b))
        pa, pb = statistics.mean(ra), statistics.mean(rb)
        lo, hi = newcombe(pa, seed_interval(ra, n), pb, seed_interval(rb, n))
        word = "lower" if hi < 0 else "higher" if lo > 0 else "not determined"
        out.append(f"{points(pb - pa)} [{points(lo)}, {points(hi)}]: {word}")
    return out


def points(x: float) -> str:
    """A difference of rates in signed percentage points (a tenth where it rounds to 0)."""
    return f"{100 * x:+.0f}" if abs(100 * x) >= 0.5 else f"{100 * x:+.1f}"


def seeds_table(results: dict[str, list[dict]], judge: str, label: str = "model") -> str:
    """Markdown: one row per condition, mean ± sd over its seeds of RR per benign set, ASR per
    harmful set (each with :func:`seed_interval`) and the combined score (each run an
    ``EvalResult.to_dict()``); with two conditions, a last row of :func:`seeds_contrast`."""
    first = next(iter(results.values()))[0]["sets"]
    benign = [s for s, r in first.items() if r["kind"] == "benign"]
    harmful = [s for s, r in first.items() if r["kind"] == "harmful"]
    head = [label, *(f"RR {s}" for s in benign), *(f"ASR {s}" for s in harmful), "combined"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, runs in results.items():
        n = {s: runs[0]["sets"][s]["n"] for s in benign + harmful}
        cells = [mean_sd([r["sets"][s][judge] for r in runs], n[s]) for s in benign + harmful]
        comb = [r["combined"][judge] for r in runs]
        sd = statistics.stdev(comb) if len(comb) > 1 else 0.0
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {statistics.mean(comb):.2f} ± {sd:.2f} |"
        )
    if len(results) == 2:
        (name_a, a), (name_b, b) = results.items()
        cells = seeds_contrast(a, b, benign + harmful, judge)
        short = [x.split()[0] if x.startswith("(") else x for x in (name_b, name_a)]
        lines.append(f"| {short[0]} against {short[1]} | " + " | ".join(cells) + " | – |")
    return "\n".join(lines)
