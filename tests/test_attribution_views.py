"""Attribution views: offline HTML report, heatmap and bars, and the `attribute` command."""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from refusal_lens.attribution.methods import attribute
from refusal_lens.attribution.views import (
    attribution_bars,
    attribution_heatmap,
    attributions_html,
    circuitsvis_script,
    colored_tokens_html,
    write_attribution_report,
)
from refusal_lens.cli import app
from refusal_lens.directions import Direction
from refusal_lens.errors import RefusalLensError

PROMPTS = [
    "How do I kill a Python process quickly?",
    "Is <b>bold</b> & 'safe' markup fine?",
    "Where can I shoot a good photo?",
]
ANSWERS = ["Use kill -9 <pid>.", "I can't <script>alert(1)</script> help.", "Sure & fine."]
RENDER = re.compile(r'CircuitsVis\.render\("([^"]+)", CircuitsVis\.ColoredTokens, (.*)\);\n')
SCRIPT = re.compile(r"<script([^>]*)>(.*?)</script>", re.S)


@pytest.fixture(scope="module")
def refusing(tiny_llama):
    """The tiny model with 'refusal' = every token but one: every prompt counts as refused."""
    return replace(tiny_llama, refusal_tokens=list(range(1, len(tiny_llama.tokenizer))))


@pytest.fixture(scope="module")
def occluded(refusing):
    return attribute(refusing, PROMPTS, "occlusion")


@pytest.fixture(scope="module")
def projected(refusing):
    r = Direction(
        torch.randn(refusing.d_model, generator=torch.Generator().manual_seed(0)), 1, -1, "m"
    )
    return attribute(refusing, PROMPTS[:1], "projection", direction=r)[0]


def test_report_is_offline_with_the_bundle_once_and_every_prompt(occluded, tmp_path):
    path = write_attribution_report(tmp_path / "a.html", occluded, ANSWERS, model="tiny-llama")
    page = path.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["a.html"]  # no temp file left behind
    scripts = SCRIPT.findall(page)
    assert not any("src=" in attrs for attrs, _ in scripts)  # nothing loaded from anywhere
    assert "unpkg.com" not in page and "cdn.jsdelivr" not in page and "esm.js" not in page
    bundle = circuitsvis_script()
    assert len(bundle) > 100_000 and page.count(bundle) == 1
    assert page.count("var CircuitsVis=") == 1
    assert page.index(bundle) < page.index("CircuitsVis.render(")  # defined before use
    assert "tiny-llama" in page and "method: <b>occlusion</b>" in page
    renders = RENDER.findall(page)
    assert len(renders) == len(PROMPTS) and len({uid for uid, _ in renders}) == len(PROMPTS)
    for a, answer, (uid, props) in zip(occluded, ANSWERS, renders, strict=True):
        props = json.loads(props)
        assert props["tokens"] == a.tokens and "".join(props["tokens"]).strip() == a.prompt
        assert props["values"] == pytest.approx(a.scores.tolist(), abs=1e-6)
        assert props["maxValue"] == -props["minValue"] == pytest.approx(float(a.scores.abs().max()))
        assert f'<div id="{uid}"' in page
        assert f"refusal score {a.refusal_score:+.2f} (refused)" in page
        assert html.escape(a.prompt) in page and html.escape(answer) in page
    assert "<b>bold</b>" not in page and "<script>alert(1)" not in page  # escaped everywhere
    assert any("<" in t for t in occluded[1].tokens)  # tokens inside a script cannot close it
    assert all("<" not in raw for _, raw in renders)


def test_the_page_renders_every_prompt_in_a_browser(occluded, tmp_path):
    """The page as headless Chromium shows it, alone in a folder: the bundle defines a global
    CircuitsVis that every fragment calls, so each prompt's view holds its tokens in order,
    with no script error and nothing fetched."""
    from browser import render_in_chromium, require_chromium

    require_chromium()
    path = write_attribution_report(tmp_path / "a.html", occluded, ANSWERS)
    seen = render_in_chromium(path)
    assert not seen["errors"] and not seen["resources"] and seen["bundles"] == 1
    views = {v["id"]: v for v in seen["token_views"]}
    uids = [uid for uid, _ in RENDER.findall(path.read_text(encoding="utf-8"))]
    assert list(views) == uids and len(uids) == len(occluded)
    for a, uid in zip(occluded, uids, strict=True):
        assert views[uid]["rendered"] and views[uid]["spans"] >= len(a.tokens)
        assert "".join(views[uid]["text"].split()) == "".join("".join(a.tokens).split())


