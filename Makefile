# Two commands do all the set-up on a fresh machine (python3 >= 3.10 and make):
#   make demo   - create .venv, install riverbed, run the demo workflow
#   make test   - create .venv, install riverbed with dev tools, lint, type check, test
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit docs bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/research_assistant.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest

test: lint typecheck unit

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict -d site

bench:
	benchmarks/run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
