# Everything runs from the project's virtual environment, which `make deps`
# (scripts/install-deps) creates: Debian's Python is externally managed (PEP 668).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: deps demo test render bench lock

deps:
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/install-deps

## The live demo: exporter + simulated orchestrator + Prometheus + Alertmanager + Slack/SMTP sinks.
demo: deps
	$(BIN)/agent-exporter demo --stack

## The whole test suite (unit, promtool rule tests, integration with the real binaries).
test: deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Regenerate prometheus/, alertmanager/ and grafana/ from the default config.
render: deps
	$(BIN)/agent-exporter render --out .

bench: deps
	$(BIN)/python bench/run_all.py

## Renew constraints.txt: the newest versions pyproject.toml's ranges allow, in a scratch environment.
lock: deps
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,demo]'
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv
