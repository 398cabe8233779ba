# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step
# they call. Set-up is idempotent: a second run only re-installs when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
PORT   ?= 9090
# llama.cpp is compiled for AVX2 rather than for this CPU (-march=native): on a Xeon with
# AMX, native builds of llama-cpp-python 0.3.36 take ggml's AMX matrix path, which dies of
# a segmentation fault at the first decode on these virtual machines (seen here). AVX2 runs
# on every x86-64 machine of the last decade; set LLAMA_CMAKE_ARGS to build otherwise.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: run test setup services lint typecheck unit bench soak docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

services:
	scripts/ensure-services.sh

## run: set up, answer a query with the embedded model, keep serving its metrics (Ctrl-C to stop)
QUERY ?= What is 2+2?
RUN_DB ?= tinyllm-run.db
run: setup
	$(BIN)/tinyllm run "$(QUERY)" --metrics-port $(PORT) --db $(RUN_DB)

## test: set up (Python packages, Debian packages, services), lint, type-check, every test
test: setup services lint typecheck
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks examples

typecheck: setup
	$(BIN)/mypy

## soak: the long reliability runs (tests/reliability, marked soak), each printing its figure
soak: setup services
	$(BIN)/python -m pytest -q -m soak tests/reliability

## bench: our cost against the raw libraries, side by side, as ratios
bench: setup services
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## docs: regenerate docs/metrics.md and deploy/prometheus/alerts.yml from the catalog
docs: setup
	$(BIN)/python -m tinyllm.metrics.render
	$(BIN)/python -m tinyllm.grafana

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
