# Behavioral analytics engine. `make help` lists the targets.
SHELL := /bin/bash
PYTHON_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# PyFlink must find the interpreter that has the project installed.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)

USERS ?=
DAYS ?=
SEED ?=
RATE ?= 0
FILE ?=
MAPPING ?=
FROM ?=
POLICY ?=
MODELS ?=
CANDIDATE ?=
UNTIL ?=
JOB ?= profile
STREAMING ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install up down status run test test-unit test-models test-pipeline test-integration lint format backtest estimate bench-recommendations \
        generate replay cluster-up cluster-down submit clean train control report refine export-outcomes bench bench-train bench-stages \
        sql consume erasures release contracts metrics pseudonym browser serve bench-api

help: ## list every target with one line each
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v python$(PYTHON_VERSION) >/dev/null || { echo "error: python$(PYTHON_VERSION) not found" >&2; exit 1; }
	@test -x $(PY) || python$(PYTHON_VERSION) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

install: $(STAMP) ## create the virtualenv and install pinned dependencies (skipped when current)

# Debian's headless Chromium and its driver, for the dashboard's browser test.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser: ## install Debian's Chromium and ChromeDriver if missing (the dashboard test drives them)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }; }

up: $(STAMP) ## start the local broker and PostgreSQL if needed; create topics and apply migrations
	$(PY) -m conf.stack up

down: $(STAMP) ## stop what `make up` and `make cluster-up` started
	$(PY) -m conf.stack down

status: $(STAMP) ## show which services answer, topics and migrations
	$(PY) -m conf.stack status

REGISTRY := models/artifacts/registry.json

$(REGISTRY):
	$(MAKE) train

run: up $(REGISTRY) ## run the profile job locally on generated events, or on your log (FILE= MAPPING=); prints a summary
	$(PY) -m jobs.local_run $(if $(USERS),--users $(USERS)) $(if $(DAYS),--days $(DAYS)) $(if $(SEED),--seed $(SEED)) $(if $(FILE),--file $(FILE)) $(if $(MAPPING),--mapping $(MAPPING))

test: up browser ## run every test tier: unit, models, pipeline (local Flink), integration (broker, PostgreSQL, cluster, browser)
	$(PY) -m pytest tests

test-unit: $(STAMP) ## unit tests only (no JVM, no services, no training; under a minute)
	$(PY) -m pytest tests/unit

test-models: $(STAMP) ## model tests: one default-size training run (about four minutes), ONNX contract, scoring
	$(PY) -m pytest tests/models

test-pipeline: $(STAMP) ## pipeline tests on a local Flink MiniCluster
	$(PY) -m pytest tests/pipeline

test-integration: up browser ## integration tests against the real broker, PostgreSQL, a standalone cluster and a browser
	$(PY) -m pytest tests/integration

lint: $(STAMP) ## check style and errors without changing anything
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## fix what the linter and formatter can fix
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: up ## learn models from the event archive (FROM= UNTIL=), a log (FILE= MAPPING=) or, while the archive is empty, generated history; publishes the new version to running jobs
	$(PY) -m models.train $(if $(FROM),--from $(FROM)) $(if $(UNTIL),--until $(UNTIL)) $(if $(FILE),--file $(FILE)) $(if $(MAPPING),--mapping $(MAPPING))
	$(PY) -m jobs.control

control: up ## publish the registered model version, the action policy and the cohort modifiers to running jobs (the `control` topic), where changed
	$(PY) -m jobs.control

export-outcomes: up ## write labelled outcomes (decisions with their outcome) for `make train`
	$(PY) -m models.outcomes

EXPERIMENT ?=

report: up ## results of one run of an experiment (EXPERIMENT=name, FROM= UNTIL= ISO dates, ARMS=any to pool arm versions): lift with and without CUPED, ratio metrics, balance, sample ratio, PNG in .local/reports
	@test -n "$(EXPERIMENT)" || { echo "usage: make report EXPERIMENT=<name from conf/experiments.yaml> [FROM=2026-11-01 UNTIL=2026-12-01]" >&2; exit 2; }
	$(PY) -m jobs.report --experiment $(EXPERIMENT) $(if $(FROM),--from $(FROM)) $(if $(UNTIL),--until $(UNTIL)) $(if $(filter any,$(ARMS)),--any-arms)

backtest: up ## what candidate policies and a model version would have decided on archived history, in Flink's batch mode (POLICY="a.yaml b.yaml" MODELS= FROM= UNTIL=); writes .local/backtests/
	$(PY) -m jobs.backtest $(if $(POLICY),--policy $(POLICY)) $(if $(MODELS),--models $(MODELS)) $(if $(FROM),--from $(FROM)) $(if $(UNTIL),--until $(UNTIL))

estimate: up ## what candidate targeting policies would have achieved on an experiment's logged decisions (CANDIDATE="conf/candidates/a.yaml ..."), off-policy with intervals, or why unsupported
	@test -n "$(CANDIDATE)" || { echo "usage: make estimate CANDIDATE=\"conf/candidates/<name>.yaml ...\" [FROM= UNTIL=]" >&2; exit 2; }
	$(PY) -m jobs.estimate --candidate $(CANDIDATE) $(if $(FROM),--from $(FROM)) $(if $(UNTIL),--until $(UNTIL))

