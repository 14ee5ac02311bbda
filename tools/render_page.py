"""Rerun one page of the book with papermill parameters and render that page alone to HTML.

    python tools/render_page.py NB [papermill options...]
    make page NB=03_spgd ARGS="-p sigma 0.5"

1. `notebooks/NB.py` (the jupytext source) is converted to a fresh notebook and executed by
   papermill in `notebooks/` (the working directory the pages expect), with the given papermill
   options (`-p name value`, `-y yaml`, ...). The committed `notebooks/NB.ipynb` is not touched.
2. The executed copy is built as a one-page Jupyter Book with the book's own `_config.yml`
   (MathJax offline, sphinx-proof, the bibliography, the glue roles resolved by myst-nb), plus a
   references section for the page's citations.

Output: `_build/pages/NB/index.html` (with its `_static/` and `_images/`) and the executed
notebook `_build/pages/NB/NB.ipynb`. Links to other pages of the book ({prf:ref} to a box on
another page) render as plain text in the single-page build.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _exe(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found next to {sys.executable} or on PATH")
    return found


def render_page(name: str, papermill_args: list[str]) -> Path:
    """Execute `notebooks/<name>.py` with papermill and render it; returns the index.html path."""
    source = ROOT / "notebooks" / f"{name}.py"
    if not source.exists():
        pages = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
        raise SystemExit(f"NB={name!r}: no notebooks/{name}.py; pages are {', '.join(pages)}")
    out = ROOT / "_build" / "pages" / name
    work = ROOT / "_build" / "pages" / f".{name}.work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)

    # 1. execute a fresh copy of the source with the given parameters
    fresh = work / f"{name}.input.ipynb"
    nbformat.write(jupytext.read(source), fresh)
    executed = work / "src" / "index.ipynb"
    subprocess.run([_exe("papermill"), "--log-level", "WARNING", "--cwd", str(ROOT / "notebooks"),
                    str(fresh), str(executed), *papermill_args], check=True)

    # 2. one-page book: the page, then its references
    nb = nbformat.read(executed, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "## References\n\n```{bibliography}\n:filter: docname in docnames\n```"))
    nbformat.write(nb, executed)
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config["bibtex_bibfiles"] = [str(ROOT / "book" / "references.bib")]
    config["exclude_patterns"] = ["_build/*", "**.ipynb_checkpoints"]
    sphinx = config.setdefault("sphinx", {})
    sphinx["local_extensions"] = {k: str(ROOT / v) for k, v in (sphinx.get("local_extensions") or {}).items()}
    if config.get("html", {}).get("favicon"):
        config["html"]["favicon"] = str(ROOT / config["html"]["favicon"])
    config["only_build_toc_files"] = True
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    params = " ".join(papermill_args)
    config["title"] = f"{config.get('title', '')} — page {name}" + (f" ({params})" if params else "")
    (work / "src" / "_config.yml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    (work / "src" / "_toc.yml").write_text("format: jb-book\nroot: index\n", encoding="utf-8")
    subprocess.run([_exe("jupyter-book"), "build", "--all", "--keep-going", "--path-output", str(work),
                    str(work / "src")], check=True)

    html = work / "_build" / "html"
    if not (html / "index.html").exists():
        raise SystemExit(f"the single-page build wrote no index.html under {html}")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(html, out)
    shutil.copy2(executed, out / f"{name}.ipynb")
    shutil.rmtree(work, ignore_errors=True)
    return out / "index.html"


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__)
    page = render_page(argv[0], argv[1:])
    print(f"Page: {page}")


if __name__ == "__main__":
    main(sys.argv[1:])
