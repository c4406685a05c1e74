# tokstream: every target bootstraps what it needs into project-local, git-ignored dirs.
#   make test       the whole suite, live CPU vLLM included (installs vLLM on first run)
#   make test-fast  everything that does not need a live server
#   make lint       import contracts (import-linter) + ruff + mypy --strict on tokstream/
#   make demo       a forced agent turn on a tiny CPU vLLM, live: tools run as their calls close
#   make bench      speed and memory, as ratios against peers measured in the same run
#   make serve      start the tiny CPU vLLM in the background (PORT=N, else a free port);
#                   prints its URL and PID, then returns
#   make stop       stop a server `make serve` started, with its children: make stop PID=N
#                   (SIGTERM, then SIGKILL after TIMEOUT seconds, default 20)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv vllm test test-fast lint demo bench serve stop clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip 2>&1 | { grep -v 'is ignored' || true; }
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v 'is ignored' || true; }
	@touch $@

# CPU vLLM (~100 s and 3.4 GiB the first time, then a no-op) and the tiny model dir, in .vllm/
vllm: venv
	$(BIN)/python -m tokstream.testing install
	$(BIN)/python -m tokstream.testing model

test: venv vllm
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not vllm"

demo: venv vllm
	$(BIN)/python examples/demo.py $(ARGS)

# `serve` returns once /health answers; the server keeps running in its own session.
serve: venv vllm
	@pid=$$($(BIN)/python -m tokstream.testing serve $(if $(PORT),--port $(PORT))) && \
	url=$$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["base_url"])' \
	  "$${TOKSTREAM_VLLM_HOME:-.vllm}/servers/$$pid.json") && \
	echo "serve: $$url PID $$pid (stop it with: make stop PID=$$pid)"

stop: venv
	@test -n "$(PID)" || { echo "usage: make stop PID=N (the PID that make serve printed)" >&2; exit 2; }
	$(BIN)/python -m tokstream.testing stop $(PID) $(if $(TIMEOUT),--timeout $(TIMEOUT))

# Benchmarks print numbers and never fail. The parser's needs only the tiny model's tokenizer.
bench: venv
	$(BIN)/python -m tokstream.testing model
	$(BIN)/python tests/bench/bench_core.py
	$(BIN)/python tests/bench/bench_parser.py --tokenizer .vllm/tiny-qwen

lint: venv
	$(BIN)/lint-imports
	$(BIN)/ruff check tokstream tests examples
	$(BIN)/ruff format --check tokstream tests examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
