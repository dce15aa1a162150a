# TaskTracker developer commands. Needs only Python 3.11 on PATH.
#
#   make run    venv + requirements + `flask db upgrade` + serve on http://127.0.0.1:5000
#               (embedded mode: SQLite file, in-process jobs and scheduler, Socket.IO)
#   make test   venv + requirements-dev + the whole pytest suite (pytest-xdist workers)
#   make test-fast  the same without the tests that start processes (-m "not integration")
#
# See README.md for the rest.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000
PYTEST_ARGS ?=
# pytest-xdist: 4 workers on 2 cores for `make test` (most process tests wait on their
# servers), 2 for `make test-fast` (CPU-bound: each more worker costs its own start-up and
# statement caches, 29 CPU-s for two more, measured, for no shorter run);
# loadgroup (tests/conftest.py's scheduler) keeps each module of shared, module-scoped
# processes (SHARED_PROCESS_MODULES) on one worker and hands those out first.
PYTEST_WORKERS ?= 4
PYTEST = $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup
PIP    := $(BIN)/python -m pip --disable-pip-version-check --quiet
# CLI commands never need the in-process scheduler thread (and must not scan a
# database that is not migrated yet).
FLASK  := SCHEDULER_ENABLED=false FLASK_APP=wsgi.py $(BIN)/flask

# Bytecode caches on (some machines export PYTHONDONTWRITEBYTECODE=1): without them every
# process, each pytest-xdist worker and each server a test starts, compiles the project
# again, and pytest rewrites the asserts of its plugins' ~350 modules again (3 s of CPU
# per pytest process, measured).
unexport PYTHONDONTWRITEBYTECODE

.DEFAULT_GOAL := help
.PHONY: help run test test-fast install install-dev upgrade migration worker beat admin seed dispatch ci clean

help:
	@echo "make run         install, migrate the database and serve on http://$(HOST):$(PORT)"
	@echo "make test        install dev requirements and run the whole test suite"
	@echo "make test-fast   the suite without the tests that start processes (1-1.5 min on 2 cores)"
	@echo "make upgrade     apply migrations (flask db upgrade) to DATABASE_URL"
	@echo "make migration   a new migration revision for model changes (MESSAGE=...)"
	@echo "make admin       create a site admin (prompts for username, email, password)"
	@echo "make seed        demo data: USERS=20 TASKS=1000"
	@echo "make dispatch    run the reminder/overdue/outbox scans once"
	@echo "make worker      Celery worker (production mode, needs CELERY_BROKER_URL)"
	@echo "make beat        Celery beat (exactly one per deployment)"
	@echo "make ci          what CI runs (.ci/run)"
	@echo "make clean       remove the virtualenv and caches (keeps instance/)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(PIP) install -r requirements-dev.txt
	$(BIN)/python -m pip check
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

instance:
	mkdir -p instance/uploads

upgrade: install | instance
	$(FLASK) db upgrade

run: upgrade
	@echo "Serving TaskTracker on http://$(HOST):$(PORT)  (Ctrl-C stops)"
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# $(call run_pytest,ARGS): pytest's exit code 5 (no tests collected) is a failure too.
define run_pytest
	@$(PYTEST) $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; \
	exit $$rc
endef

test: install-dev
	$(call run_pytest,)

# test-fast: every test that starts no process; schemathesis without its coverage phase
# (examples and fuzzing only: tests/test_openapi.py PHASES) and with 5 fuzzed cases per
# operation instead of 10 (Hypothesis' "dev profile" practice: a quick loop, the full run
# in CI; raise it with SCHEMATHESIS_MAX_EXAMPLES=...). `make test` runs all of it.
test-fast: export SCHEMATHESIS_PHASES = examples,fuzzing
test-fast: export SCHEMATHESIS_MAX_EXAMPLES ?= 5
test-fast: PYTEST_WORKERS = 2
test-fast: install-dev
	$(call run_pytest,-m "not integration")

# A new revision for what the models changed: a scratch SQLite database is upgraded to
# the current head, autogenerate writes the difference (make migration MESSAGE="..."),
# then both backends are checked. Read the revision before committing it.
MESSAGE ?= schema change
migration: install-dev
	@scratch=$$(mktemp -d); \
	DATABASE_URL="sqlite:///$$scratch/scratch.db" $(FLASK) db upgrade && \
	DATABASE_URL="sqlite:///$$scratch/scratch.db" $(FLASK) db migrate -m "$(MESSAGE)"; rc=$$?; \
	rm -rf "$$scratch"; exit $$rc
	$(BIN)/pytest -q -n 0 tests/test_migrations.py tests/test_migrations_upgrade.py

admin: upgrade
	@read -p "Username: " u; read -p "Email: " e; $(FLASK) users create-admin --username "$$u" --email "$$e"

USERS ?= 20
TASKS ?= 1000
seed: upgrade
	$(FLASK) seed --users $(USERS) --tasks $(TASKS)

dispatch: upgrade
	$(FLASK) reminders dispatch

worker: install
	$(BIN)/celery -A celery_worker.celery worker --loglevel=info

beat: install
	$(BIN)/celery -A celery_worker.celery beat --loglevel=info

ci:
	bash .ci/run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
