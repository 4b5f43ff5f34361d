# `make run` serves the app; `make test` runs everything CI runs. Each sets up .venv
# first, from uv.lock: only Python 3.11+ is needed (uv itself is installed from PyPI).
PYTHON ?= python3
UV_VERSION ?= 0.13.9
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.synced
HOST ?= 0.0.0.0
PORT ?= 8000
# The tiers `make check` leaves out (see CONTRIBUTING.md).
SLOW_TIERS := not slow and not fuzz and not browser and not cluster
# Test workers (pytest-xdist): most tests wait on servers, so more than the cores. The
# fast tier's files are short: each worker's start (about 10 s) weighs more there.
TEST_WORKERS ?= 5
CHECK_WORKERS ?= 4
# The tests write bytecode caches (under .venv, not beside the sources) even where
# PYTHONDONTWRITEBYTECODE is set: each worker and every app it starts would otherwise
# compile the same sources again, seconds each.
PYTEST := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: run test check lint fmt typecheck typecheck-js lock bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# --inexact: uv lives in the same environment and must stay. --compile-bytecode: the
# libraries' bytecode is written once here, not compiled again by every process.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --inexact --group test --python $(BIN)/python --compile-bytecode
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/uvicorn main:app --host $(HOST) --port $(PORT)

# The tests with mypy beside them (its first run takes half a minute); both must pass.
define tests_and_types
	@$(BIN)/mypy > $(VENV)/mypy.out 2>&1 & types=$$!; \
	$(PYTEST) $(1); tests=$$?; \
	wait $$types; typed=$$?; cat $(VENV)/mypy.out; \
	test $$tests -eq 0 && test $$typed -eq 0
endef

test: lint
	$(call tests_and_types,)

# The fast tier for a development loop: under a minute.
check: lint
	$(call tests_and_types,-m "$(SLOW_TIERS)" -q -n $(CHECK_WORKERS))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

# The page's scripts, with TypeScript from npm (needs Node; `make test` does not).
typecheck-js:
	cd .ci/jscheck && npm ci --silent && npx tsc -p tsconfig.json

# Newest versions the constraints allow; then `make test` (CONTRIBUTING.md says what to read).
lock: | $(UV)
	$(UV) lock --upgrade
	$(UV) sync --frozen --inexact --group test --python $(BIN)/python --compile-bytecode
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
