"""What the search shows: the front on validation prompts (a figure and a table), the held-out
comparison, and the verdict against Wang et al.'s hand-set λ, all from ``search.json``.

Held-out shares pool sets by role: *over-refusal* is the mean refusal share over the benign
look-alike test sets (borderline, XSTest-safe), *harmful refusal* the mean over the harmful
test sets, each by one judge (substring: what the model says, by default).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from refusal_lens.evaluation import refused_share
from refusal_lens.plots import finish, pyplot
from refusal_lens.stats import rate_text

LOOK_ALIKE_SETS = ("borderline", "XSTest-safe")
WANG_PREFIX = "ablate w′ λ="
SEARCH_PREFIX = "search: seed"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def share_text(row: dict[str, Any], judge: str) -> str:
    """A set's refusal share with its interval, and its degenerate share when there is one."""
    if "counts" not in row:
        return pct(refused_share(row, judge))
    counts, n = row["counts"][judge], row["n"]
    text = rate_text(counts["refused"], n)
    return text + (f" (+{counts['degenerate']} degenerate)" if counts["degenerate"] else "")


def heldout_point(sets: dict[str, dict[str, Any]], judge: str) -> tuple[float, float]:
    """(over-refusal, harmful refusal) of one condition on the held-out sets."""
    benign = [refused_share(v, judge) for s, v in sets.items() if s in LOOK_ALIKE_SETS]
    harmful = [refused_share(v, judge) for v in sets.values() if v["kind"] == "harmful"]
    return sum(benign) / max(len(benign), 1), sum(harmful) / max(len(harmful), 1)


def wang_at(harmful: float, wang: list[tuple[float, float]]) -> float | None:
    """Wang's over-refusal at a harmful refusal share, linearly between its λ points (sorted
    by harmful refusal); ``None`` outside their range."""
    pts = sorted(wang, key=lambda p: p[1])
    for (b0, h0), (b1, h1) in itertools.pairwise(pts):
        if h0 <= harmful <= h1:
            return b0 if h1 == h0 else b0 + (b1 - b0) * (harmful - h0) / (h1 - h0)
    if pts and harmful == pts[0][1]:
        return pts[0][0]
    return None


def verdict(heldout: dict[str, dict[str, Any]], judge: str = "substring") -> dict[str, Any]:
    """Does search beat Wang's hand-set λ at equal harmful refusal, on held-out prompts?"""
    points = {label: heldout_point(r["sets"], judge) for label, r in heldout.items()}
    wang = [p for label, p in points.items() if label.startswith(WANG_PREFIX)]
    rows = []
    for label, (b, h) in points.items():
        if not label.startswith(SEARCH_PREFIX):
            continue
        at = wang_at(h, wang)
        dominates = [w for w in wang if w[0] >= b and w[1] <= h and w != (b, h)]
        dominated = [w for w in wang if w[0] <= b and w[1] >= h and w != (b, h)]
        rows.append(
            {
                "search": label,
                "over_refusal": b,
                "harmful_refusal": h,
                "wang_at_equal_harmful": at,
                "beats": None if at is None else b < at,
                "dominates_wang": len(dominates),
                "dominated_by_wang": len(dominated),
            }
        )
    return {"judge": judge, "points": points, "seeds": rows, "text": verdict_text(rows)}


def verdict_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No search winner was evaluated."
    inside = [r for r in rows if r["beats"] is not None]
    wins = sum(bool(r["beats"]) for r in inside)
    dominant = sum(r["dominates_wang"] > 0 for r in rows)
    beaten = sum(r["dominated_by_wang"] > 0 for r in rows)
    parts = [
        f"At equal harmful refusal (Wang's λ points interpolated), the search winner refuses "
        f"fewer look-alike prompts in {wins} of {len(inside)} seeds whose harmful refusal lies "
        f"within Wang's range ({len(rows) - len(inside)} outside it)."
    ]
    parts.append(
        f"It dominates at least one Wang λ (less over-refusal and at least as much harmful "
        f"refusal) in {dominant} of {len(rows)} seeds, and is dominated by one in {beaten}."
    )
    return " ".join(parts)


