# semsim: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, installed before the project so pip never pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.semsim-installed

.PHONY: setup demo test lint example clean help

help:
	@echo "make demo     set up .venv, start the embedded PostgreSQL, ingest the sample corpus, search it"
	@echo "make test     set up .venv and run the whole test suite"
	@echo "make lint     ruff + mypy (the core passes mypy --strict)"
	@echo "make example  run the example Django site on the embedded PostgreSQL"
	@echo "make setup    only create .venv and install (idempotent)"

setup: $(STAMP)

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/semsim demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check semsim_pg django_semsim migrations tests benchmarks
	$(BIN)/mypy semsim_pg

example: setup
	cd example && ../$(BIN)/python manage.py migrate --noinput && ../$(BIN)/python manage.py load_sample_data && ../$(BIN)/python manage.py runserver

clean:
	rm -rf $(VENV) build dist *.egg-info
