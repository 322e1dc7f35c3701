# rtml: every target creates the virtualenv (.venv/) and node_modules/ on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Prefer Python 3.12 (the Lambda runtime), also through pyenv; fall back to python3 (>= 3.11).
PYTHON ?= $(shell for p in python3.12 $$(ls -d "$$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 2>/dev/null) python3; do \
	"$$p" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
LOCK := requirements/lock-py$(PY_VERSION).txt
EXTRAS := serve,train,infra,local,dev
DATA ?= data
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install bundle openapi lint typecheck pytest pytest-all synth test test-all demo bench bench-small bench-peers lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml $(wildcard requirements/lock-py*.txt)
	@test -n "$(PYTHON)" || { echo "no Python >= 3.11 found" >&2; exit 1; }
	@echo "creating $(VENV) with $(PYTHON) ($(PY_VERSION)), constraints $(LOCK)" >&2
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(wildcard $(LOCK)),-c $(LOCK)) -e '.[$(EXTRAS)]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(BIN)/.installed node_modules/.installed  ## create .venv and node_modules

# The serving zip (one per architecture in cdk.json), rebuilt when the code or the pins change.
BUNDLE_STAMP := build/lambda/.built
BUNDLE_SOURCES := $(shell find models lambdas batch -name '*.py' 2>/dev/null) infra/bundle.py \
	requirements/lock-py3.12.txt cdk.json

$(BUNDLE_STAMP): $(BIN)/.installed $(BUNDLE_SOURCES)
	$(BIN)/python -m infra.bundle
	touch $@

bundle: $(BUNDLE_STAMP)  ## build the Lambda serving zip(s) from manylinux wheels (no Docker)

openapi: $(BIN)/.installed  ## write docs/openapi.json from the API's contracts
	$(BIN)/python -c 'import json; from models.openapi import openapi_spec; print(json.dumps(openapi_spec(), indent=2, sort_keys=True))' > docs/openapi.json

lint: $(BIN)/.installed  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed  ## mypy (strict for models/ and infra/)
	$(BIN)/mypy

pytest: $(BIN)/.installed $(BUNDLE_STAMP)  ## tests except those marked slow
	$(BIN)/pytest -m "not slow"

pytest-all: $(BIN)/.installed $(BUNDLE_STAMP)  ## every test, the slow book-size ones too
	$(BIN)/pytest

synth: install $(BUNDLE_STAMP)  ## synthesize every stage with cdk-nag (offline, no Docker, no credentials)
	npx cdk synth -q

test: lint typecheck pytest synth  ## what CI runs: lint, types, tests (not slow), cdk synth

test-all: lint typecheck pytest-all synth  ## test, plus the slow tests

DEMO_SCALE ?= book
DEMO_DATE ?= 2018-08-10
SIM_ARGS_book :=
SIM_ARGS_small := --customers 500 --terminals 1000

demo: $(BIN)/.installed  ## simulate, features, train (improved and the book's best), then a day through Kinesis, the API and the batch job on the local stack
	$(BIN)/rtml simulate $(SIM_ARGS_$(DEMO_SCALE)) --out $(DATA)/simulated
	$(BIN)/rtml features --in $(DATA)/simulated --out $(DATA)/features
	$(BIN)/rtml train --data $(DATA)/features --out $(DATA)/artifacts/improved
	$(BIN)/rtml train --data $(DATA)/features --model xgboost_ch5 --out $(DATA)/artifacts/xgboost_ch5
	RTML=$(BIN)/rtml PY=$(BIN)/python scripts/demo-local.sh $(DATA) $(DEMO_DATE)

bench: $(BIN)/.installed  ## every benchmark, one table, bench/results.json; fails on a missed target
	$(BIN)/python -m bench.suite --data $(DATA)

bench-small: $(BIN)/.installed  ## the same on a 500-customer world (data/bench-small), in minutes
	$(BIN)/python -m bench.suite --small

# Feast's pins stay out of .venv: the peers benchmark gets its own venv on the same Python.
PEERS_VENV := .venv-peers

$(PEERS_VENV)/bin/.installed: pyproject.toml $(BIN)/.installed
	test -x $(PEERS_VENV)/bin/python || $(BIN)/python -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q -e '.[serve,train,dev,peers]'
	touch $@

bench-peers: $(PEERS_VENV)/bin/.installed  ## rtml's DynamoDB feature reads vs Feast's, on moto
	$(PEERS_VENV)/bin/python -m bench.peers

lock: $(BIN)/.installed  ## re-pin requirements/lock-pyX.Y.txt from the current .venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^rtml' > $(LOCK)

clean:  ## remove the virtualenv, node_modules and build output
	rm -rf $(VENV) $(PEERS_VENV) node_modules cdk.out build .mypy_cache .ruff_cache .pytest_cache
