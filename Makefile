PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: deps demo test render bench

deps:
	PYTHON=$(PYTHON) scripts/install-deps

## The live demo: exporter + simulated orchestrator + Prometheus + Alertmanager + Slack/SMTP sinks.
demo: deps
	agent-exporter demo --stack

## The whole test suite (unit, promtool rule tests, integration with the real binaries).
test: deps
	$(PYTHON) -m pytest $(PYTEST_ARGS)

## Regenerate prometheus/, alertmanager/ and grafana/ from the default config.
render:
	agent-exporter render --out .

bench:
	$(PYTHON) bench/run_all.py
