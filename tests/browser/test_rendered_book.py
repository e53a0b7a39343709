"""The rendered book as a reader sees it: every page opened in headless Chromium.

For every HTML page of the built book: it loads without console errors,
uncaught exceptions or failed requests; it asks for nothing outside the local
server (MathJax, fonts and scripts are served from ``_static``); every image has
loaded (non-zero natural size); the math has been typeset by MathJax (each
math element holds a MathJax container, no ``mjx-merror``, no raw ``\\(``,
``\\[`` or ``$$`` left in the text); and every internal link resolves on the
local server, anchors included. The search page finds the search term.
Each page of the book has a copy button on every code block, and each notebook
page a download button for its .ipynb and Binder and Colab launch buttons.
A screenshot of the first screen of each chapter is saved for CI's artifacts.

On every chapter page (the notebooks under ``book/`` and the introduction),
what a reader sees (``reader_view.py``): no table, code block, output or
display equation wider than the text column (cut off or scrolled sideways)
unless placed full-width on purpose; no figure shown at fewer than
``MIN_PX_PER_FIGURE_INCH`` screen pixels per figure inch; and the shares of
the visible text that are code and output, reported in ``browser-report.txt``
and ``reader-view.json`` beside the screenshots, with visible code at most
``CODE_SHARE_LIMIT`` of each chapter page's text (``NORMTEXT_CODE_SHARE_LIMIT=0``
only reports it, for a draft).

Off by default; see ``conftest.py`` for the switches and settings.
"""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .browser_support import ROOT as REPO
from .browser_support import _truthy, html_dir, html_pages
from .reader_view import (CODE_SHARE_LIMIT, MIN_PX_PER_FIGURE_INCH, describe_figures,
                          describe_over_wide, measure)

PAGES = html_pages(html_dir())
VIEWPORT = {"width": 1280, "height": 800}
LOAD_TIMEOUT_MS = 30_000

