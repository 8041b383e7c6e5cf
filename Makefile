# Two commands do all the setup on a fresh machine (Python >= 3.10 and git):
#   make test   -> creates .venv, installs sat_core, runs ruff and the whole test suite
#   make book   -> same setup, executes every chapter notebook with papermill, builds _build/html
#                  and the student edition _build/html-student
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sat-installed
PYTEST_ARGS ?=

.PHONY: help setup test test-fast test-colab lint book book-html book-student browser-test student nbgrader bench bench-smoke clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(STAMP): requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3 found; install Python >= 3.10"; exit 1; }
	@test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (sat)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install requirements + sat_core (editable)

lint: setup  ## ruff on the package, tests, benchmarks and notebooks
	$(BIN)/ruff check .

test: setup lint  ## ruff + the whole test suite, one pytest-xdist worker per core (notebooks at smoke size included)
	$(BIN)/python -m pytest -n auto --dist loadgroup --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

test-fast: setup  ## the unit tests only (no notebooks, no slow tests)
	$(BIN)/python -m pytest -m "not slow and not bench and not colab" $(PYTEST_ARGS)

test-colab: setup  ## the Colab install path: wheel + install cell in a fresh venv that has torch, chapter 4 (~2 min)
	$(BIN)/python -m pytest -m colab tests/test_colab.py $(PYTEST_ARGS)

book: setup  ## execute every notebook (papermill, default parameters), build _build/html and the student edition _build/html-student
	$(BIN)/python -m sat_core.book build

book-html: setup  ## rebuild the HTML (both editions) from the already executed notebooks
	$(BIN)/python -m sat_core.book build --no-execute

book-student: setup  ## rebuild only the student edition _build/html-student from the executed notebooks
	$(BIN)/python -m sat_core.book build-student

browser-test: setup  ## open the built site in headless Chromium, check every chapter page
	$(BIN)/python -m sat_core.book browser-test

student: setup  ## write the notebooks without solutions to student/notebooks (commit them: the student site's Colab buttons open them)
	$(BIN)/python -m sat_core.book.student notebooks student/notebooks

nbgrader: setup  ## write an nbgrader course (every chapter's exercises) to _build/nbgrader
	$(BIN)/python -m sat_core.book.nbgrader_export notebooks _build/nbgrader --force

bench: setup  ## run every benchmark (prints figures and one JSON line each)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

bench-smoke: setup  ## the benchmark scripts at --quick sizes, checked by pytest (CI runs it)
	$(BIN)/python -m pytest -m bench tests/test_benchmarks.py $(PYTEST_ARGS)

clean:  ## remove build output (keeps .venv)
	rm -rf _build
