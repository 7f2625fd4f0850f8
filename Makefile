# oneshot: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ONESHOT_DATA ?= ../shared/data
export ONESHOT_DATA

.PHONY: venv demo test test-fast bench clean

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

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/train_and_evaluate.py --name protonet_conv4_vinyals --method protonet --episodes 24000 --lr-step 4000 --max-minutes 43
	$(PY) benchmarks/throughput.py $(if $(EASYFSL),--easyfsl-path $(EASYFSL))
	$(PY) benchmarks/make_tables.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache demo-output
