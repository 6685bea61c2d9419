# HT-CNNs: `make demo` and `make test` each set up .venv from scratch when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean image image-cpu test-container

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/htcnns demo --output demo_output

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_reference.py

image:
	docker build -t htcnns:0.1.0 .

image-cpu: $(STAMP)
	PYTHON=$(BIN)/python container/build-cpu.sh htcnns:cpu

test-container: $(STAMP)
	VENV_PYTHON=$(abspath $(BIN)/python) container/test-container.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache
