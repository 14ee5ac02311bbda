"""The built book (`_build/html`) works offline and carries the paper's numbering.

`make test` builds the book before pytest runs, so these tests read that build. When no build is
there (pytest run on its own), the first test that needs it builds it once with the same command
(`jupyter-book build --all -W --keep-going .`, a few minutes); a failed build fails the tests with
the builder's output, it never skips them.

Checks:
- no page references an external script, stylesheet, font or preload (http:, https: or
  protocol-relative `//` URLs) — a reader with no network gets every asset from `_static`;
- MathJax is the local copy served by `sphinx-mathjax-offline` and its fonts are in the build;
- no page shows an unresolved glue role (`{glue:text}`), i.e. the page was rendered by myst-nb;
- the paper's objects carry the paper's numbers (Algorithm 2.1, Lemma 8, ...), as titled boxes.
"""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
EXTERNAL = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)


def _jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    if found is None:
        pytest.fail("jupyter-book is not installed in this environment (pip install -r requirements.txt)")
    return found


@pytest.fixture(scope="session")
def built_html() -> Path:
    """The book's HTML build; built here (once) when `make test`'s build step did not run."""
    if not (HTML / "index.html").exists():
        proc = subprocess.run([_jupyter_book(), "build", "--all", "-W", "--keep-going", str(ROOT)],
                              cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not (HTML / "index.html").exists():
            pytest.fail("the book did not build (run `make test-book` to see why):\n" + proc.stdout[-4000:]
                        + proc.stderr[-4000:])
    return HTML


class _Assets(html.parser.HTMLParser):
    """Collects the URLs a browser fetches by itself: scripts, stylesheets, preloads, icons, fonts,
    images, iframes (not the `<a href>` links a reader may follow)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "embed") and a.get("src"):
            self.urls.append((tag, a["src"]))
        if tag == "link" and a.get("href"):
            rel = (a.get("rel") or "").lower()
            if any(r in rel for r in ("stylesheet", "preload", "modulepreload", "icon", "prefetch", "manifest")):
                self.urls.append((f"link rel={rel}", a["href"]))


def _pages(root: Path) -> list[Path]:
    pages = sorted(p for p in root.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    assert pages, f"no HTML pages under {root}"
    return pages


def test_no_page_loads_an_external_asset(built_html):
    offenders = []
    for page in _pages(built_html):
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        offenders += [f"{page.relative_to(built_html)}: <{tag}> {url}" for tag, url in parser.urls if EXTERNAL.match(url)]
    assert not offenders, "external assets (the book must work offline):\n" + "\n".join(offenders)


def test_no_stylesheet_imports_an_external_url(built_html):
    pattern = re.compile(r"(@import\s+(url\()?|url\()\s*['\"]?\s*(https?:)?//", re.IGNORECASE)
    offenders = [str(css.relative_to(built_html)) for css in (built_html / "_static").rglob("*.css")
                 if pattern.search(css.read_text(encoding="utf-8", errors="replace"))]
    assert not offenders, f"stylesheets importing external URLs: {offenders}"


def test_mathjax_is_served_from_the_build(built_html):
    page = (built_html / "notebooks" / "01_definitions.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page, flags=re.IGNORECASE)
    assert len(scripts) == 1 and scripts[0].split("?")[0] == "../_static/mathjax/tex-chtml.js", scripts
    mathjax = built_html / "_static" / "mathjax"
    assert (mathjax / "tex-chtml.js").stat().st_size > 100_000
    fonts = list((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) >= 20, "MathJax's CHTML fonts are missing from the build"


def test_every_glue_role_is_resolved(built_html):
    leftovers = [str(p.relative_to(built_html)) for p in _pages(built_html)
                 if "{glue:" in re.sub(r"<(pre|code)[^>]*>.*?</\1>", "", p.read_text(encoding="utf-8"), flags=re.S)]
    assert not leftovers, f"pages showing raw glue roles: {leftovers}"


def _text(page: Path) -> str:
    raw = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", page.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", raw)))


# The paper's numbering (read from the paper's text): each object's title as the book shows it.
PAPER_TITLES = {
    "01_definitions": ["Definition 1 (Targeted adversarial example)", "Definition 2 (Local robustness)",
                       "Observation 3", "Algorithm 2.1 (PredictWithDefense)", "Figure 1"],
    "02_monotonicity": ["Definition 4 (Monotonicity of local robustness certifiers)",
                        "Definition 5 (Exact local robustness certifier)", "Lemma 6",
                        "Definition 7 (Lipschitz-based local robustness certifier)", "Lemma 8"],
    "03_spgd": ["Algorithm 3.2 (SmoothedPgdAttack)", "Table 2"],
    "05_degradation_attack": ["Algorithm 3.1 (DegradationAttack)", "Table 1", "Table 3"],
    "06_linf_certifier": ["Table 4", "Table 5"],
}


@pytest.mark.parametrize("name", sorted(PAPER_TITLES))
def test_the_papers_objects_keep_the_papers_numbers(built_html, name):
    text = " ".join(_text(built_html / "notebooks" / f"{name}.html").split())
    missing = [t for t in PAPER_TITLES[name] if t not in text]
    assert not missing, f"{name}: titles missing from the rendered page: {missing}"


def test_no_box_is_numbered_by_the_book(built_html):
    """sphinx-proof would number boxes per page ("Algorithm 1.1"), which clashes with the paper's
    numbers. Every box is `:nonumber:` with an explicit title: the paper's number for the paper's
    objects ("Algorithm 3.1 (DegradationAttack)"), "(this book)" or the source for the others."""
    numbered = re.compile(r'<p class="admonition-title"[^>]*>\s*<span class="caption-number">\s*'
                          r'(\w+)\s+(\d+(?:\.\d+)*)\s*</span>')
    offenders = []
    for page in _pages(built_html):
        offenders += [f"{page.relative_to(built_html)}: {kind} {num}"
                      for kind, num in numbered.findall(page.read_text(encoding="utf-8"))]
    assert not offenders, ("boxes numbered by the book (give them :nonumber: and the paper's number or "
                           "'(this book): ...' as title):\n" + "\n".join(offenders))


def test_the_paper_is_cited_with_its_repository(built_html):
    text = (built_html / "book" / "bibliography.html").read_text(encoding="utf-8")
    assert "Degradation Attacks on Certifiably Robust Neural Networks" in text
    assert "https://github.com/ravimangal/degradation-attacks" in text
    assert "Anonymous" not in text and "double-blind" not in text


WALKTHROUGH = ["01_definitions", "02_monotonicity", "03_spgd", "04_gloro", "05_degradation_attack", "06_linf_certifier"]


@pytest.mark.parametrize("name", WALKTHROUGH)
def test_bookkeeping_is_hidden_and_tables_are_tables(built_html, name):
    """Glue calls live in `remove-input` cells (not shown), tables are HTML tables, no pipe-table
    text is left in the page, and every figure image has alt text."""
    page = (built_html / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
    shown_code = " ".join(re.findall(r'<div class="cell_input[^"]*"[^>]*>(.*?)</div>\s*</div>', page, flags=re.S))
    assert "glue(" not in html.unescape(re.sub(r"<[^>]+>", "", shown_code)), f"{name}: a visible code cell calls glue()"
    prose = re.sub(r'<div class="cell_input[^"]*"[^>]*>.*?</div>\s*</div>', " ", page, flags=re.S)
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", prose,
                                                                flags=re.S))).split())
    assert "|---" not in text and "| --- |" not in text, f"{name}: raw pipe-table text in the page"
    assert "<table" in page, f"{name}: no HTML table"
    images = re.findall(r"<img [^>]*>", page)
    assert images and all(re.search(r'alt="[^"]{20,}"', img) for img in images), f"{name}: an image lacks alt text"
