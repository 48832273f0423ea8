# Every target creates the virtual environment it needs (.venv/) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv run test test-unit test-functional test-integration lint typecheck fmt schemas bench-intake bench-transcribe bench-analysis clean

help:
	@echo "make run           start the local stack (emulators, functions) and send a demo call"
	@echo "make test          run every test (starts and stops the emulators it needs)"
	@echo "make lint          ruff + mypy + terraform fmt + cloudbuild.yaml validation"
	@echo "make schemas       regenerate schemas/messages from the pydantic models"
	@echo "make bench-intake  measure intake throughput and latency against a no-op function"
	@echo "make bench-transcribe  WER, speaker attribution and real-time factor of the local engine"
	@echo "make bench-analysis    per-field accuracy of the rule-based analyzer on the labelled set"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: venv
	$(BIN)/callpipe dev up

test: venv
	$(BIN)/python -m pytest tests

test-unit: venv
	$(BIN)/python -m pytest tests/unit

test-functional: venv
	$(BIN)/python -m pytest tests/functional

test-integration: venv
	$(BIN)/python -m pytest tests/integration

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	TF_CLI_CONFIG_FILE=/dev/null terraform -chdir=terraform fmt -check -recursive
	$(BIN)/check-jsonschema --builtin-schema vendor.cloudbuild cloudbuild.yaml

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: venv
	$(BIN)/callpipe schemas generate

bench-intake: venv
	$(BIN)/python bench/intake_bench.py

bench-transcribe: venv
	$(BIN)/python bench/transcribe_bench.py

bench-analysis: venv
	$(BIN)/python bench/analysis_bench.py

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
