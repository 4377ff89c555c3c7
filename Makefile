# The two commands a new user runs: `make demo` and `make test`. `make ui` opens the Dagster UI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export IHUB_DATA_DIR ?= $(CURDIR)/.data
export DAGSTER_HOME ?= $(IHUB_DATA_DIR)/dagster

.PHONY: setup demo test test-fast ui bench lint format clean

# Re-installs only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup  ## simulator + DMAMA assets for the last 24 hours + checks + analyst catalog
	$(BIN)/ihub demo --live-minutes 2

# Three workers on two cores: most tests wait on sockets and subprocesses, not the CPU. A test file stays
# on one worker, so its module fixtures (a simulator, a materialized catalogue) are built once.
PYTEST_WORKERS ?= -n 3 --dist loadfile

test: setup  ## every suite, as CI runs it
	$(BIN)/pytest $(PYTEST_WORKERS)

test-fast: setup  ## skip the slow and the service-backed suites
	$(BIN)/pytest $(PYTEST_WORKERS) -m "not slow and not service"

ui: setup  ## Dagster UI on http://127.0.0.1:3000 with the same defaults as the demo
	$(BIN)/python -c "from ihub.environment import prepare_dagster_home; prepare_dagster_home()"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: setup  ## benchmarks; figures land in bench/results/
	$(BIN)/python -m bench.dmama_backfill
	$(BIN)/python -m bench.dmama_rate_limited
	$(BIN)/python -m bench.mqtt_throughput
	$(BIN)/python -m bench.modbus_decode
	$(BIN)/python -m bench.opcua_notifications
	$(BIN)/python -m bench.alert_latency
	$(BIN)/python -m bench.window_latency
	$(BIN)/python -m bench.erp_backfill

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(IHUB_DATA_DIR)
