# `make demo` runs the main job on the bundled example cluster; `make check` is what CI runs.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo lint imports typecheck test check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# as root on Linux, first the Debian packages the lab needs (as .ci/run installs CI's); where they
# cannot be installed, examples/demo.sh says so in one line and runs the bundled example instead
demo: setup
	@if [ "$$(id -u)" = 0 ] && [ "$$(uname -s)" = Linux ] && [ "$${DEMO_LAB:-1}" = 1 ]; then \
	  .ci/system-packages lab || true; \
	fi
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

lint: setup
	$(BIN)/ruff check bot runbooks tests bench
	$(BIN)/ruff format --check bot runbooks tests bench

imports: setup  # the import contracts in pyproject.toml ([tool.importlinter])
	$(BIN)/lint-imports --no-cache

typecheck: setup
	$(BIN)/mypy --strict flannel_bot flannel_bot_runbooks  # the import names (symlinks to bot/, runbooks/)

test: setup
	$(BIN)/pytest

check: lint imports typecheck test

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