# Text of the page outside code, scripts and typeset math: where raw TeX must not be.
_PROSE_TEXT = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, noscript, textarea, mjx-container, '
                        + '.highlight, .MathJax, mjx-assistive-mml').forEach(e => e.remove());
  return body.innerText;
}"""

_MATH_STATE = """async () => {
  const math = Array.from(document.querySelectorAll('.math'));
  const state = {math: math.length, mathjax: !!window.MathJax, untypeset: [], errors: []};
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  if (window.MathJax && MathJax.typesetPromise) { await MathJax.typesetPromise(); }
  state.untypeset = math.filter(e => !e.querySelector('mjx-container'))
                        .map(e => e.textContent.slice(0, 80));
  state.errors = Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]'))
                      .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80));
  return state;
}"""

_IMAGES = """async () => {
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null :
      new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done);
                            setTimeout(done, 10000); })));
  return images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth,
                             visible: img.offsetParent !== null}));
}"""

_LINKS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"

# Reader features: copy buttons on code blocks, download and launch buttons.
_FEATURES = """() => ({
  code_blocks: document.querySelectorAll('div.highlight pre').length,
  copy_buttons: document.querySelectorAll('div.highlight button.copybtn').length,
  downloads: Array.from(document.querySelectorAll('.dropdown-download-buttons a'))
                  .map(a => a.getAttribute('href')),
  launches: Array.from(document.querySelectorAll('.dropdown-launch-buttons a'))
                 .map(a => a.getAttribute('href')),
})"""

_REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.I)

_RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$")


def _ids(page):
    return page or "no-pages"


def _fetch(url: str, cache: dict) -> tuple[int, str]:
    if url not in cache:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                cache[url] = (response.status, response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as e:
            cache[url] = (e.code, "")
    return cache[url]


@pytest.fixture(scope="session")
def fetched():
    return {}


def _is_chapter(page: str) -> bool:
    """A page of the table of contents (the book's own pages, not generated indexes)."""
    return page == "index.html" or page.startswith("book/")


def _open(browser, server, path):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught exception: {e}"))
    page.on("requestfailed", lambda r: problems.append(
        f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)

    def local_only(route):
        if route.request.url.startswith(server) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            problems.append(f"asks for an outside resource: {route.request.url}")
            route.abort()
    page.route("**/*", local_only)
    page.goto(f"{server}/{path}", wait_until="load", timeout=LOAD_TIMEOUT_MS)
    return context, page, problems


@pytest.mark.parametrize("path", PAGES or [None], ids=_ids)
def test_page(path, book_dir, server, browser, shots, browser_report, fetched):
    assert path is not None, f"no HTML pages under {book_dir}"
    redirect = _REDIRECT.search((book_dir / path).read_text(errors="replace")[:500])
    if redirect:  # Jupyter Book's index.html only forwards to the root page
        target = urllib.parse.urljoin(f"{server}/{path}", redirect.group(1))
        status, _ = _fetch(target, fetched)
        assert status == 200, f"{path} redirects to {target}: HTTP {status}"
        browser_report["checked"].append(f"{path} (redirect to {redirect.group(1)})")
        return
    context, page, problems = _open(browser, server, path)
    try:
        math = page.evaluate(_MATH_STATE)
        images = page.evaluate(_IMAGES)
        prose = page.evaluate(_PROSE_TEXT)
        links = page.evaluate(_LINKS)
        features = page.evaluate(_FEATURES)
        if _is_chapter(path):
            page.evaluate("window.scrollTo(0, 0)")
            name = path[:-len(".html")].replace("/", "__") + ".png"
            page.screenshot(path=str(shots / name))
            browser_report["screenshots"].append(name)
        page.wait_for_timeout(100)  # late console messages
    finally:
        context.close()

    # 1. loads cleanly, offline
    assert not problems, f"{path}: " + "; ".join(problems)
    # 2. images
    broken = [i["src"] for i in images if i["width"] == 0]
    assert not broken, f"{path}: images that did not load: {broken}"
    # 3. math
    if math["math"]:
        assert math["mathjax"], f"{path}: {math['math']} math elements but MathJax did not load"
    assert not math["untypeset"], f"{path}: math not typeset: {math['untypeset']}"
    assert not math["errors"], f"{path}: MathJax errors: {math['errors']}"
    raw = sorted({m.group(0) for m in _RAW_TEX.finditer(prose)})
    assert not raw, (f"{path}: raw TeX delimiters {raw} left in the text, e.g. "
                     + repr(prose[max(0, _RAW_TEX.search(prose).start() - 60):][:160]))
    # 4. internal links (and their anchors) resolve on the local server
    dead = []
    for href in sorted(set(links)):
        if not href.startswith(server):
            continue
        target, _, fragment = href.partition("#")
        target = target.split("?", 1)[0]
        status, text = _fetch(target, fetched)
        if status != 200:
            dead.append(f"{href} (HTTP {status})")
        elif fragment and target.endswith(".html"):
            anchor = urllib.parse.unquote(fragment)
            if f'id="{anchor}"' not in text and f'name="{anchor}"' not in text:
                dead.append(f"{href} (no anchor #{anchor})")
    assert not dead, f"{path}: internal links that do not resolve: {dead}"
    # 5. reader features on the book's own pages
    if _is_chapter(path):
        assert features["copy_buttons"] == features["code_blocks"], (
            f"{path}: {features['code_blocks']} code blocks but "
            f"{features['copy_buttons']} copy buttons")
        notebook = path[:-len(".html")] + ".ipynb"
        if (book_dir / "_sources" / notebook).is_file():  # a notebook page
            assert any(h and h.endswith("_sources/" + notebook) for h in features["downloads"]), (
                f"{path}: no download button for the .ipynb: {features['downloads']}")
            for service in ("mybinder.org", "colab.research.google.com"):
                assert any(service in h and h.endswith((notebook, notebook[:-6] + ".md"))
                           for h in features["launches"]), (
                    f"{path}: no {service} launch button: {features['launches']}")
    browser_report["checked"].append(path)


def _search_term(root) -> str:
    term = os.environ.get("NORMTEXT_SEARCH_TERM")
    if term:
        return term
    has_layer_norm = any(re.search(r"layer[-_]?norm", p, re.I)
                         for p in html_pages(root) if _is_chapter(p))
    return "LayerNorm" if has_layer_norm else "BatchNorm"


def test_search_finds_the_term(book_dir, server, browser, shots, browser_report):
    term = _search_term(book_dir)
    context, page, problems = _open(browser, server,
                                    "search.html?q=" + urllib.parse.quote(term))
    try:
        page.wait_for_function(
            "() => document.querySelector('#search-results .search-summary') !== null"
            " && !document.querySelector('#search-results .search-summary').textContent"
            ".includes('Searching')", timeout=LOAD_TIMEOUT_MS)
        page.wait_for_timeout(500)  # results are appended one by one
        results = page.evaluate(
            "() => Array.from(document.querySelectorAll('#search-results ul.search li a'))"
            ".map(a => a.getAttribute('href'))")
        summary = page.inner_text("#search-results .search-summary")
        page.screenshot(path=str(shots / "search.png"))
        browser_report["screenshots"].append("search.png")
    finally:
        context.close()
    assert not problems, "search page: " + "; ".join(problems)
    assert results, f"the search page found nothing for {term!r} ({summary.strip()!r})"
    if term == "LayerNorm" and "NORMTEXT_SEARCH_TERM" not in os.environ:
        chapters = [p for p in html_pages(book_dir)
                    if _is_chapter(p) and re.search(r"layer[-_]?norm", p, re.I)]
        assert any(r and r.split("#")[0] in chapters for r in results), (
            f"searching {term!r} does not find the chapter(s) {chapters}: {results}")
    browser_report["search"].append(f"{term!r}: {len(results)} results, first {results[:5]}")


# --------------------------------------------------------------------------------------
# What a reader sees on the chapter pages: widths, figure scale, code share
# --------------------------------------------------------------------------------------

def _is_reader_page(root, page: str) -> bool:
    """A chapter page: a notebook under book/ (an .ipynb in the repository, not a
    MyST Markdown page that executes code, such as how-built), or the introduction."""
    if not page.startswith("book/") or not page.endswith(".html"):
        return False
    stem = page[:-len(".html")]
    if stem == "book/intro":
        return True
    return ((root / "_sources" / (stem + ".ipynb")).is_file()
            and not (REPO / (stem + ".md")).is_file())


READER_PAGES = [p for p in PAGES if _is_reader_page(html_dir(), p)]


@pytest.fixture(scope="session")
def reader_views(browser, server, book_dir, browser_report):
    """Each chapter page measured once (opened lazily), shared by the tests below."""
    views = browser_report["reader"]

    def view(path):
        if path not in views:
            context, page, _ = _open(browser, server, path)
            try:
                page.evaluate(_MATH_STATE)
                page.evaluate(_IMAGES)
                page.evaluate("document.fonts.ready.then(() => true)")
                views[path] = measure(page, server, book_dir)
            finally:
                context.close()
        return views[path]
    return view


@pytest.mark.parametrize("path", READER_PAGES or [None], ids=_ids)
def test_fits_the_column(path, reader_views, book_dir):
    assert path is not None, f"no chapter pages under {book_dir}"
    view = reader_views(path)
    assert not view["over_wide"], (
        f"{path}: {view['over_wide_count']} elements wider than the {view['column_px']} px "
        "text column (split the table or equation, shorten the output, or tag the cell "
        "full-width):\n  " + "\n  ".join(describe_over_wide(view)))


@pytest.mark.parametrize("path", READER_PAGES or [None], ids=_ids)
def test_figures_are_legible(path, reader_views, book_dir):
    assert path is not None, f"no chapter pages under {book_dir}"
    low = reader_views(path)["figures_below_scale"]
    assert not low, (
        f"{path}: {len(low)} figures shown at fewer than {MIN_PX_PER_FIGURE_INCH:.0f} screen "
        "pixels per figure inch (draw them at the column's size, or place them full-width):"
        "\n  " + "\n  ".join(describe_figures(low)))


@pytest.mark.parametrize("path", READER_PAGES or [None], ids=_ids)
def test_code_share(path, reader_views, book_dir):
    assert path is not None, f"no chapter pages under {book_dir}"
    view = reader_views(path)  # measured and reported on every run
    if not _truthy(os.environ.get("NORMTEXT_CODE_SHARE_LIMIT", "1")):
        pytest.skip(f"code share {view['code_share']:.0%} reported, limit "
                    f"{CODE_SHARE_LIMIT:.0%} not asserted (NORMTEXT_CODE_SHARE_LIMIT=0)")
    assert view["code_share"] <= CODE_SHARE_LIMIT, (
        f"{path}: visible code is {view['code_share']:.0%} of the page's text, more than "
        f"{CODE_SHARE_LIMIT:.0%} (hide setup and harness cells, collapse long listings)")
