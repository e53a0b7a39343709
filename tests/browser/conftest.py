"""The rendered book in a real browser: switches, paths, a local server and Chromium.

These tests are off by default (``make test`` collects them and skips them):
they need the built book and Debian's Chromium. Turn them on with

    NORMTEXT_BROWSER_TEST=1 .venv/bin/python -m pytest tests/browser -q

or ``pytest tests/browser --browser``. Settings (environment variables):

* ``NORMTEXT_HTML_DIR``: the built book, default ``_build/html``;
* ``NORMTEXT_SCREENSHOT_DIR``: where screenshots go, default ``screenshots/``
  beside the html directory (``_build/screenshots``);
* ``NORMTEXT_CHROMIUM``: the browser, default ``/usr/bin/chromium`` (Debian's
  package ``chromium``); Playwright drives it, nothing is downloaded;
* ``NORMTEXT_SEARCH_TERM``: what the search page must find, default
  ``LayerNorm`` when a LayerNorm chapter exists, else ``BatchNorm``.

Where the tests are asked for by ``NORMTEXT_BROWSER_TEST=1`` or run in CI
(``CI`` set), a missing browser, Playwright or book is a failure, never a skip.
"""
from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

from .browser_support import (chromium_path, html_dir, must_not_skip, requested_by_env,
                             screenshot_dir)

# The flags Chromium needs here: root (no sandbox), no GPU, and no background
# connections (this machine's network is closed; they would only fail or hang).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def pytest_addoption(parser):
    # Only registered when this folder is named on the command line (pytest's rule
    # for options of a conftest below the root); the environment variable always works.
    parser.addoption("--browser", action="store_true", default=False,
                     help="run the browser tests of the rendered book (tests/browser)")


def enabled(config) -> bool:
    return requested_by_env() or bool(config.getoption("--browser", default=False))


def pytest_collection_modifyitems(config, items):
    if enabled(config):
        return
    skip = pytest.mark.skip(reason="browser tests of the rendered book are off: set "
                                   "NORMTEXT_BROWSER_TEST=1 (or pass --browser) after building the book")
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(here):
            item.add_marker(skip)


def _unavailable(message: str):
    if must_not_skip():
        pytest.fail(message + " (NORMTEXT_BROWSER_TEST=1 or CI is set, so this is a failure, "
                              "not a skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def book_dir() -> Path:
    root = html_dir()
    if not (root / "index.html").is_file():
        _unavailable(f"no built book at {root} (build it first, or set NORMTEXT_HTML_DIR)")
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture(scope="session")
def server(book_dir):
    """The built book served on a free loopback port, as a reader's browser sees it."""
    handler = functools.partial(_QuietHandler, directory=str(book_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    exe = chromium_path()
    if exe is None:
        _unavailable("no Chromium found (apt-get install -y chromium chromium-driver, "
                     "or set NORMTEXT_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is not installed (requirements.txt pins it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots() -> Path:
    path = screenshot_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser_report(shots):
    """Pages checked and screenshots saved, written to ``<screenshots>/browser-report.txt``."""
    report = {"checked": [], "screenshots": [], "search": [], "reader": {}}
    yield report
    lines = _reader_lines(report["reader"])
    if report["reader"]:
        summary = {page: {key: view[key] for key in (
                       "code_share", "output_share", "over_wide_count", "column_px",
                       "text_chars", "over_wide", "figures_below_scale", "figures_skipped")}
                   for page, view in sorted(report["reader"].items())}
        (shots / "reader-view.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines += [f"pages checked ({len(report['checked'])}):"]
    lines += [f"  {page}" for page in report["checked"]]
    lines += [f"screenshots saved ({len(report['screenshots'])}):"]
    lines += [f"  {shot}" for shot in report["screenshots"]]
    lines += [f"search: {entry}" for entry in report["search"]]
    (shots / "browser-report.txt").write_text("\n".join(lines) + "\n")


def _reader_lines(views: dict) -> list[str]:
    """The chapter pages as a reader sees them: one row per page, then what is wrong."""
    if not views:
        return []
    from .reader_view import describe_figures, describe_over_wide
    width = max(len(page) for page in views)
    lines = ["what a reader sees (share of the visible text; elements wider than the column; "
             "figures under the minimum scale):",
             f"  {'page':<{width}}  code  output  over-wide  figures-low"]
    for page, view in sorted(views.items()):
        lines.append(f"  {page:<{width}}  {view['code_share']:4.0%}  {view['output_share']:6.0%}"
                     f"  {view['over_wide_count']:9d}  {len(view['figures_below_scale']):11d}")
    for page, view in sorted(views.items()):
        details = ([f"over-wide: {d}" for d in describe_over_wide(view)]
                   + [f"figure below scale: {d}" for d in describe_figures(view["figures_below_scale"])]
                   + [f"figure skipped: {d}" for d in view["figures_skipped"]])
        if details:
            lines.append(f"{page} (column {view['column_px']} px):")
            lines += [f"  {d}" for d in details]
    return lines + [""]
