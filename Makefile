# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint smoke reproduce-all bench-gpu clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/repro run recipes/demo_digits.toml

# The tests on TEST_JOBS pytest-xdist workers (the CI has 2 cores), one torch thread each (tests/conftest.py), handed
# out one test at a time in the order the conftest sets (longest first); an xdist_group stays on one worker.
TEST_JOBS ?= 2
XDIST := -n $(TEST_JOBS) --dist loadgroup --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST)

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check repro engine tests

smoke: $(STAMP)
	for r in recipes/*.toml; do $(BIN)/repro run $$r --smoke --root $${REPRO_SMOKE_ROOT:-/tmp/repro-smoke} || exit 1; done

# Every recipe, full size (for a GPU box; days of compute): finished runs are skipped, interrupted ones resumed,
# JOBS runs at once (default 1), each on its own GPU; then REPORT.md (paper vs ours, wall time, GPU) and figures.
reproduce-all: $(STAMP)
	$(BIN)/repro reproduce $(if $(JOBS),--jobs $(JOBS))

# Issue 19's speed figures in one call on a GPU (about 8 min): bench-out/bench.jsonl and bench-out/bench.md (OUT=dir).
# No install step: a lent GPU machine has no network, so it runs with whatever python has the packages.
bench-gpu:
	scripts/gpu_bench.sh

clean-venv:
	rm -rf $(VENV)
