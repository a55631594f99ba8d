# Two entry points that work on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint imports typecheck unit cosmos-server bench chaos clean

# The demo needs the package alone; the tests also need the test tools and the benchmark
# peers (the benchmark tests run them, and mypy checks our code against their real types).
$(BIN)/.venv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(BIN)/.installed-demo: pyproject.toml $(BIN)/.venv
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed: pyproject.toml $(BIN)/.venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(BIN)/.installed-demo

demo: $(BIN)/.installed-demo
	$(BIN)/mussikon demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench chaos

imports: $(BIN)/.installed
	$(BIN)/lint-imports

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# The local Cosmos DB server the `cosmos` tests run against: pinned by its lock file. Without
# npm the cosmos tests skip (and fail under MUSSIKON_REQUIRE_SERVICES=1).
COSMOS_SERVER := tests/cosmos_server
$(COSMOS_SERVER)/node_modules/.installed: $(COSMOS_SERVER)/package.json $(COSMOS_SERVER)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(COSMOS_SERVER) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the Cosmos DB tests (marker cosmos) will not find their server"; fi

cosmos-server: $(COSMOS_SERVER)/node_modules/.installed

unit: $(BIN)/.installed cosmos-server
	$(BIN)/pytest -q --durations=15

test: lint imports typecheck unit

# Not part of `test`: about a quarter of an hour of faults (see README, "Chaos"). Needs root,
# PostgreSQL and RabbitMQ on loopback, and the RabbitMQ package (for its three-node cluster).
chaos: $(BIN)/.installed
	$(BIN)/python -m chaos $(SCENARIOS)

bench: $(BIN)/.installed
	$(BIN)/mussikon bench store --backend sqlite

clean:
	rm -rf $(VENV) mussikon.db mussikon.db-wal mussikon.db-shm mussikon-demo.db \
		mussikon-demo.db-wal mussikon-demo.db-shm .pytest_cache .mypy_cache .ruff_cache
