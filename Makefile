# Two entry points for a fresh machine:
#   make demo   - set up .venv and run the main job on the built-in default data (the bundled digits)
#   make test   - set up .venv and run the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgecnn-installed
export NNCF_CI := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint format venv clean bench ssh-tools

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "python3 is required (3.10+)"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: venv
	$(BIN)/python examples/demo.py

test: venv ssh-tools
	$(BIN)/python -m pytest -q

# ruff: the linter and the formatter (configured in pyproject.toml); CI runs this before the tests.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The deploy --host tests start a real sshd on 127.0.0.1 (CI: root on a fresh Debian machine).
ssh-tools:
	@{ command -v ssh >/dev/null && { command -v sshd >/dev/null || test -x /usr/sbin/sshd; }; } || \
	  { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; } || \
	  echo "note: could not install openssh-server/openssh-client; the deploy --host tests will skip"

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