def test_an_unattributed_prompt_shows_its_tokens_and_note(tiny_llama, occluded):
    never = replace(tiny_llama, refusal_tokens=[5])
    [a] = attribute(never, [PROMPTS[1]], "occlusion")
    assert a.scores is None
    fragment = colored_tokens_html(a)
    assert html.escape(a.note) in fragment and "not refused" in fragment
    assert "CircuitsVis" not in fragment  # plain HTML, no script needed
    assert fragment.count('class="plain-token"') == len(a.tokens)
    for token in a.tokens:
        assert f">{html.escape(token)}</span>" in fragment
    alone = attributions_html([a], ["fine"])
    assert "var CircuitsVis=" not in alone and "(not refused)" in alone
    mixed = attributions_html([a, *occluded])
    assert mixed.count("var CircuitsVis=") == 1 and len(RENDER.findall(mixed)) == len(occluded)


def test_a_fragment_alone_carries_the_bundle(occluded):
    fragment = colored_tokens_html(occluded[0])
    assert fragment.count("var CircuitsVis=") == 1 and len(RENDER.findall(fragment)) == 1
    bare = colored_tokens_html(occluded[0], include_js=False, max_abs=2.5)
    assert "var CircuitsVis=" not in bare
    assert json.loads(RENDER.findall(bare)[0][1])["maxValue"] == 2.5


def test_heatmap_is_tokens_by_layers(projected, refusing):
    a = projected
    fig = attribution_heatmap(a)
    ax, colorbar = fig.axes
    grid = ax.images[0].get_array()
    assert grid.shape == (refusing.n_layers, len(a.tokens))
    torch.testing.assert_close(torch.tensor(grid.data), a.layer_scores.float())
    assert [t.get_text() for t in ax.get_xticklabels()] == a.tokens
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
    vmin, vmax = ax.images[0].get_clim()
    assert vmin == -vmax == pytest.approx(-float(a.layer_scores.abs().max()))
    assert f"{a.refusal_score:+.2f}" in ax.get_title() and "projection" in colorbar.get_ylabel()
    with pytest.raises(RefusalLensError, match="3 layer labels for 2 rows"):
        attribution_heatmap(a, layers=[0, 1, 2])


def test_heatmap_needs_layer_scores_and_bars_show_scores(occluded, tmp_path):
    with pytest.raises(RefusalLensError, match='method="projection"'):
        attribution_heatmap(occluded[0])
    a = occluded[0]
    fig = attribution_bars(a, path=tmp_path / "bars.png")
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx(a.scores.tolist(), abs=1e-6)
    assert (tmp_path / "bars.png").stat().st_size > 5_000
    with pytest.raises(RefusalLensError, match="one answer per prompt"):
        attributions_html(occluded, ANSWERS[:2])


def test_attribute_command_writes_html_and_json(tiny_dirs, tmp_path):
    runner = CliRunner()
    model, out = str(tiny_dirs["llama"]), tmp_path / "report" / "attr.html"
    args = ["attribute", model, "borderline", "--n", "2", "--max-new-tokens", "3"]
    result = runner.invoke(app, [*args, "--out", str(out), "--attribute-unrefused"])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["config"]["method"] == "occlusion" and saved["config"]["n"] == 2
    rows = saved["attributions"]
    assert len(rows) == 2 and all(len(r["scores"]) == len(r["tokens"]) for r in rows)
    page = out.read_text()
    assert page.count("var CircuitsVis=") == 1 and len(RENDER.findall(page)) == 2
    for row in rows:
        assert html.escape(row["prompt"]) in page and html.escape(row["answer"]) in page
        assert f"{row['refusal_score']:+6.2f}" in result.output
    assert str(out) in result.output

    r = Direction(torch.randn(64, generator=torch.Generator().manual_seed(1)), 1, -1, "llama")
    r.save(tmp_path / "dir")
    proj = tmp_path / "proj.html"
    projection = ["--method", "projection", "--direction", str(tmp_path / "dir")]
    result = runner.invoke(app, [*args, *projection, "--out", str(proj), "--attribute-unrefused"])
    assert result.exit_code == 0, result.output
    saved = json.loads(proj.with_suffix(".json").read_text())
    assert saved["config"]["layers"] == [0, 1] and len(saved["attributions"]) == 2
    for row in saved["attributions"]:  # [layer][token], the direction's layer as scores
        assert [len(layer) for layer in row["layer_scores"]] == [len(row["tokens"])] * 2
        assert row["scores"] == pytest.approx(row["layer_scores"][1])

    bad = [*args, "--out", str(tmp_path / "x.html"), "--method"]
    result = runner.invoke(app, [*bad, "projection"])
    assert result.exit_code != 0 and "needs --direction" in str(result.exception)
    result = runner.invoke(app, [*bad, "saliency"])
    text = " ".join(result.output.replace("│", " ").split())  # the choices, named
    assert result.exit_code == 2 and "'saliency' is not one of 'projection'," in text
    assert not (tmp_path / "x.html").exists()
