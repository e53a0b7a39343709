"""What a reader sees on a chapter page: widths, figure scale, and how much of it is code.

Three measurements of a page opened in Chromium (see ``test_rendered_book.py``):

* **over-wide elements**: tables, code blocks (``div.highlight pre``), cell
  outputs and display equations (``mjx-container[display]``) that are wider
  than the text column (the content box of ``article.bd-article``): cut off
  (the right edge past the column) or scrolled sideways (``scrollWidth >
  clientWidth + 1`` on the element, or the element wider than a scrolling
  wrapper between it and its cell or section). Only elements actually rendered
  count (not inside a closed ``<details>``, a hidden toggle, ``display: none``
  or ``visibility: hidden``); elements inside something placed full-width on
  purpose (a cell tagged ``full-width``, sphinx-book-theme's ``.full-width``,
  the margin) are exempt. Nested findings are reported once, as the outermost.
* **figure scale**: for every ``<img>`` whose PNG file carries a resolution
  (the ``pHYs`` chunk that matplotlib writes), the screen pixels per figure
  inch: displayed width (CSS px) / (natural width / dpi). Collapsed content is
  opened first, since a reader who opens it sees the figure at that size.
  Images without ``pHYs`` (or not PNG) are listed as skipped.
* **code share / output share**: the ``innerText`` length of the visible cell
  inputs and other code blocks outside outputs, and of the visible cell
  outputs, over the ``innerText`` length of the article (``innerText`` skips
  collapsed content; elements that are not rendered count zero, because their
  ``innerText`` would be their whole ``textContent``).
"""
from __future__ import annotations

import struct
import urllib.parse
from pathlib import Path

# Below this many screen pixels per figure inch, matplotlib's 8-10 pt labels are under 8 px.
MIN_PX_PER_FIGURE_INCH = 70.0
# Visible code at most this share of a chapter page's text (asserted unless
# NORMTEXT_CODE_SHARE_LIMIT=0: the book teaches in prose, code folded where it is harness).
CODE_SHARE_LIMIT = 0.20

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INCHES_PER_METRE = 1 / 0.0254


def png_dpi(data: bytes | Path | str) -> tuple[float, float] | None:
    """The (x, y) resolution in pixels per inch of a PNG's ``pHYs`` chunk, or None.

    None when the file is not a PNG, has no ``pHYs`` chunk, or gives only an
    aspect ratio (unit 0). Chunks are read up to the first ``IDAT``, where the
    PNG specification requires ``pHYs`` to be.
    """
    if not isinstance(data, bytes):
        data = Path(data).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"pHYs" and length == 9:
            x, y, unit = struct.unpack(">IIB", body)
            if unit != 1:  # 1: pixels per metre; 0: aspect ratio only
                return None
            return x / INCHES_PER_METRE, y / INCHES_PER_METRE
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length  # length, type, data, CRC
    return None


# Shared helpers of the page scripts: the column and what a reader actually sees.
_HELPERS = r"""
  const article = document.querySelector('article.bd-article')
                  || document.querySelector('[role="main"]') || document.body;
  const FULL_WIDTH = '.full-width, [class*="tag_full-width"], .margin, .tag_margin, '
                   + 'aside.margin, .marginnote, aside.sidebar, .sidebar, .tag_margin';
  const column = () => {
    const r = article.getBoundingClientRect(), s = getComputedStyle(article);
    const left = r.left + parseFloat(s.paddingLeft) + parseFloat(s.borderLeftWidth);
    const right = r.right - parseFloat(s.paddingRight) - parseFloat(s.borderRightWidth);
    return {left, right, width: right - left};
  };
  // Inside a closed <details> (and not in its summary): not rendered.
  const collapsed = (el) => {
    for (let d = el.closest('details:not([open])'); d;
         d = d.parentElement ? d.parentElement.closest('details:not([open])') : null) {
      const summary = d.querySelector(':scope > summary');
      if (!(summary && summary.contains(el))) return true;
    }
    return false;
  };
  const rendered = (el) => {
    if (!el.getClientRects().length || collapsed(el)) return false;
    if (el.checkVisibility && !el.checkVisibility({visibilityProperty: true})) return false;
    return getComputedStyle(el).visibility === 'visible';
  };
  const snippet = (el) => {
    let text = '';
    if (el.matches('mjx-container') && window.MathJax && MathJax.startup && MathJax.startup.document) {
      try { text = MathJax.startup.document.getMathItemsWithin(el)[0].math; } catch (e) { text = ''; }
    }
    if (!text) text = el.innerText || el.textContent || '';
    text = text.replace(/\s+/g, ' ').trim();
    return text.length > 60 ? text.slice(0, 57) + '...' : text;
  };
  // The heading of the section an element is in: where to look for it on the page.
  const where = (el) => {
    const section = el.closest('section');
    const h = section && section.querySelector(':scope > h1, :scope > h2, :scope > h3, :scope > h4');
    return h ? h.textContent.replace(/[#\s]+$/, '').replace(/\s+/g, ' ').trim().slice(0, 50) : '';
  };
"""

