# oneshot: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ONESHOT_DATA ?= ../shared/data
export ONESHOT_DATA
# `make test` type-checks src/ with mypy as part of `lint`; TYPES=0 skips mypy (ruff still runs), for a
# branch whose type errors are being fixed elsewhere. CI runs the default (TYPES=1): a type error fails it.
TYPES ?= 1
# Coverage of the package over the whole suite: a table on the terminal, coverage.json for
# benchmarks/coverage_table.py (the README figure and docs/coverage.md).
COV := --cov=oneshot --cov-report=term --cov-report=json:coverage.json

.PHONY: venv demo lint test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first, so no dependency can pull a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,text,molecules,serve,faces]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/oneshot demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src
	$(VENV)/bin/ruff format --check src
ifeq ($(TYPES),1)
	$(VENV)/bin/mypy
else
	@echo "mypy skipped (TYPES=$(TYPES))"
endif

# Lint and types first: a lint or type error fails `make test` (and CI) like a failing test.
test: lint
	$(PY) -m pytest -q --durations=25 $(COV)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/train_and_evaluate.py --name protonet_conv4_vinyals --method protonet --episodes 24000 --lr-step 4000 --max-minutes 43
	$(PY) benchmarks/throughput.py $(if $(EASYFSL),--easyfsl-path $(EASYFSL))
	$(PY) benchmarks/make_tables.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache demo-output .coverage coverage.json
