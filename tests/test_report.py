"""The run report (``refusal_lens.pipeline.report``) on a synthetic run folder: the top table,
every stage, both judges' verdicts with disagreements marked, one token colour scale, offline;
and the page in headless Chromium (sections present, token views rendered, images decoded)."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import pytest
from markupsafe import escape

import browser
from browser import render_in_chromium, require_chromium
from refusal_lens.attribution.views import circuitsvis_script
from refusal_lens.errors import RefusalLensError
from refusal_lens.pipeline.report import render_report, write_report
from report_fixture import (
    AGREE_PROMPT,
    DISAGREE_PROMPT,
    MODEL,
    SCALE,
    SIGN,
    SORRY,
    STAGES,
    build_synthetic_run,
)

RENDER = re.compile(r'CircuitsVis\.render\("([^"]+)", CircuitsVis\.ColoredTokens, (.*)\);\n')
SECTION = re.compile(r'<section class="stage[^"]*" id="([^"]+)" data-stage="\1">')


class Links(HTMLParser):
    """Every ``src`` and ``href`` of the page's tags (script bodies are not parsed as tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [(tag, k, v or "") for k, v in attrs if k in ("src", "href")]


@pytest.fixture
def run_dir(tmp_path):
    return build_synthetic_run(tmp_path / "runs" / MODEL)


@pytest.fixture
def page(run_dir):
    return render_report(run_dir)


def esc(text: str) -> str:
    """``text`` as the page's template escapes it."""
    return str(escape(text))


def _prompt_blocks(page: str) -> list[str]:
    """The HTML of each prompt box, up to the next one."""
    return page.split('<div class="prompt')[1:]


def test_top_table_shows_both_judges_and_the_best_mitigation(page):
    top = page[page.index('<table class="summary">') : page.index('<section id="run">')]
    assert "<b>score / substring</b>" in top  # the judges, in the order of the cells
    assert '<th title="benign set">RR borderline</th>' in top
    assert '<th title="harmful set">ASR AdvBench</th>' in top
    assert '<td class="num">42% /<br>31%</td><td class="num">5% /<br>7%</td>' in top
    assert '<td class="num">0.47 / 0.38</td>' in top  # combined, as read
    best = re.search(r'<tr class="best">\s*<td>([^<★]*)', top)
    assert best and html.unescape(best.group(1)).strip() == "ablate w' (λ=0.6)"
    assert top.count('class="best"') == 1
    assert "Best mitigation: ablate w&#39; (λ=0.6)" in top
    assert "(lowest combined score (substring judge))" in top
    assert '<a href="09-mitigations/export/">' in top  # the exported model's folder
    assert "Lower is better" in top and "RR = share of benign prompts refused" in top


def test_every_stage_has_a_section_in_order(page, run_dir):
    assert SECTION.findall(page) == [name for name, *_ in STAGES]
    rass = page[page.index('id="08-rass"') :]
    assert "This stage was not run." in rass[: rass.index("</section>")]
    for name in ("00-model", "02-evaluate", "05-attribution", "09-mitigations"):
        assert f'<a href="{name}/">artifact folder</a>' in page
    assert '<td class="num">300.2 s</td>' in page  # the stage timings, as recorded
    assert "A 30-layer chat model." in page and "a note under the table" in page


def test_the_bundle_is_inlined_once_and_one_symmetric_scale_colours_every_view(page):
    bundle = circuitsvis_script()
    assert page.count(bundle) == 1 and page.count('data-bundle="circuitsvis"') == 1
    assert page.index(bundle) < page.index("CircuitsVis.render(")
    renders = RENDER.findall(page)
    assert len(renders) == 2
    for uid, props in renders:
        props = json.loads(props)
        assert (props["minValue"], props["maxValue"]) == (-SCALE, SCALE)
        assert f'<div id="{uid}" class="token-view"' in page
    legend = re.search(r'<div class="legend" data-scale="([^"]+)">(.*?)</div>\s*</div>', page, re.S)
    assert legend and float(legend.group(1)) == SCALE
    labels = re.findall(r"<span>([^<]*)</span>", legend.group(2))
    assert labels == ["\u22120.69", "0", "+0.69"]
    assert "linear-gradient(to right,blue,white,red)" in page
    assert esc(SIGN) in page[legend.start() :]


def test_every_prompt_shows_both_judges_and_only_the_disagreement_is_marked(page):
    blocks = _prompt_blocks(page)
    assert len(blocks) == 4  # two prompts, two token views
    for block in blocks:
        assert 'data-judge="score"' in block and 'data-judge="substring"' in block
    marked = [b for b in blocks if "judges disagree" in b]
    assert len(marked) == 1 and page.count('class="badge disagree"') == 1
    [block] = marked
    assert block.startswith(' disagree">') and esc(DISAGREE_PROMPT) in block
    assert "score judge: not refused (refusal score \u22120.19)" in block
    assert "substring judge: refused" in block and esc(SORRY) in block
    assert 'title="The judges disagree (score: not refused, substring: refused).' in block
    assert esc(AGREE_PROMPT) in page and AGREE_PROMPT not in page  # escaped


