# semsim: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, installed before the project so pip never pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Where pip would take torch's CUDA build (plain PyPI on Linux), point it at the CPU wheels:
#   make demo TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_INDEX ?=
STAMP  := $(VENV)/.semsim-installed

.PHONY: setup demo test lint example clean help

help:
	@echo "make demo     set up .venv, start the embedded PostgreSQL, ingest the sample corpus, search it"
	@echo "make test     set up .venv, lint, and run the whole test suite"
	@echo "make lint     ruff (check + format) and mypy (strict for the core)"
	@echo "make example  run the example Django site on the embedded PostgreSQL"
	@echo "make setup    only create .venv and install (idempotent)"

setup: $(STAMP)

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/semsim demo

# Lint first: CI (.ci/run calls `make test`) checks types and style too.
test: lint
	$(BIN)/python -m pytest

LINTED := semsim_pg django_semsim migrations tests benchmarks example

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy semsim_pg django_semsim

example: setup
	cd example && ../$(BIN)/python manage.py migrate --noinput && ../$(BIN)/python manage.py load_sample_data && ../$(BIN)/python manage.py runserver

clean:
	rm -rf $(VENV) build dist *.egg-info
