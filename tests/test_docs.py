"""The documentation site: ``mkdocs build --strict`` passes (broken links, anchors and missing
references fail it), the results pages take their tables from ``figures/`` only, and the
built site opens in headless Chromium: pages render without script errors, images load,
search finds pages offline, and no request leaves the machine."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from browser import RESULT, _run_chromium, require_chromium

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import docs_pages  # noqa: E402  (the MkDocs hooks, tested as functions too)

# After load: what the page shows, then a search typed into the header's box.
CHECK_JS = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
// Chromium's virtual time runs ahead while the search worker builds its index in real time;
// a request to /__wait (the test server sleeps) holds virtual time for a moment of real time.
const pause = () => fetch('/__wait').catch(() => null);
async function check() {
  const page = {
    h1: (document.querySelector('article h1') || {}).textContent || '',
    text: document.querySelector('article').innerText.length,
    nav: document.querySelectorAll('.md-nav__link').length,
    images: Array.from(document.querySelectorAll('article img')).map(
      e => ({src: e.getAttribute('src'), decoded: e.naturalWidth > 0})),
  };
  const box = document.querySelector('.md-search__input');
  const meta = () => (document.querySelector('.md-search-result__meta') || {}).textContent || '';
  for (let i = 0; i < 40 && meta().includes('Initializing'); i++) await pause();
  box.value = 'refusal direction';
  box.focus();
  box.dispatchEvent(new Event('input', {bubbles: true}));
  // the box reads its query on keyup; 'a' is no keyboard shortcut of the theme
  box.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true, key: 'a'}));
  for (let i = 0; i < 20 && !document.querySelector('.md-search-result__item'); i++) await pause();
  const result = {...page, search: document.querySelectorAll('.md-search-result__item').length,
                  meta: meta(), errors: window.__errors};
  const pre = document.createElement('pre');
  pre.id = 'browser-check';
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
}
window.addEventListener('load', () => setTimeout(check, 500));
</script>"""
PAGES = {  # page -> a word its heading holds
    "index.html": "refusal-lens",
    "results/languages.html": "languages",
    "reference/cli.html": "CLI",
    "reference/api.html": "API",
    "stages/directions.html": "irection",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as CI builds it."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_build_is_strict_and_complete(site):
    """Every nav page, the generated references and a page per notebook are built."""
    for page in PAGES:
        assert (site / page).is_file(), page
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "tutorials" / f"{notebook.stem}.html").is_file(), notebook.name
    cli = (site / "reference/cli.html").read_text()
    for command in ("run", "mitigate", "direction", "rass", "score"):
        assert f"refusal-lens {command}</code>" in cli, command
    api = (site / "reference/api.html").read_text()
    import refusal_lens

    exports = refusal_lens._EXPORTS
    missing = [n for n in exports if f'id="{exports[n]}.{n}"' not in api]
    assert not missing, f"API reference lacks {missing}"


def test_results_tables_come_from_figures():
    """A results page holds no table of its own: each is a figure marker, resolved from the
    file the experiment wrote (so no number is copied by hand)."""
    pages = sorted((ROOT / "docs").rglob("*.md"))
    assert pages
    for page in pages:
        rows = [line for line in page.read_text().splitlines() if line.startswith("|")]
        if page.parent.name == "results":
            assert not rows, f"{page} has a hand-written table: include the figure instead"
    markers = [m for p in pages for m in docs_pages.FIGURE.finditer(p.read_text())]
    assert len(markers) >= 15


def test_no_page_copies_a_figure_table():
    """No docs page holds a data row of a figure's table: a copy would go stale when the
    experiment is rerun."""
    figure_rows = {
        line
        for figure in (ROOT / "figures").rglob("*.md")
        for line in figure.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("|---") and any(c.isdigit() for c in line)
    }
    assert len(figure_rows) > 100
    for page in sorted((ROOT / "docs").rglob("*.md")):
        copied = [line for line in page.read_text().splitlines() if line in figure_rows]
        assert not copied, f"{page.relative_to(ROOT)} copies figure rows: {copied[:2]}"


