# The two commands of the README's Quick start are `make dev` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install dev test clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the identity provider with its embedded defaults, and the two demo agencies.
dev: install
	$(BIN)/idp dev

## Run the test suite (starts Redis and PostgreSQL first when they are down).
test: install
	@bash .ci/services
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) instance *.egg-info
