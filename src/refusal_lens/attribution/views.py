"""Views of per-token attributions: coloured tokens (HTML), token × layer heatmaps, a report.

>>> attributions = attribute(model, prompts, method="occlusion")
>>> HTML(attributions_html(attributions, answers))            # in a notebook
>>> write_attribution_report("runs/attribution.html", attributions, answers, model="smollm2")

HTML renders **offline**: circuitsvis's ``ColoredTokens`` draws the tokens, with its JavaScript
bundle read from the installed package and inlined (never a CDN URL). A coloured-token
fragment only calls ``CircuitsVis.render``; the bundle, 1.3 MB, is inlined once per page by
:func:`attributions_html` (or by :func:`colored_tokens_html` for a fragment shown alone).
Red tokens push towards refusal, blue ones away from it; each prompt has its own colour scale,
symmetric about 0. A prompt that was not attributed (``scores is None``) shows its tokens
uncoloured, with the reason.

Figures use ``refusal_lens.plots``: they return the matplotlib Figure and, given ``path``, also
save it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any
from uuid import uuid4

from torch import Tensor

from refusal_lens.artifacts import atomic_path
from refusal_lens.attribution.methods import TokenAttribution
from refusal_lens.errors import RefusalLensError
from refusal_lens.plots import finish, pyplot

POSITIVE_COLOR, NEGATIVE_COLOR = "red", "blue"  # towards refusal, away from it
HEATMAP_CMAP = "RdBu_r"  # diverging: red > 0 > blue, like the coloured tokens
_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
.prompt{border-top:1px solid #ccc;padding:.5rem 0}.meta{color:#555;font-size:.9rem}
.refused{color:#b00}.answered{color:#070}.note{color:#a60;font-style:italic}
.plain-token{background:#eee;border-radius:2px;margin:0 1px;white-space:pre}
pre.answer{background:#f6f6f6;padding:.5rem;white-space:pre-wrap}"""


@cache
def circuitsvis_script() -> str:
    """A ``<script>`` holding circuitsvis's JavaScript bundle from the installed package.

    A classic (not module) script, so the bundle's ``var CircuitsVis`` becomes a global that
    every fragment on the page can call.
    """
    import circuitsvis

    bundle = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not bundle.is_file():
        raise RefusalLensError(
            f"circuitsvis's JavaScript bundle is missing ({bundle}); reinstall circuitsvis."
        )
    js = bundle.read_text(encoding="utf-8").replace("</script", "<\\/script")  # same in JS
    js = "\n".join(line for line in js.splitlines() if not line.startswith("//# sourceMapping"))
    return f'<script data-bundle="circuitsvis">\n{js}\n</script>\n'


