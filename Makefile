# hf_gaf — every command a user or CI needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUNS ?= runs

.PHONY: help install test test-all bench-optim bench-map

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

install: $(STAMP)  ## make .venv and install hf_gaf editable with its dev extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install  ## run the default (fast) test suite
	$(PY) -m pytest

test-all: install  ## run every test, the slow ones too
	$(PY) -m pytest -m ''

bench-optim: install  ## optimizer-step benchmark on resnet50's parameters (GAFSGD vs torch SGD)
	$(PY) recipes/bench_optimizer_step.py --out $(RUNS)/bench_optim.json

bench-map: install  ## mAP speed: voc_eval vs torchmetrics on 5,000 images x 100 detections x 20 classes
	$(PY) recipes/bench_map.py --out $(RUNS)/bench_map.json