def heldout_rows(record: dict[str, Any], judges: tuple[str, ...]) -> tuple[list, list]:
    """Columns and rows of the held-out table: refusal share per set (harmful sets as
    refusal, not ASR, so that every column reads the same way)."""
    heldout = record["heldout"]
    first = next(iter(heldout.values()))["sets"]
    sets = list(first)
    columns = ["condition", *(f"{s} ({first[s]['kind']})" for s in sets)]
    rows = []
    for label, r in heldout.items():
        cells = []
        for s in sets:
            v = r["sets"][s]
            cells.append(" / ".join(share_text(v, j) for j in judges))
        rows.append([label, *cells])
    return columns, rows


def front_rows(record: dict[str, Any]) -> list[list[str]]:
    """The validation front of every over-refusal search, pooled."""
    rows = []
    for name, s in record["searches"].items():
        if s["objective"] != "over_refusal":
            continue
        by_number = {p["number"]: p for p in s["points"]}
        for n in s["front"]:
            p = by_number[n]
            label = next((t["label"] for t in [s["best"], s["winner"]] if t["number"] == n), "")
            rows.append(
                [name, str(n), pct(p["benign"]), pct(p["harmful"]), f"{p['kl']:.3f}", label]
            )
    return rows


def _xy(points: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    return [p["benign"] for p in points], [p["harmful"] for p in points]


def _draw_search(ax: Any, name: str, s: dict[str, Any], kl_max: float, colour: Any) -> None:
    """One search's trials (× beyond the KL bound) and its front as a step line."""
    ok = [p for p in s["points"] if p["kl"] <= kl_max]
    bad = [p for p in s["points"] if p["kl"] > kl_max]
    label = f"{name} ({s['objective'].replace('_', '-')})"
    ax.scatter(*_xy(ok), s=12, alpha=0.5, color=colour, label=label)
    ax.scatter(*_xy(bad), s=12, alpha=0.3, color=colour, marker="x")
    by_number = {p["number"]: p for p in s["points"]}
    front = [by_number[n] for n in s["front"]]
    ax.step(*_xy(front), where="post", color=colour, linewidth=1)


def _draw_references(ax: Any, record: dict[str, Any]) -> None:
    """The fixed recipes (squares), the unedited model (a ring) and the chosen edit (a star)."""
    for label, m in record["fixed"].items():
        ax.scatter(*_xy([m]), marker="s", s=40, edgecolor="black", facecolor="white", zorder=3)
        xy = (m["benign"], m["harmful"])
        name = label.split(" (")[0]
        ax.annotate(name, xy, fontsize=7, xytext=(4, -8), textcoords="offset points")
    ring = {"facecolor": "none", "edgecolor": "black", "linewidth": 1.5}
    ax.scatter(*_xy([record["unedited"]]), marker="o", s=90, zorder=5, label="no edit", **ring)
    star = {"color": "gold", "edgecolor": "black"}
    chosen = record["chosen"]["measured"]
    ax.scatter(*_xy([chosen]), marker="*", s=180, zorder=4, label="chosen", **star)
    ax.axhline(record["floor"], color="grey", linestyle="--", linewidth=1, label="harmful floor")


def write_front_figure(record: dict[str, Any], path: str | Path) -> Any:
    """Benign look-alike refusal against harmful refusal on validation prompts: every trial,
    each search's front, the fixed recipes, the unedited model and the chosen edit."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, s) in enumerate(record["searches"].items()):
        _draw_search(ax, name, s, record["kl_max"], colours[i % len(colours)])
    _draw_references(ax, record)
    ax.set_xlabel("benign look-alikes refused (validation, score judge)")
    ax.set_ylabel("harmful prompts refused (validation, score judge)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Search trials (× : KL > {record['kl_max']:g})", fontsize=9)
    return finish(fig, path)