def test_figure_include_and_missing_figure(tmp_path, monkeypatch):
    """A section is included without its heading, re-levelled under the page's heading; a
    missing figure or section fails the build with its name."""
    (tmp_path / "f.md").write_text("# F\n\n## A\n\nalpha\n\n### A1\n\nx\n\n## B\n\nbeta\n")
    monkeypatch.setattr(docs_pages, "FIGURES", tmp_path)
    out = docs_pages.include_figures("# P\n\n## Here\n\n<!-- figure: f.md § A -->\n", "r/p.md")
    assert "alpha" in out and "beta" not in out and "\n### A1\n" in out
    whole = docs_pages.include_figures("# P\n\n<!-- figure: f.md -->\n", "p.md")
    assert "\n## F\n" in whole and "\n### A\n" in whole
    with pytest.raises(Exception, match=r"gone\.md"):
        docs_pages.include_figures("<!-- figure: gone.md -->", "p.md")
    with pytest.raises(Exception, match="'Z'"):
        docs_pages.include_figures("<!-- figure: f.md § Z -->", "p.md")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves the site; ``/__wait`` answers after a quarter second (see CHECK_JS)."""

    def do_GET(self) -> None:
        if self.path == "/__wait":
            time.sleep(0.25)
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


def _serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _page_requests(net_log: Path, origin: str) -> set[str]:
    """The URLs the page (not the browser itself) requested, from Chromium's network log:
    requests initiated by the site's origin, whatever they point at."""
    text = net_log.read_text(errors="replace").rstrip().rstrip(",")
    log = json.loads(text if text.endswith("}") else text + "]}")  # a log cut at exit
    return {
        event["params"]["url"]
        for event in log["events"]
        if event.get("params", {}).get("initiator") == origin and "url" in event["params"]
    }


@pytest.mark.parametrize("page", sorted(PAGES))
def test_site_in_chromium(site, page, tmp_path):
    require_chromium()
    copy = tmp_path / "site"
    subprocess.run(["cp", "-r", str(site), str(copy)], check=True)
    target = copy / page
    html = target.read_text()
    target.write_text(html.replace("</body>", CHECK_JS + "</body>", 1))
    server, base = _serve(copy)
    net_log = tmp_path / "net.json"
    try:
        dom = _run_chromium([f"--log-net-log={net_log}", "--dump-dom", f"{base}/{page}"], 90)
    finally:
        server.shutdown()
    match = RESULT.search(dom)
    assert match, f"the check script did not run on {page}"
    import html as html_lib

    result = json.loads(html_lib.unescape(match.group(1)))
    assert PAGES[page].lower() in result["h1"].lower(), result["h1"]
    assert result["text"] > 500 and result["nav"] > 20
    assert not result["errors"], result["errors"]
    assert all(img["decoded"] for img in result["images"]), result["images"]
    assert result["search"] > 0, f"search found nothing: {result['meta']!r}"
    requests = _page_requests(net_log, base)
    assert any(u.endswith("search_index.json") for u in requests), "the log missed the page"
    outside = {u for u in requests if not u.startswith(base)}
    assert not outside, f"the page requested outside the machine: {outside}"


def test_readme_memory_table_is_the_figure():
    """The README's memory table is ``figures/memory_table.md`` as
    ``experiments/memory_table.py`` wrote it (rerun it after the benchmark), and that file is
    what the script makes from the two benchmark results."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import memory_table
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    figure = (ROOT / "figures" / "memory_table.md").read_text()
    block = memory_table.BLOCK.search((ROOT / "README.md").read_text())
    assert block is not None and block.group(1) == figure
    before, after = (
        memory_table.by_model(ROOT / "figures" / f"stage_memory{s}.json") for s in ("_before", "")
    )
    assert memory_table.table(before, after) == figure
