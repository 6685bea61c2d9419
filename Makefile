# HT-CNNs: `make demo` and `make test` each set up .venv from scratch when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser bench lint clean image image-cpu test-container

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/htcnns demo --output demo_output

test: $(STAMP) browser
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

# Headless Chromium for the QC page's browser test (Debian's chromium); the test skips, saying why, without it.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1)) \
	    || echo "chromium not installed: the QC page's browser test will be skipped"; }

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_reference.py
	$(BIN)/python benchmarks/bench_speed.py

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