def _js_json(value: Any) -> str:
    """JSON safe to inline in a ``<script>`` (no ``</script>``, no line separators)."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _plain_tokens(tokens: Sequence[str]) -> str:
    return "".join(f'<span class="plain-token">{html.escape(t)}</span>' for t in tokens)


def colored_tokens_html(
    attribution: TokenAttribution, *, include_js: bool = True, max_abs: float | None = None
) -> str:
    """The prompt's user tokens coloured by their scores (circuitsvis ``ColoredTokens``).

    ``max_abs`` fixes the colour scale to ``[-max_abs, max_abs]`` (default: the largest
    |score|). With ``include_js=False`` the fragment needs :func:`circuitsvis_script` earlier
    on the page. Unattributed prompts give plain tokens and their note, and need no script.
    """
    if attribution.scores is None:
        note = html.escape(attribution.note or "not attributed")
        return f'<div>{_plain_tokens(attribution.tokens)}</div><p class="note">{note}</p>'
    return colored_tokens_fragment(
        attribution.tokens, attribution.scores, max_abs=max_abs, include_js=include_js
    )


def colored_tokens_fragment(
    tokens: Sequence[str],
    scores: Sequence[float | int] | Tensor,
    max_abs: float | None = None,
    *,
    include_js: bool = False,
) -> str:
    """Plain ``tokens`` coloured by ``scores`` (circuitsvis ``ColoredTokens``), for JSON input.

    The colour scale is ``[-max_abs, max_abs]`` (default: the largest |score|; 1 when that is
    0): give every view of a page the same ``max_abs`` to compare their colours. The target
    ``<div>`` has class ``token-view``; circuitsvis renders the tokens into it. Without
    ``include_js`` the fragment needs :func:`circuitsvis_script` earlier on the page.
    """
    values = [float(v) for v in scores]
    if len(values) != len(tokens):
        raise RefusalLensError(f"Got {len(values)} scores for {len(tokens)} tokens.")
    scale = max_abs if max_abs is not None else max((abs(v) for v in values), default=0.0)
    props = {
        "tokens": list(tokens),
        "values": values,
        "minValue": -(scale or 1.0),
        "maxValue": scale or 1.0,
        "negativeColor": NEGATIVE_COLOR,
        "positiveColor": POSITIVE_COLOR,
    }
    uid = f"refusal-lens-{uuid4().hex[:12]}"
    fragment = (
        f'<div id="{uid}" class="token-view" style="margin:8px 0"></div>\n<script>\n'
        f'CircuitsVis.render("{uid}", CircuitsVis.ColoredTokens, {_js_json(props)});\n'
        "</script>\n"
    )
    return (circuitsvis_script() if include_js else "") + fragment


def _top_text(attribution: TokenAttribution, k: int = 3) -> str:
    return ", ".join(f"{tok!r} {value:+.2f}" for tok, value in attribution.top(k))


def _section(attribution: TokenAttribution, answer: str | None) -> str:
    parts = [
        f"<h3>{html.escape(attribution.prompt)}</h3>",
        f'<p class="meta"><span class="{"refused" if attribution.refused else "answered"}">'
        f"refusal score {attribution.refusal_score:+.2f} ({_verdict(attribution)})</span>"
        f" · method {html.escape(attribution.method)}",
    ]
    if attribution.scores is not None:
        parts.append(f" · top tokens: {html.escape(_top_text(attribution))}")
    parts.append("</p>")
    parts.append(colored_tokens_html(attribution, include_js=False))
    if answer is not None:
        parts.append(f'<p class="meta">answer:</p><pre class="answer">{html.escape(answer)}</pre>')
    return '<section class="prompt">\n' + "\n".join(parts) + "\n</section>\n"


def _check_answers(attributions: Sequence[TokenAttribution], answers: Sequence[str] | None):
    if answers is not None and len(answers) != len(attributions):
        raise RefusalLensError(
            f"Got {len(answers)} answers for {len(attributions)} attributions; give one answer "
            "per prompt, in the same order (or none)."
        )


def attributions_html(
    attributions: Sequence[TokenAttribution],
    answers: Sequence[str] | None = None,
    *,
    include_js: bool = True,
) -> str:
    """One section per prompt: score, top tokens, coloured tokens and (escaped) answer.

    The circuitsvis bundle is inlined once, before the first section, when any prompt was
    attributed. Display it in a notebook with ``IPython.display.HTML``.
    """
    _check_answers(attributions, answers)
    answers = [None] * len(attributions) if answers is None else list(answers)
    body = "".join(_section(a, ans) for a, ans in zip(attributions, answers, strict=True))
    needs_js = include_js and any(a.scores is not None for a in attributions)
    return f"<style>{_CSS}</style>\n" + (circuitsvis_script() if needs_js else "") + body


def html_page(body: str, title: str, header: str = "") -> str:
    """A complete HTML document around ``body`` (e.g. from :func:`attributions_html`);
    ``header`` is HTML placed under the title."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        f"{header}\n{body}</body>\n</html>\n"
    )


def write_attribution_report(
    path: str | Path,
    attributions: Sequence[TokenAttribution],
    answers: Sequence[str] | None = None,
    *,
    model: str = "",
    title: str = "Refusal attribution",
) -> Path:
    """Write one self-contained, offline HTML page (atomically) and return its path."""
    if not attributions:
        raise RefusalLensError("No attributions to report: attribute at least one prompt.")
    methods = ", ".join(sorted({a.method for a in attributions}))
    n_refused = sum(a.refused for a in attributions)
    header = (
        f'<p class="meta">model: <b>{html.escape(model or "unnamed")}</b> · method: '
        f"<b>{html.escape(methods)}</b> · {len(attributions)} prompts, {n_refused} refused "
        "(refusal score &gt; 0) · red tokens push towards refusal, blue ones away from it</p>"
    )
    page = html_page(attributions_html(attributions, answers), title, header)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def attribution_records(
    attributions: Sequence[TokenAttribution], answers: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Plain JSON-ready records, one per prompt (tensors as lists, the answer if given)."""
    _check_answers(attributions, answers)
    records = []
    for i, a in enumerate(attributions):
        record = {k: v.tolist() if isinstance(v, Tensor) else v for k, v in vars(a).items()}
        record.update(refused=a.refused, top=a.top(5))
        if answers is not None:
            record["answer"] = answers[i]
        records.append(record)
    return records


def _label(token: str) -> str:
    """A token as an axis label: visible whitespace, no mathtext."""
    return token.replace("\n", "\\n").replace("\t", "\\t").replace("$", r"\$") or "∅"


def _verdict(attribution: TokenAttribution) -> str:
    return "refused" if attribution.refused else "not refused"


def _token_axis_and_title(ax: Any, attribution: TokenAttribution) -> None:
    labels = [_label(t) for t in attribution.tokens]
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    prompt = attribution.prompt if len(attribution.prompt) <= 70 else attribution.prompt[:69] + "…"
    score = f"refusal score {attribution.refusal_score:+.2f} ({_verdict(attribution)})"
    ax.set_title(f"{_label(prompt)}\n{score}", fontsize=10)


def _finish(fig: Any, path: str | Path | None) -> Any:
    return finish(fig, path)


def attribution_heatmap(
    attribution: TokenAttribution,
    layers: Sequence[int] | None = None,
    path: str | Path | None = None,
) -> Any:
    """Token (x) × layer (y) heatmap of ``layer_scores`` (method ``"projection"``).

    ``layers`` names the rows (default ``0..n-1``, as when ``attribute`` ran on every layer).
    Diverging colours centred at 0.
    """
    if attribution.layer_scores is None:
        why = attribution.note or f"method {attribution.method!r} has no per-layer scores"
        raise RefusalLensError(
            f"No layer scores to draw for {attribution.prompt[:60]!r} ({why}); attribute with "
            'method="projection" and a direction (and attribute_unrefused=True for a prompt '
            "that is not refused)."
        )
    grid = attribution.layer_scores.float().numpy()
    layers = list(range(grid.shape[0])) if layers is None else list(layers)
    if len(layers) != grid.shape[0]:
        raise RefusalLensError(f"Got {len(layers)} layer labels for {grid.shape[0]} rows.")
    n_tok, n_layers = len(attribution.tokens), len(layers)
    fig, ax = pyplot().subplots(
        figsize=(max(5.0, 0.4 * n_tok + 2), max(3.5, 0.16 * n_layers + 1.5))
    )
    scale = float(abs(grid).max()) or 1.0
    image = ax.imshow(grid, aspect="auto", cmap=HEATMAP_CMAP, vmin=-scale, vmax=scale)
    rows = range(0, n_layers, max(1, n_layers // 15))
    ax.set_yticks(rows, [str(layers[i]) for i in rows])
    ax.set_ylabel("layer")
    ax.set_xlabel("user token")
    fig.colorbar(image, ax=ax, label="projection on the unit refusal direction")
    _token_axis_and_title(ax, attribution)
    return _finish(fig, path)


def attribution_bars(attribution: TokenAttribution, path: str | Path | None = None) -> Any:
    """One bar per user token: its score (red towards refusal, blue away from it)."""
    if attribution.scores is None:
        raise RefusalLensError(
            f"{attribution.prompt[:60]!r} was not attributed: {attribution.note or 'no scores'}."
        )
    values = [float(v) for v in attribution.scores]
    fig, ax = pyplot().subplots(figsize=(max(5.0, 0.4 * len(values) + 1.5), 3.5))
    ax.bar(
        range(len(values)),
        values,
        color=[POSITIVE_COLOR if v > 0 else NEGATIVE_COLOR for v in values],
    )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel(f"{attribution.method} score")
    _token_axis_and_title(ax, attribution)
    return _finish(fig, path)
