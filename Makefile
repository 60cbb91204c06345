# Booking Queue Lab. `make lab` to learn, `make test` to check everything.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# The tests' own brokers and state: a learner's lab on 6379/9092 and .lab/ is never touched.
TEST_ENV := LABKIT_REDIS_URL=redis://127.0.0.1:6391/0 LABKIT_KAFKA_BOOTSTRAP=127.0.0.1:9192 LABKIT_HOME=$(CURDIR)/.lab-test
PYTEST_ARGS ?=

.PHONY: lab test up down status notebooks bench chaos system venv clean

system:
	@scripts/system-deps.sh

$(BIN)/labkit: pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/labkit

up: system venv
	$(BIN)/labkit infra up

down:
	@test -x $(BIN)/labkit && $(BIN)/labkit infra down || true

status: venv
	$(BIN)/labkit infra status

lab: up
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=8888 --ServerApp.root_dir=notebooks

# Broker tests (unit, integration with the chaos matrix at CI size, the Binder rehearsal); then,
# on a lab made messy the way a learner leaves it, every lesson under papermill and nbval and
# the real-browser test. PYTEST_ARGS narrows the first step and skips the rest.
test: system venv
	@$(TEST_ENV) $(BIN)/labkit infra up
	@status=0; \
	$(TEST_ENV) $(BIN)/pytest $(or $(PYTEST_ARGS),tests/unit tests/integration tests/binder) || status=$$?; \
	if [ -z "$(PYTEST_ARGS)" ]; then \
	  $(TEST_ENV) $(BIN)/python -m labkit.notebook.used_lab || status=$$?; \
	  $(TEST_ENV) $(BIN)/pytest tests/notebooks || status=$$?; \
	  $(TEST_ENV) $(BIN)/pytest --nbval-lax --nbval-cell-timeout=240 notebooks/ || status=$$?; \
	  $(TEST_ENV) $(BIN)/pytest tests/browser || status=$$?; \
	  $(TEST_ENV) $(BIN)/python -m labkit.notebook.used_lab --stop >/dev/null; \
	fi; \
	$(TEST_ENV) $(BIN)/labkit infra down; \
	exit $$status

notebooks: up
	$(BIN)/python -m labkit.notebook.runner

bench: up
	$(BIN)/labkit bench

# The whole fault matrix on the lab's brokers (the three-broker scenarios on their own ports),
# at a size that finishes in under 10 minutes on 2 cores (200 bookings took 10 min 54 s here).
chaos: up
	$(BIN)/labkit chaos --scenario all --bookings 120

clean:
	rm -rf build .lab-test

# Binder's pinned environment (binder/requirements.txt) from pyproject.toml plus
# binder/requirements.in, resolved for every Python 3.11.x (Binder's runtime.txt), not only the
# venv's patch release. Generated: never edit it by hand.
.PHONY: lock
lock: venv
	@$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile --quiet --python-version 3.11 --custom-compile-command "make lock" \
	  --output-file binder/requirements.txt pyproject.toml binder/requirements.in
