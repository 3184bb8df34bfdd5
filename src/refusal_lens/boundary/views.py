"""Figures of the layer-wise boundary (:mod:`refusal_lens.boundary.geometry`).

One colour per group in every figure: harmful red, harmless blue, borderline prompts the model
refuses orange, borderline prompts it answers green. Each function returns the Figure and,
given ``path``, saves it atomically.

>>> plot_boundary_grid(geo, layers=[4, 10, 16, 22], path="runs/geometry/grid.png")
>>> plot_margins(geo, path="runs/geometry/margins.png")
>>> plot_probe_accuracy(geo, path="runs/geometry/probe_accuracy.png")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from refusal_lens.boundary.geometry import Geometry
from refusal_lens.plots import finish, pyplot

COLORS = {
    "harmful": "#d62728",
    "harmless": "#1f77b4",
    "borderline, refused": "#ff7f0e",
    "borderline, answered": "#2ca02c",
}


def groups(geo: Geometry) -> dict[str, tuple[str, torch.Tensor]]:
    """Group name -> (prompt set, row mask), in the legend's order."""
    n_h, n_b = len(geo.texts["harmful"]), len(geo.texts["harmless"])
    return {
        "harmful": ("harmful", torch.ones(n_h, dtype=torch.bool)),
        "harmless": ("harmless", torch.ones(n_b, dtype=torch.bool)),
        "borderline, refused": ("borderline", geo.refused),
        "borderline, answered": ("borderline", ~geo.refused),
    }


def default_panels(geo: Geometry, n: int = 6) -> list[int]:
    """``n`` layers spread evenly over those read, the last included."""
    if len(geo.layers) <= n:
        return list(geo.layers)
    picks = {round(i * (len(geo.layers) - 1) / (n - 1)) for i in range(n)}
    return [geo.layers[i] for i in sorted(picks)]


def _draw_line(ax: Any, line: Sequence[float], xs: torch.Tensor, ys: torch.Tensor) -> None:
    """Draw ``A·u + B·v + C = 0`` clipped to the points' box."""
    a, b, c = (float(v) for v in line)
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    if abs(b) > 1e-9 * max(abs(a), 1e-30):
        u = torch.linspace(x0, x1, 50)
        v = -(a * u + c) / b
        keep = (v >= y0 - 0.1 * (y1 - y0)) & (v <= y1 + 0.1 * (y1 - y0))
        ax.plot(u[keep], v[keep], "k--", lw=1.2, label="probe boundary")
    elif abs(a) > 0:
        ax.axvline(-c / a, color="k", ls="--", lw=1.2, label="probe boundary")


def plot_boundary_grid(
    geo: Geometry,
    layers: Sequence[int] | None = None,
    path: str | Path | None = None,
    cols: int = 3,
) -> Any:
    """One panel per layer: every prompt in the (refusal direction, top PC of the rest) plane,
    with the trace of that layer's probe boundary and its held-out accuracy."""
    plt = pyplot()
    layers = list(layers) if layers is not None else default_panels(geo)
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, layer in zip(axes.flat, layers, strict=False):
        i = geo.layer_index(layer)
        everything = torch.cat([v[:, i] for v in geo.view.values()])
        for name, (kind, mask) in groups(geo).items():
            pts = geo.view[kind][mask, i]
            ax.scatter(pts[:, 0], pts[:, 1], s=9, alpha=0.6, color=COLORS[name], label=name)
        _draw_line(ax, geo.lines[i].tolist(), everything[:, 0], everything[:, 1])
        ax.set_title(f"layer {layer} · probe acc {float(geo.accuracy[i]):.2f}", fontsize=10)
        ax.set_xlabel("projection on refusal direction")
        ax.set_ylabel("top PC of the rest")
    for ax in list(axes.flat)[len(layers) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, frameon=False)
    fig.suptitle(f"Safety boundary by layer: {geo.model}", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return finish(fig, path, tight=False)


def plot_margins(geo: Geometry, path: str | Path | None = None) -> Any:
    """Margin to the boundary against layer: the median (line) and interquartile band of the
    refused and the answered borderline prompts, with the two classes' medians for scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (kind, mask) in groups(geo).items():
        m = geo.margin[kind][mask]
        if m.shape[0] == 0:
            continue
        q = torch.quantile(m, torch.tensor([0.25, 0.5, 0.75]), dim=0)
        borderline = kind == "borderline"
        style = dict(color=COLORS[name], lw=2 if borderline else 1, ls="-" if borderline else ":")
        ax.plot(geo.layers, q[1], label=f"{name} (n={m.shape[0]})", **style)
        if borderline:
            ax.fill_between(geo.layers, q[0], q[2], color=COLORS[name], alpha=0.2)
    ax.axhline(0, color="k", lw=1, ls="--", label="boundary")
    ax.set_xlabel("layer")
    ax.set_ylabel("margin (+ harmful side; class means ≈ ±1)")
    ax.set_title("Where borderline prompts sit: median and interquartile range")
    ax.legend(fontsize=8, loc="best")
    return finish(fig, path)


def plot_probe_accuracy(geo: Geometry, path: str | Path | None = None) -> Any:
    """Held-out probe accuracy and the borderline share on the harmful side, by layer."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(geo.layers, geo.accuracy, "k-o", ms=3, label="probe accuracy (held out)")
    rows = geo.summary()
    for key, name in (
        ("refused_harmful_share", "borderline, refused"),
        ("answered_harmful_share", "borderline, answered"),
    ):
        ys = [r[key] if r[key] is not None else float("nan") for r in rows]
        ax.plot(geo.layers, ys, "-", color=COLORS[name], label=f"{name}: share on harmful side")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction")
    ax.set_title("Harmful-vs-harmless probe by layer")
    ax.legend(fontsize=8, loc="lower right")
    return finish(fig, path)


def write_geometry_figures(geo: Geometry, out: str | Path, layers: Sequence[int] | None = None):
    """The three figures into folder ``out``: grid.png, margins.png, probe_accuracy.png."""
    plt = pyplot()
    out = Path(out)
    paths = []
    for name, fn in (
        ("grid", lambda p: plot_boundary_grid(geo, layers, p)),
        ("margins", lambda p: plot_margins(geo, p)),
        ("probe_accuracy", lambda p: plot_probe_accuracy(geo, p)),
    ):
        fig = fn(out / f"{name}.png")
        plt.close(fig)
        paths.append(out / f"{name}.png")
    return paths


def plot_rass_margins(result: Any, path: str | Path | None = None) -> Any:
    """Histogram of the screened RASS candidates' margins, one line per steering coefficient
    (and one for trigger recombinations), with the selection band shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    scored = [c for c in result.candidates if "margin" in c.scores]
    lines: dict[str, list[float]] = {}
    for c in sorted(scored, key=lambda c: (c.method, c.coef or 0.0)):
        label = f"steer coef {c.coef:g}" if c.method == "steer" else "trigger recombination"
        lines.setdefault(label, []).append(c.scores["margin"])
    for label, m in lines.items():
        ax.hist(m, bins=30, range=(-2.5, 2.5), histtype="step", lw=1.5, label=label)
    band = result.config.band
    ax.axvspan(-band, band, color="grey", alpha=0.15, label=f"selection band ±{band:g}")
    ax.axvline(0, color="k", ls="--", lw=1)
    layer = scored[0].scores["layer"] if scored else "?"
    ax.set_xlabel(f"margin at layer {layer} (+ harmful side; class means ≈ ±1)")
    ax.set_ylabel("candidates")
    ax.set_title("RASS candidates (after the screen) by steering coefficient")
    ax.legend(fontsize=7)
    return finish(fig, path)
