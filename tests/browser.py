"""Open an HTML page in headless Chromium: what its scripts rendered, and screenshots.

    result = render_in_chromium(Path("runs/smollm2-135m/report.html"))
    result["stages"], result["token_views"], result["images"], result["bundles"]
    screenshot(Path("runs/smollm2-135m/report.html"), Path("report_top.png"))

:func:`render_in_chromium` copies the page alone into a new folder (so a page that needs any
file beside it shows that), adds a script that runs after ``load`` (and a short wait for
circuitsvis's React render), and reads back the JSON that script writes into
``<pre id="browser-check">`` from Chromium's ``--dump-dom``. Chromium runs with a fresh
profile, no background networking and a virtual time budget, so it never waits on the network.

A helper module for the tests and ``experiments/report_screenshot.py``, not a test file.
Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``; ``scripts/setup.sh``
installs it when run as root). :func:`require_chromium` skips a test without it, except in CI
(``CI`` set), where a missing browser fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
)
# Collects the page's script errors from the start (injected first in <head>).
ERRORS_JS = (
    "<script>window.__checkErrors=[];window.addEventListener('error',"
    "e=>window.__checkErrors.push(String(e.message)));</script>"
)
# Runs after load and a short wait (circuitsvis renders with React), then reports.
CHECK_JS = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const all = (selector) => Array.from(document.querySelectorAll(selector));
  const result = {
    stages: all('section.stage').map(e => e.id),
    token_views: all('.token-view').map(e => ({id: e.id, rendered: e.childElementCount > 0,
                                               spans: e.querySelectorAll('span').length,
                                               text: e.textContent})),
    images: all('img').map(e => ({complete: e.complete, decoded: e.naturalWidth > 0,
                                  width: e.naturalWidth})),
    bundles: all('script[data-bundle="circuitsvis"]').length,
    resources: performance.getEntriesByType('resource').map(e => e.name),
    errors: window.__checkErrors || [],
  };
  const pre = document.createElement('pre');
  pre.id = 'browser-check';
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
}, 500));
</script>"""
RESULT = re.compile(r'<pre id="browser-check">(.*?)</pre>', re.S)


def chromium_available() -> bool:
    """Whether Debian's Chromium is installed where these checks run it."""
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


def require_chromium() -> None:
    """Skip the calling test without Chromium; in CI (``CI`` set) fail instead."""
    import pytest

    if chromium_available():
        return
    message = (
        f"{CHROMIUM} is missing: the browser checks need Debian's chromium "
        "(`apt-get install -y chromium`, or run scripts/setup.sh as root)."
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _run_chromium(args: list[str], timeout_s: float) -> str:
    """Run Chromium with a new, throw-away profile; its stdout."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        done = subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _instrumented(page: str) -> str:
    """``page`` with the error collector first in ``<head>`` and the check last in ``<body>``."""
    page = re.sub(r"<head>", lambda m: m.group(0) + ERRORS_JS, page, count=1)
    if "</body>" in page:
        index = page.rindex("</body>")
        return page[:index] + CHECK_JS + page[index:]
    return page + CHECK_JS


def render_in_chromium(html_path: Path, timeout_s: float = 60) -> dict[str, Any]:
    """Load a copy of ``html_path`` (alone in a new folder) in headless Chromium; return what
    the page showed once its scripts ran: ``stages`` (ids of ``section.stage``),
    ``token_views`` (``rendered``: has child elements; ``spans``; ``text``), ``images``
    (``complete``, ``decoded``), ``bundles`` (count of the circuitsvis bundle scripts),
    ``resources`` (URLs the page loaded) and ``errors`` (uncaught script errors)."""
    page = Path(html_path).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="browser-check-") as folder:
        copy = Path(folder) / "page.html"
        copy.write_text(_instrumented(page), encoding="utf-8")
        dom = _run_chromium(["--dump-dom", copy.as_uri()], timeout_s)
    match = RESULT.search(dom)
    if match is None:
        raise RuntimeError(f"the check script wrote no result; the DOM ends: {dom[-1000:]!r}")
    return json.loads(html.unescape(match.group(1)))


def screenshot(
    html_path: Path, png_path: Path, width: int = 1280, height: int = 900, timeout_s: float = 60
) -> Path:
    """A PNG of the top ``width`` × ``height`` pixels of the page, after its scripts ran."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="browser-shot-") as folder:
        shot = Path(folder) / "shot.png"  # Chromium writes it; moved into place when complete
        args = [f"--screenshot={shot}", f"--window-size={width},{height}"]
        _run_chromium([*args, Path(html_path).resolve().as_uri()], timeout_s)
        if not shot.is_file():
            raise RuntimeError(f"chromium wrote no screenshot of {html_path}")
        shutil.move(shot, png_path)
    return png_path
