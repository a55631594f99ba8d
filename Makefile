# Two entry points that work on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The bench extra (the peers the benchmarks measure) is installed too: the benchmark
	# tests run them, and mypy checks our code against their real types.
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/mussikon demo --fresh

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(BIN)/.installed
	$(BIN)/mussikon bench store --backend sqlite

clean:
	rm -rf $(VENV) mussikon.db mussikon.db-wal mussikon.db-shm .pytest_cache .mypy_cache .ruff_cache
