"""Sphinx extension of this book: its stylesheet, and no Thebe (live code in the page).

`book/_static/book.css` keeps every output within the text column (code and printed output wrap
instead of scrolling sideways). It is added to every page from `book/_static`.

The book has no Binder/Thebe back end (`launch_buttons` names none), yet `sphinx-thebe`, which
Jupyter Book always loads, writes its configuration script into every page -- twice in this
build, which makes the browser report "Identifier 'THEBE_JS_URL' has already been declared" --
with a URL on unpkg.com that an offline reader could never load. This removes that script and
`sphinx-thebe.js` from every page; nothing else is touched.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "_static"


def _drop_thebe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    kept = []
    for script in scripts:
        filename = str(getattr(script, "filename", script) or "")
        body = str(getattr(script, "attributes", {}).get("body", "")) if hasattr(script, "attributes") else ""
        if "sphinx-thebe.js" in filename or "THEBE_JS_URL" in body or "unpkg.com/thebe" in filename:
            continue
        kept.append(script)
    context["script_files"] = kept


def _add_static(app, config) -> None:
    if str(STATIC) not in [str(p) for p in config.html_static_path]:
        config.html_static_path.append(str(STATIC))


def setup(app):
    app.connect("config-inited", _add_static)
    app.add_css_file("book.css")
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
