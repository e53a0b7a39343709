"""Small fixes to the HTML pages, found by the browser test (tests/browser).

With the pinned Jupyter Book 1.0.4 stack (Sphinx 7.4, sphinx-book-theme 1.3,
pydata-sphinx-theme 0.17, sphinx-thebe 0.3.1) every page had two JavaScript
errors in the reader's console:

* ``Identifier 'THEBE_JS_URL' has already been declared``: sphinx-thebe's inline
  configuration script (and ``sphinx-thebe.js``) reach the page twice;
* ``Got invalid theme mode: . Resetting to auto.``: the theme's layout reads a
  ``default_mode`` that nothing sets, so the page starts with an empty mode.

This extension drops repeated script tags and starts pages in the ``auto``
(light/dark as the reader's system says) mode.
"""
from __future__ import annotations


def _fix_page(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        seen, unique = set(), []
        for script in scripts:
            # the two copies differ only in filename None vs "" (an inline script):
            # compare what the page receives
            attributes = getattr(script, "attributes", {})
            key = (str(getattr(script, "filename", script) or ""),
                   tuple(sorted((k, str(v)) for k, v in attributes.items())))
            if key not in seen:
                seen.add(key)
                unique.append(script)
        scripts[:] = unique
    if not context.get("default_mode"):
        context["default_mode"] = "auto"


def setup(app):
    app.connect("html-page-context", _fix_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