refine: up ## move an experiment's variant weights towards the best variant (EXPERIMENT=name), bounded and logged; publishes them to running jobs
	@test -n "$(EXPERIMENT)" || { echo "usage: make refine EXPERIMENT=<name from conf/experiments.yaml>" >&2; exit 2; }
	$(PY) -m jobs.refine --experiment $(EXPERIMENT)
	$(PY) -m jobs.control

generate: up ## publish synthetic events (USERS= DAYS= SEED= RATE=) with hidden ground truth; ARGS="--incident-day 8 --support-rate 0.03" injects a payment outage
	$(PY) -m jobs.generate $(if $(USERS),--users $(USERS)) $(if $(DAYS),--days $(DAYS)) $(if $(SEED),--seed $(SEED)) --rate $(RATE) $(ARGS)

replay: up ## publish an external log: make replay FILE=log.csv MAPPING=conf/mappings/<name>.yaml
	@test -n "$(FILE)" -a -n "$(MAPPING)" || { echo "usage: make replay FILE=... MAPPING=conf/mappings/<name>.yaml" >&2; exit 2; }
	$(PY) -m jobs.replay --file $(FILE) --mapping $(MAPPING)

metrics: up ## run the metrics job locally (windowed metrics and anomaly alerts of the whole stream, Flink SQL); Ctrl-C stops it
	$(PY) -m jobs.metrics

sql: up ## Flink SQL shell over every topic and table (batch mode; STREAMING=1 for continuous queries), or run a script: make sql FILE=sql/queries/<name>.sql
	$(PY) -m jobs.sql $(if $(FILE),--file $(FILE)) $(if $(STREAMING),--streaming)

TOPIC ?= actions

consume: up ## print the committed records of an output topic as they come, validated against its contract (TOPIC=actions, ARGS="--from-beginning")
	$(PY) -m jobs.consume --topic $(TOPIC) $(ARGS)

erasures: up ## carry out the erasures the profile job asks for (a service; ARGS="--idle-exit-s 30" stops when idle)
	$(PY) -m jobs.erasure $(ARGS)

serve: up ## the REST API and live dashboard on the local stack (after `make run`): http://127.0.0.1:8000/dashboard
	$(PY) -m jobs.api $(ARGS)

pseudonym: $(STAMP) ## the pseudonym the analytical outputs give a user (ID=<their id>)
	@test -n "$(ID)" || { echo "usage: make pseudonym ID=<user id>" >&2; exit 2; }
	$(PY) -m udfs.pseudonyms $(ID)

release: up ## an aggregate for sharing with differential privacy (WHAT=cohort_sizes|experiment_arms|active_users|event_counts, ARGS="--epsilon 0.5 ...")
	@test -n "$(WHAT)" || { echo "usage: make release WHAT=<aggregate> [ARGS=...] (python -m jobs.release --help)" >&2; exit 2; }
	$(PY) -m jobs.release $(WHAT) $(ARGS)

contracts: $(STAMP) ## publish the next version of each output topic's JSON Schema whose declaration changed, unless it would break consumers
	$(PY) -m udfs.contracts

cluster-up: up ## start a standalone Flink cluster from the installed PyFlink (UI on :8081)
	$(PY) -m conf.stack cluster-up

cluster-down: $(STAMP) ## stop the standalone Flink cluster
	$(PY) -m conf.stack cluster-down

submit: cluster-up ## submit a job to the standalone cluster: make submit JOB=profile|metrics ARGS="...", or a SQL script: make submit JOB=sql FILE=...
	$(PY) -m conf.stack submit $(JOB) $(if $(FILE),--file $(abspath $(FILE)) --detach) $(ARGS)

clean: down ## stop services and remove the virtualenv and local state
	rm -rf $(VENV) $(PEER_VENV) .local

PEER_VENV := .venv-bench
PEER_STAMP := $(PEER_VENV)/.installed

$(PEER_STAMP): bench/requirements-peer.txt
	@test -x $(PEER_VENV)/bin/python || python$(PYTHON_VERSION) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet -r bench/requirements-peer.txt
	@touch $(PEER_STAMP)

bench-train: up ## time and peak memory of make train on archives of 250k and 1M generated events (ARGS="--events N ..."); writes bench/results/
	$(PY) -m bench.training $(ARGS)

bench: up $(REGISTRY) $(PEER_STAMP) ## benchmark the profile job against a plain-Python baseline and a Quix Streams peer on two workloads, returning users and mostly new ones (ARGS="--users N --events N --workloads ..."); writes bench/results/
	$(PY) -m bench.run $(ARGS)

bench-recommendations: $(STAMP) ## growth of the recommendation steps' item and bucket state on the benchmark's workloads (ARGS="--users N --events N ..."); writes bench/results/
	$(PY) -m bench.recommendation_state $(ARGS)

bench-api: up ## requests/s and p50/p99 of the API's profile read at a concurrency, against PostgreSQL read directly (ARGS="--concurrency N --seconds S ..."); writes bench/results/
	$(PY) -m bench.api $(ARGS)

bench-stages: $(REGISTRY) ## per-stage cost of the profile job's Python work per event, without Flink (ARGS="--measured N ..."); writes bench/results/
	$(PY) -m bench.stages $(ARGS)
