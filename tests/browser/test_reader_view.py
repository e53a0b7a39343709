"""The reader-view measurements can fail: a PNG's resolution, and a synthetic page.

The page below has a 690 px column with one element of each kind that is too
wide, and the same kinds where they are allowed (narrow, placed full-width,
collapsed, hidden by a toggle): the measurement must find exactly the first
four. Off by default like the other browser tests (see ``conftest.py``).
"""
from __future__ import annotations

import functools
import http.server
import struct
import threading
import zlib

import matplotlib
import pytest

from .reader_view import MIN_PX_PER_FIGURE_INCH, measure, png_dpi

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def _png_without_phys(width=4, height=2) -> bytes:
    """A grey PNG written by hand, with no pHYs chunk."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _figure(path, width_in, height_in, dpi):
    fig = plt.figure(figsize=(width_in, height_in), dpi=dpi)
    fig.text(0.5, 0.5, "label", ha="center")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


@pytest.mark.parametrize("dpi", [72, 100, 150])
def test_png_dpi_reads_matplotlibs_resolution(tmp_path, dpi):
    _figure(tmp_path / "f.png", 2, 1, dpi)
    x, y = png_dpi(tmp_path / "f.png")
    assert x == pytest.approx(dpi, abs=0.05) and y == pytest.approx(dpi, abs=0.05)


def test_png_dpi_none_without_phys(tmp_path):
    assert png_dpi(_png_without_phys()) is None
    assert png_dpi(b"GIF89a not a png") is None


WIDE = "x" * 400  # far wider than 690 px in a monospace font

PAGE = f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; font: 16px sans-serif; }}
article.bd-article {{ width: 690px; padding: 0 20px; margin-left: 100px; }}
pre {{ overflow-x: auto; font: 14px monospace; margin: 0; }}
.scroller {{ overflow-x: auto; }}
mjx-container[display] {{ display: block; }}
.admonition.toggle-hidden .admonition-title ~ * {{ visibility: hidden; height: 0; }}
</style></head><body>
<article class="bd-article" role="main">
<section>
<p>{"Prose that a reader reads. " * 40}</p>
<div class="scroller"><table id="wide-table"><tr><td><div style="width:1000px">wide table</div></td></tr></table></div>
<table><tr><td style="width:300px">narrow table</td></tr></table>
<div class="cell"><div class="cell_input"><div class="highlight"><pre>long_line = "{WIDE}"</pre></div></div>
  <div class="cell_output"><div class="output" style="width:900px">wide output</div></div></div>
<div class="cell"><div class="cell_input"><div class="highlight"><pre>{("short = 1" + chr(10)) * 20}</pre></div></div>
  <div class="cell_output"><div class="output">short output</div>
  <img id="big" src="big.png" style="max-width:100%"><img id="small" src="small.png">
  <img id="plain" src="plain.png" style="width:50px"></div></div>
<div class="math"><mjx-container display="true" style="width:800px">wide equation</mjx-container></div>
<div class="math"><mjx-container display="true">narrow equation</mjx-container></div>
<div class="cell tag_full-width"><div class="cell_output"><div class="output">
  <table><tr><td><div style="width:1000px">full-width on purpose</div></td></tr></table></div></div></div>
<details><summary>Show code cell source</summary>
  <div class="cell_input"><div class="highlight"><pre>{("hidden = '" + WIDE + "'" + chr(10)) * 20}</pre></div></div></details>
<div class="admonition toggle toggle-hidden"><p class="admonition-title">Solution</p>
  <div class="highlight"><pre>{("toggled = '" + WIDE + "'" + chr(10)) * 20}</pre></div></div>
</section></article></body></html>"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture
def synthetic(tmp_path, browser):
    (tmp_path / "page.html").write_text(PAGE)
    _figure(tmp_path / "big.png", 10, 2, 100)    # 1000 px shown at 690: 69 px per inch
    _figure(tmp_path / "small.png", 3, 1, 100)   # 300 px shown at 300: 100 px per inch
    (tmp_path / "plain.png").write_bytes(_png_without_phys())
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = f"http://127.0.0.1:{httpd.server_address[1]}"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{server}/page.html", wait_until="load")
    try:
        yield measure(page, server, tmp_path)
    finally:
        context.close()
        httpd.shutdown()
        httpd.server_close()


def test_over_wide_elements_are_found_and_exemptions_hold(synthetic):
    assert synthetic["column_px"] == 690
    found = {(w["kind"], w["how"]) for w in synthetic["over_wide"]}
    assert found == {("table", "scrolls sideways"), ("code", "scrolls sideways"),
                     ("output", "cut off"), ("equation", "cut off")}, synthetic["over_wide"]
    assert synthetic["over_wide_count"] == 4
    snippets = " ".join(w["snippet"] for w in synthetic["over_wide"])
    for allowed in ("narrow", "full-width", "hidden", "toggled", "short"):
        assert allowed not in snippets


def test_figures_below_scale_and_without_resolution(synthetic):
    scales = {f["src"]: f["px_per_inch"] for f in synthetic["figures"]}
    assert scales["big.png"] == pytest.approx(69, abs=0.5)
    assert scales["small.png"] == pytest.approx(100, abs=0.5)
    assert [f["src"] for f in synthetic["figures_below_scale"]] == ["big.png"]
    assert MIN_PX_PER_FIGURE_INCH > 69
    assert synthetic["figures_skipped"] == ["plain.png (no pHYs resolution)"]


def test_collapsed_code_is_not_counted(synthetic):
    # Visible code: the two short cell inputs (about 610 characters) against some 1,800
    # of text; the collapsed and toggled code (about 16,000 characters) must not count.
    assert 0.25 < synthetic["code_share"] < 0.45, synthetic
    assert 0.0 < synthetic["output_share"] < 0.1, synthetic
