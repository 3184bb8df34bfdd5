"""The run report: one self-contained HTML page from a run folder ``runs/<model>/``.

>>> write_report("runs/smollm2-135m")            # -> runs/smollm2-135m/report.html

The page is built from what the stages wrote, never from a recomputation: ``run.json`` (config,
versions, hardware, stage timings), each stage folder's ``section.json`` (text, tables,
figures, prompts, token views) and the top table from ``09-mitigations/mitigations.json``
(or, when the mitigations stage did not run, ``02-evaluate/evaluation.json`` as one row).
The template formats numbers (a rate as a percentage) but computes none.

It opens offline: figures are inlined as ``data:`` URIs, circuitsvis's JavaScript bundle is
inlined once (only when a token view needs it), and nothing is loaded from the network.
Every prompt shows the verdict of each judge; a prompt on which they disagree is marked, so a
"not refused" score above an answer that plainly refuses cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from refusal_lens.artifacts import atomic_path
from refusal_lens.attribution.views import circuitsvis_script, colored_tokens_fragment
from refusal_lens.errors import RefusalLensError
from refusal_lens.pipeline.report_summary import read_json, summary_table
from refusal_lens.pipeline.runner import REPORT_FILE, RUN_FILE, SECTION_FILE

TEMPLATE = "report.html.j2"
STAGE_FOLDER = re.compile(r"^\d\d-[\w.-]+$")
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
MINUS = "\u2212"


def load_run(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of ``run_dir``, with a clear error when the folder is not a run folder."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise RefusalLensError(
            f"{run_dir} has no {RUN_FILE}: it is not a run folder of `refusal-lens run`."
        )
    return read_json(path)


def signed(value: float | int | None) -> str:
    """``+0.12`` / ``−0.19`` (a real minus sign); ``–`` for a missing value."""
    return "–" if value is None else f"{value:+.2f}".replace("-", MINUS)


def verdicts_view(verdicts: dict[str, Any] | None) -> dict[str, Any]:
    """Each judge's verdict in order, and whether the judges disagree (with a tooltip)."""
    judges = [
        {"judge": name, "refused": bool(v.get("refused")), "value": v.get("value")}
        for name, v in (verdicts or {}).items()
    ]
    disagree = len({j["refused"] for j in judges}) > 1
    says = ", ".join(
        f"{j['judge']}: {'refused' if j['refused'] else 'not refused'}" for j in judges
    )
    why = (
        f"The judges disagree ({says}). One of them is wrong on this prompt: read the answer."
        if disagree
        else ""
    )
    return {"judges": judges, "disagree": disagree, "why": why}


def prompt_view(prompt: dict[str, Any]) -> dict[str, Any]:
    """A prompt of ``section.json`` for the template (its verdicts resolved)."""
    return {
        "text": prompt.get("text", prompt.get("prompt", "")),
        "answer": prompt.get("answer"),
        "verdicts": verdicts_view(prompt.get("verdicts")),
        "extra": prompt.get("extra") or {},
    }


def tokens_view(tokens: dict[str, Any]) -> dict[str, Any]:
    """The section's token views: one symmetric colour scale ``[-scale, +scale]`` for all."""
    items = tokens.get("items") or []
    scale = tokens.get("scale")
    if scale is None:  # not given: the largest |score| of the section, so nothing saturates
        scale = max((abs(s) for i in items for s in i.get("scores") or []), default=0.0)
    scale = float(scale) or 1.0
    views = []
    for item in items:
        view = prompt_view({"text": item.get("prompt", ""), **item})
        view["refusal_score"] = item.get("refusal_score")
        view["plain_tokens"] = item["tokens"] if item.get("scores") is None else None
        view["note"] = item.get("note")
        view["fragment"] = None
        if item.get("scores") is not None:
            view["fragment"] = Markup(
                colored_tokens_fragment(item["tokens"], item["scores"], scale)
            )
        views.append(view)
    return {
        "method": tokens.get("method"),
        "scale": scale,
        "sign": tokens.get("sign"),
        "items": views,
        "needs_js": any(v["fragment"] is not None for v in views),
    }


