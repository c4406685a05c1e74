# tokstream: every target bootstraps what it needs into project-local, git-ignored dirs.
#   make help       this list (also plain `make`)
#   make demo       a forced agent turn on a tiny CPU vLLM, live: tools run as their calls close
#                   (ARGS="--base-url URL --model M": against your server, nothing installed)
#   make test       the whole suite, live CPU vLLM included (installs vLLM on first run)
#   make test-fast  everything that does not need a live server
#   make lint       import contracts (import-linter) + ruff + mypy --strict on tokstream/
#   make serve      start the tiny CPU vLLM in the background, on port 8000 if it is free
#                   (PORT=N for another); prints its URL, PID and an export line, returns
#   make cluster    start N tiny CPU vLLMs (N=2 unless given) and vllm-router in front of
#                   them (PORT=P for the router); prints the router URL and every PID, returns
#   make stop       stop everything `make serve` and `make cluster` started, each by PID with
#                   its children; PID=N stops one server, or one cluster by its router's PID
#                   (SIGTERM, then SIGKILL after TIMEOUT seconds, default 20)
#   make bench      speed and memory against peers measured in the same run (~15 min;
#                   QUICK=1: each scenario small and once, ~1 min; SCENARIOS="tput paced":
#                   only those; VARIANTS="default transport=httpx": tokstream rows per
#                   set of Client options). Prints the table, writes .bench/results.md
#   make venv       .venv with tokstream and its dev tools (every target does it first)
#   make vllm       CPU vLLM (~100 s and 3.4 GiB once) and the tiny model, in .vllm/
#   make router     install vllm-router (~130 MB) into .vllm/router
#   make clean      remove .venv and the caches (not .vllm/)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv vllm router test test-fast lint demo bench serve cluster stop clean
.DEFAULT_GOAL := help

help:
	@sed -n 's/^#   /  /p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

# One progress line per step; pip's output goes to .venv/setup.log (shown if it fails).
$(STAMP): pyproject.toml
	@echo "setup: .venv: installing tokstream and its dev tools (about a minute the first time) ..."
	@start=$$(date +%s); \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "setup: '$(PYTHON) -m venv' failed: tokstream needs Python >= 3.11 (PYTHON=...)"; exit 1; }; \
	log=$(VENV)/setup.log; \
	if ! { $(BIN)/python -m pip install --disable-pip-version-check -U pip && \
	       $(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'; } > $$log 2>&1; then \
	  tail -n 25 $$log; echo "setup: pip failed; its whole output is in $$log"; exit 1; \
	fi; \
	echo "setup: .venv ready in $$(( $$(date +%s) - start )) s (pip's output: $$log)"
	@touch $@

# CPU vLLM (~100 s and 3.4 GiB the first time, then a no-op) and the tiny model dir, in .vllm/
vllm: venv
	@$(BIN)/python -m tokstream.testing install
	@$(BIN)/python -m tokstream.testing model

# vllm-router (a Rust binary on PyPI, ~130 MB and 10 s the first time) in its own venv
router: venv
	@$(BIN)/python -m tokstream.testing install-router

test: venv vllm router
	$(BIN)/python -m pytest

# The router's own tests run it in front of replay servers: no vLLM, but the binary.
test-fast: venv router
	$(BIN)/python -m pytest -m "not vllm"

# With ARGS="--base-url ..." the demo talks to that server: no local vLLM is set up.
demo: venv $(if $(findstring --base-url,$(ARGS)),,vllm)
	@$(BIN)/python examples/demo.py $(ARGS)

# `serve` returns once /health answers; the server keeps running in its own session.
# Port 8000 (the README's quickstart and the tokstream CLI look there) unless it is taken.
serve: venv vllm
	@pid=$$($(BIN)/python -m tokstream.testing serve $(if $(PORT),--port $(PORT),--prefer-port 8000)) && \
	url=$$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["base_url"])' \
	  "$${TOKSTREAM_VLLM_HOME:-.vllm}/servers/$$pid.json") && \
	echo "serve: export TOKSTREAM_BASE_URL=$$url  # the quickstart and the CLI read it" && \
	echo "serve: $$url PID $$pid (stop it with: make stop PID=$$pid)"

# `cluster` returns once the router answers; replicas and router keep running, each in its
# own session. The CLI prints "router|backend-I URL PID N" lines.
cluster: venv vllm router
	@out=$$($(BIN)/python -m tokstream.testing cluster $(if $(N),-n $(N)) $(if $(PORT),--port $(PORT))) && \
	echo "$$out" | sed 's/^/cluster: /' && \
	pid=$$(echo "$$out" | awk '$$1 == "router" {print $$4}') && \
	echo "cluster: stop it with: make stop PID=$$pid (or make stop, for everything)"

stop: venv
	$(BIN)/python -m tokstream.testing stop $(if $(PID),$(PID),--all) $(if $(TIMEOUT),--timeout $(TIMEOUT))

# Benchmarks print numbers and never fail (tests/bench/bench_streams.py says how they
# measure). The peers come from the `bench` extra; the live row needs the CPU vLLM, the
# parser figures only the tiny model's tokenizer. Each scenario is its own invocation
# (the longest takes about 4 min); the last one prints the whole table.
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ALL   := tput paced conc prompt cancel reuse footprint memory $(if $(QUICK),,live)
BENCH_RUN   := $(or $(SCENARIOS),$(BENCH_ALL))
BENCH_ARGS  := --scale $(if $(QUICK),quick,full) $(foreach v,$(VARIANTS),--variant $(v))

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,bench]' 2>&1 | { grep -v 'is ignored' || true; }
	@touch $@

bench: $(BENCH_STAMP) $(if $(filter live,$(BENCH_RUN)),vllm)
	$(BIN)/python -m tokstream.testing model
	@mkdir -p .bench
	$(BIN)/python tests/bench/bench_core.py | tee .bench/core.md
	$(BIN)/python tests/bench/bench_parser.py --tokenizer "$${TOKSTREAM_VLLM_HOME:-.vllm}/tiny-qwen" | tee .bench/parser.txt
	$(if $(SCENARIOS),,rm -rf .bench/raw)
	@for s in $(BENCH_RUN); do \
	  $(BIN)/python tests/bench/bench_streams.py $(BENCH_ARGS) --scenarios $$s > /dev/null || exit 1; \
	done
	$(BIN)/python tests/bench/bench_streams.py --report-only

lint: venv
	$(BIN)/lint-imports
	$(BIN)/ruff check tokstream tests examples
	$(BIN)/ruff format --check tokstream tests examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
