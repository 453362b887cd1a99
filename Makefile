# aggc-rl developer entry points. `make test` works on a fresh CPU machine:
# it creates .venv, installs the CPU torch first, then the project with a
# constraints file that pins that torch (so no CUDA torch is ever resolved).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
CONSTRAINTS ?= constraints/cpu.txt
STAMP := $(VENV)/.installed

.PHONY: venv test lint format bench demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	$(PY) -c "import torch; assert torch.__version__.startswith('$(TORCH_VERSION)'), torch.__version__"
	touch $@

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# GRPO on CPU through verl's real trainer, clip=global vs clip=aggc, then the stability report.
# FAST=1: a 3-step smoke run.
demo: $(STAMP)
	$(PY) -m aggc_rl.demo --out $(or $(OUT),outputs/demo$(if $(FAST),-fast)) $(if $(FAST),--fast)

bench: $(STAMP)
	$(PY) -m bench.clip_step --out bench/results/clip_step_cpu.json
	$(PY) -m bench.engine_step --out bench/results/engine_step_cpu.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