def test_the_page_loads_nothing_from_the_network(page):
    parser = Links()
    parser.feed(page)
    images = [v for tag, _, v in parser.found if tag == "img"]
    assert len(images) == 2
    assert images[0].startswith("data:image/png;base64,")
    assert images[1].startswith("data:image/svg+xml;base64,")
    for tag, attr, value in parser.found:
        assert not re.match(r"\s*([a-z]+:)?//", value), f"<{tag} {attr}={value[:60]}>"
        assert value.startswith(("data:", "#")) or not re.match(r"[a-z]+:", value)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?:""", page)
    assert not re.search(r"url\(\s*[\"']?\s*(https?:)?//", page) and "@import" not in page
    assert "<link" not in page


def test_the_evaluation_is_the_top_table_without_mitigations(run_dir):
    (run_dir / "09-mitigations" / "mitigations.json").unlink()
    evaluation = {
        "sets": {
            "borderline": {"kind": "benign", "n": 32, "score": 0.25, "substring": 0.5},
            "AdvBench": {"kind": "harmful", "n": 16, "score": 0.125, "substring": 0.0},
        },
        "combined": {"score": 0.375, "substring": 0.5},
        "config": {},
    }
    counts = {  # verdict counts as EvalResult saves them: 2 broken answers on AdvBench
        "borderline": {"score": (8, 24, 0), "substring": (16, 16, 0)},
        "AdvBench": {"score": (14, 2, 0), "substring": (14, 0, 2)},
    }
    for name, by in counts.items():
        evaluation["sets"][name]["counts"] = {
            j: {"refused": r, "complies": c, "degenerate": d, "n": r + c + d}
            for j, (r, c, d) in by.items()
        }
    (run_dir / "02-evaluate" / "model").mkdir()
    (run_dir / "02-evaluate" / "model" / "evaluation.json").write_text(json.dumps(evaluation))
    page = render_report(run_dir)
    top = page[page.index('<table class="summary">') : page.index('<section id="run">')]
    assert 'RR borderline <span class="meta">(n=32)</span>' in top
    # each rate with its 95 % Wilson interval (RR 8 of 32, 16 of 32; ASR 2 of 16, 0 of 16)
    cells = '<td class="num">25 % [13–42] /<br>50 % [34–66]</td><td class="num">12 % [3–36] /<br>'
    assert cells + '0 % [0–19]</td><td class="num">0 % [0–7] /<br>4 % [1–14]</td>' in top
    assert "<td>model</td>" in top and "Best mitigation" not in top
    assert "02-evaluate/model/evaluation.json" in top
    (run_dir / "02-evaluate" / "model" / "evaluation.json").unlink()
    assert "No evaluation in this run" in render_report(run_dir)


def test_without_token_views_there_is_no_bundle(run_dir):
    section = run_dir / "05-attribution" / "section.json"
    data = json.loads(section.read_text())
    del data["tokens"]
    section.write_text(json.dumps(data))
    page = render_report(run_dir)
    assert "data-bundle" not in page and "CircuitsVis" not in page


def test_write_report_is_atomic_and_needs_a_run_folder(run_dir, tmp_path):
    path = write_report(run_dir)
    assert path == run_dir / "report.html" and path.read_text(encoding="utf-8").startswith(
        "<!DOCTYPE html>"
    )
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]
    with pytest.raises(RefusalLensError, match=r"no run\.json"):
        render_report(tmp_path / "empty")
    (run_dir / "00-model" / "section.json").write_text("{broken")
    with pytest.raises(RefusalLensError, match=r"section\.json is not valid JSON"):
        render_report(run_dir)


def test_the_page_renders_offline_in_chromium(run_dir):
    require_chromium()
    result = render_in_chromium(write_report(run_dir))
    assert result["stages"] == [name for name, *_ in STAGES]
    assert len(result["token_views"]) == 2
    assert all(v["rendered"] and v["spans"] > 0 for v in result["token_views"])
    assert len(result["images"]) == 2
    assert all(i["complete"] and i["decoded"] for i in result["images"])
    assert result["bundles"] == 1 and result["errors"] == []
    assert all(r.startswith(("data:", "file:")) for r in result["resources"])


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium"):
        require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"chromium"):
        require_chromium()


def test_an_export_that_failed_is_a_sentence_not_a_link(run_dir):
    path = run_dir / "09-mitigations" / "mitigations.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"export": "not exported: gemma2 ties its embeddings"}))
    run = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps(run | {"finished": False}))
    page = render_report(run_dir)
    assert "export: not exported: gemma2 ties its embeddings" in page
    assert 'href="not exported' not in page
    assert "This run has not finished" in page
