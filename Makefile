# The two commands of the README's Quick start are `make dev` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install dev test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the identity provider with its embedded defaults, and the two demo agencies.
dev: install
	$(BIN)/idp dev

## Run the test suite (starts Redis and PostgreSQL first when they are down, and installs what
## the browser, accessibility and interop tests need: Debian's Chromium and the npm packages).
test: install
	@bash .ci/services
	@bash .ci/browser-deps
	$(BIN)/python -m pytest

## Load benchmark: ours beside the certified peer (oidc-provider), one run; see bench/README.md.
## Needs PostgreSQL and Redis on loopback, node/npm, and wrk (installed from Debian when missing).
## Options: make bench BENCH_ARGS="--duration 5 --concurrency 16 --only login,token"
bench: install
	@bash .ci/services
	@command -v wrk >/dev/null || (apt-get install -y -qq wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk))
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance *.egg-info