# a) and c): over-wide elements and the code / output shares of the page as it loads.
MEASURE_JS = "() => {" + _HELPERS + r"""
  const col = column();
  const candidates = [];
  const add = (kind, el) => { if (!candidates.some(c => c.el === el)) candidates.push({kind, el}); };
  article.querySelectorAll('table').forEach(el => add(el.closest('.cell_output') ? 'output table' : 'table', el));
  article.querySelectorAll('div.highlight pre').forEach(el => add(el.closest('.cell_output') ? 'output' : 'code', el));
  article.querySelectorAll('.cell_output > *').forEach(el => add('output', el));
  article.querySelectorAll('mjx-container[display]').forEach(el => add('equation', el));
  const wide = [];
  for (const {kind, el} of candidates) {
    if (!rendered(el) || el.closest(FULL_WIDTH)) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;
    let scrolled = el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0;
    // A scrolling (or clipping) wrapper between the element and its cell or section.
    for (let a = el.parentElement; !scrolled && a && a !== article; a = a.parentElement) {
      if (a.matches('section, .cell, article')) break;
      const ox = getComputedStyle(a).overflowX;
      if (ox !== 'visible' && a.clientWidth > 0 && r.width > a.clientWidth + 1
          && a.scrollWidth > a.clientWidth + 1) scrolled = true;
    }
    const cut = r.right > col.right + 1;
    if (!scrolled && !cut) continue;
    wide.push({kind, el, snippet: snippet(el), section: where(el), width: Math.round(Math.max(r.width, el.scrollWidth)),
               how: scrolled ? 'scrolls sideways' : 'cut off'});
  }
  // Report nested findings once, as the outermost (an output that scrolls because of
  // the table in it is an output table).
  const outer = wide.filter(w => !wide.some(o => o !== w && o.el.contains(w.el)));
  outer.forEach(w => {
    if (w.kind === 'output' && wide.some(i => i !== w && w.el.contains(i.el) && i.kind.endsWith('table')))
      w.kind = 'output table';
  });
  const length = (el) => (el.innerText || '').length;
  let code = 0, output = 0;
  article.querySelectorAll('.cell_input').forEach(el => { if (rendered(el)) code += length(el); });
  article.querySelectorAll('div.highlight pre').forEach(el => {
    if (!el.closest('.cell_output, .cell_input') && rendered(el)) code += length(el);
  });
  article.querySelectorAll('.cell_output').forEach(el => { if (rendered(el)) output += length(el); });
  const text = length(article);
  return {
    column: Math.round(col.width),
    text, code, output,
    over_wide: outer.map(w => ({kind: w.kind, snippet: w.snippet, section: w.section,
                                width: w.width, how: w.how})),
  };
}"""

# b): every image, after opening what is collapsed (a reader who opens it sees it so).
FIGURES_JS = "async () => {" + _HELPERS + r"""
  document.querySelectorAll('details:not([open])').forEach(d => { d.open = true; });
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  const images = Array.from(article.querySelectorAll('img'));
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done); setTimeout(done, 10000);
  })));
  await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  return images.map(img => ({
    src: img.currentSrc || img.src, natural: img.naturalWidth,
    width: img.getBoundingClientRect().width, rendered: rendered(img),
    full_width: !!img.closest(FULL_WIDTH), section: where(img),
  }));
}"""


def image_file(src: str, server: str, book_dir: Path) -> Path | None:
    """The file under the built book that a served image URL points to."""
    if not src.startswith(server):
        return None
    path = urllib.parse.unquote(urllib.parse.urlsplit(src).path).lstrip("/")
    return book_dir / path


def figure_scales(images: list[dict], server: str, book_dir: Path) -> tuple[list[dict], list[str]]:
    """Each PNG with a resolution as {src, dpi, px_per_inch, ...}; and the images skipped, with why."""
    measured, skipped = [], []
    for img in images:
        name = urllib.parse.unquote(img["src"].rsplit("/", 1)[-1])
        path = image_file(img["src"], server, book_dir)
        if path is None or not path.is_file():
            skipped.append(f"{name} (not a file of the book)")
            continue
        dpi = png_dpi(path)
        if dpi is None:
            skipped.append(f"{name} (no pHYs resolution)")
            continue
        if not img["natural"] or not img["rendered"]:
            skipped.append(f"{name} (not shown)")
            continue
        inches = img["natural"] / dpi[0]
        measured.append({"src": name, "dpi": round(dpi[0], 1), "natural": img["natural"],
                         "width": round(img["width"], 1), "full_width": img["full_width"],
                         "section": img["section"],
                         "px_per_inch": round(img["width"] / inches, 1)})
    return measured, skipped


def measure(page, server: str, book_dir: Path) -> dict:
    """All three measurements of an opened page (MathJax typeset and images loaded)."""
    view = page.evaluate(MEASURE_JS)
    figures, skipped = figure_scales(page.evaluate(FIGURES_JS), server, book_dir)
    text = max(view["text"], 1)
    return {
        "column_px": view["column"],
        "text_chars": view["text"],
        "code_share": round(view["code"] / text, 3),
        "output_share": round(view["output"] / text, 3),
        "over_wide": view["over_wide"],
        "over_wide_count": len(view["over_wide"]),
        "figures": figures,
        "figures_below_scale": [f for f in figures if f["px_per_inch"] < MIN_PX_PER_FIGURE_INCH],
        "figures_skipped": skipped,
    }


def describe_over_wide(view: dict) -> list[str]:
    return [f"{w['kind']} {w['snippet']!r}: {w['width']} px vs column {view['column_px']} px "
            f"({w['how']}; in '{w['section']}')" for w in view["over_wide"]]


def describe_figures(figures: list[dict]) -> list[str]:
    return [f"{f['src']}: {f['px_per_inch']:.0f} px per figure inch ({f['natural']} px at "
            f"{f['dpi']:.0f} dpi shown {f['width']:.0f} px wide; in '{f['section']}')"
            for f in figures]