def figure_view(stage_dir: Path, figure: dict[str, Any]) -> dict[str, Any]:
    """A figure inlined as a ``data:`` URI (PNG, JPEG, GIF, WebP or SVG), or why it is not."""
    path = stage_dir / figure["file"]
    view = {"file": figure["file"], "caption": figure.get("caption", ""), "src": None}
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        view["problem"] = f"not an image type a page can inline ({path.suffix or 'no suffix'})"
    elif not path.is_file():
        view["problem"] = "the file is missing"
    else:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        view["src"] = f"data:{mime};base64,{data}"
    return view


def table_view(table: dict[str, Any]) -> dict[str, Any]:
    """A table of ``section.json``, its cells shown as written."""
    rows = [[_cell(c) for c in row] for row in table.get("rows") or []]
    return {**table, "columns": table.get("columns") or [], "rows": rows}


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def stage_view(run_dir: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """One stage for the template: its section when the folder has one, else a note."""
    stage_dir = run_dir / name
    view: dict[str, Any] = {
        "name": name,
        "title": entry.get("title") or name,
        "status": entry.get("status"),
        "seconds": entry.get("seconds"),
        "peak_rss_mb": entry.get("peak_rss_mb"),
        "has_folder": stage_dir.is_dir(),
        "section": None,
    }
    path = stage_dir / SECTION_FILE
    if not path.is_file():
        return view
    section = read_json(path)
    view["title"] = section.get("title") or view["title"]
    view["section"] = {
        "text": section.get("text") or [],
        "tables": [table_view(t) for t in section.get("tables") or []],
        "figures": [figure_view(stage_dir, f) for f in section.get("figures") or []],
        "prompts": [prompt_view(p) for p in section.get("prompts") or []],
        "tokens": tokens_view(section["tokens"]) if section.get("tokens") else None,
        "parts": [
            {
                "title": part["title"],
                "text": part.get("text") or [],
                "tables": [table_view(t) for t in part.get("tables") or []],
            }
            for part in section.get("parts") or []
        ],
    }
    return view


def stage_entries(run_dir: Path, run: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The stages of ``run.json`` in order, then any other stage folder with a section."""
    listed = [(s["name"], s) for s in run.get("stages") or []]
    names = {name for name, _ in listed}
    extra = sorted(
        p.name
        for p in run_dir.iterdir()
        if p.is_dir() and STAGE_FOLDER.match(p.name) and p.name not in names
        if (p / SECTION_FILE).is_file()
    )
    return listed + [(name, {"name": name}) for name in extra]


def _pairs(mapping: dict[str, Any] | None, prefix: str = "") -> list[tuple[str, str]]:
    """``(name, shown value)`` rows; a nested mapping (a stage's settings) gives
    ``stage.field`` rows."""
    rows = []
    for k, v in (mapping or {}).items():
        if isinstance(v, dict) and v:
            rows += _pairs(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", _cell(v)))
    return rows


def report_context(run_dir: str | Path) -> dict[str, Any]:
    """Everything the template shows, read from the run folder (no numbers recomputed)."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    stages = [stage_view(run_dir, name, entry) for name, entry in stage_entries(run_dir, run)]
    needs_js = any(
        s["section"] and s["section"]["tokens"] and s["section"]["tokens"]["needs_js"]
        for s in stages
    )
    return {
        "run": run,
        "model": run.get("model") or run_dir.name,
        "summary": summary_table(run_dir),
        "config": _pairs(run.get("config")),
        "model_facts": _pairs(run.get("model_facts")),
        "versions": _pairs(run.get("versions")),
        "stages": stages,
        "bundle": Markup(circuitsvis_script()) if needs_js else None,
    }


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=lambda v: "–" if v is None else f"{100 * v:.0f}%",
        num=lambda v: "–" if v is None else f"{v:.2f}",
        signed=signed,
        secs=lambda v: "–" if v is None else f"{v:.1f} s",
    )
    return env


def render_report(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one self-contained HTML document (nothing written)."""
    return _environment().get_template(TEMPLATE).render(**report_context(run_dir))


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path."""
    path = Path(run_dir) / REPORT_FILE
    page = render_report(run_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
