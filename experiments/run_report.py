"""The docs' run tables and report screenshot, read from a run folder of ``refusal-lens run``.

    refusal-lens run                                   # writes runs/smollm2-135m/ (full preset)
    python experiments/run_report.py [--run runs/smollm2-135m] [--out figures]
        [--name report_top.png] [--width 1280] [--height 900]

Writes ``OUT/run.md``: the report's top table (RR and ASR before and after each mitigation,
one table per judge, read from ``09-mitigations/mitigations.json``) and the stage timings,
hardware and library versions (``run.json``); nothing is recomputed. Then writes
``RUN/report.html`` afresh from the run folder that ``refusal-lens run`` left
(``refusal_lens.pipeline.report.write_report``: the page lays out the saved results, it
computes nothing), then opens it in headless Chromium (``tests/browser.py``, Debian's
``chromium``) and saves the top ``width`` × ``height`` pixels as ``OUT/NAME``
(``figures/report_top.png``). ``--smoke``: the report of the synthetic run folder of
``tests/test_report.py`` (``tests/report_fixture.py``, no model), built in a new temporary
folder (see ``common.py``).
"""

from __future__ import annotations

import argparse
import struct
import tempfile
from pathlib import Path

from common import ROOT, add_smoke_flag, load_by_path, parse, project_path, write_text

from refusal_lens.pipeline.report import write_report
from refusal_lens.pipeline.report_summary import read_json, summary_table

DEFAULT_RUN = Path("runs/smollm2-135m")


def browser():
    """``tests/browser.py``: headless Chromium checks and screenshots."""
    return load_by_path("browser", ROOT / "tests" / "browser.py")


def report_fixture():
    """``tests/report_fixture.py``: the synthetic run folder of the report's tests."""
    return load_by_path("report_fixture", ROOT / "tests" / "report_fixture.py")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, from its header."""
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path} is not a PNG")
    return struct.unpack(">II", header[16:24])


def seconds(value: float | None) -> str:
    return f"{value:.0f}" if value else "–"


def markdown(run: Path) -> str:
    """The top table per judge and the stage timings, as Markdown."""
    meta, top = read_json(run / "run.json"), summary_table(run)
    parts = []
    for k, judge in enumerate(top["judges"] if top else []):
        head = ["condition", *(c["label"] for c in top["columns"]), "degenerate", "combined"]
        lines = [f"**judge: {judge}**", "", "| " + " | ".join(head) + " |"]
        lines.append("|---|" + "---:|" * (len(head) - 1))
        for row in top["rows"]:
            cells = [cell[k] for cell in [*row["cells"], row["degenerate"]]]
            mark = " (best)" if row["best"] else ""
            combined = f"{row['combined'][k]:.2f}"
            lines.append(f"| {row['condition']}{mark} | " + " | ".join(cells) + f" | {combined} |")
        parts.append("\n".join(lines))
    stages = ["| stage | status | seconds (when it ran) |", "|---|---|---:|"] + [
        f"| {s['name']} | {s['status']} | {seconds(s['seconds'])} |" for s in meta["stages"]
    ]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    preset = "quick" if meta["config"].get("quick") else "full"
    note = (
        f"`refusal-lens run {meta['model']}` ({preset} preset) on {meta['hardware']}; "
        f"its stages took {sum(s['seconds'] or 0 for s in meta['stages']) / 60:.0f} min "
        f"when they ran; {versions}. Tables by "
        "`python experiments/run_report.py`."
    )
    return "\n\n".join([*parts, "\n".join(stages), note]) + "\n"


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=project_path, default=DEFAULT_RUN, help="the run folder")
    p.add_argument("--out", type=project_path, default=Path("figures"), help="output folder")
    p.add_argument("--name", default="report_top.png", help="file name of the screenshot")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=900)
    add_smoke_flag(p)
    return parse(p)


def main() -> None:
    args = arguments()
    if args.smoke:
        folder = Path(tempfile.mkdtemp(prefix="refusal-lens-report-smoke-"))
        args.run = report_fixture().build_synthetic_run(folder / "run")
    if not (args.run / "run.json").is_file():
        raise SystemExit(
            f"{args.run} is not a run folder (no run.json): make one with "
            f"`refusal-lens run {args.run.name}` first, or give --run."
        )
    check = browser()
    if not check.chromium_available():
        raise SystemExit(
            f"{check.CHROMIUM} is missing: install it with `apt-get install chromium`."
        )
    write_text(args.out / "run.md", markdown(args.run))
    report = write_report(args.run)
    png = check.screenshot(report, args.out / args.name, width=args.width, height=args.height)
    width, height = png_size(png)
    print(f"report: {report}\nscreenshot: {args.out / args.name} ({width}×{height} px)")


if __name__ == "__main__":
    main()
