# Breach Responder: `make demo` runs the end-to-end demo, `make test` runs the tests,
# `make lint` the static checks. They install what they need first through `make setup` (idempotent).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python

INFRA_TOOLS := .tools/infra/.installed
# The console's real-browser tests drive Debian's chromium package through Playwright (its own browser
# download cannot be reached): installed here when missing (CI runs as root on a clean machine).
CHROMIUM := /usr/bin/chromium

.PHONY: setup demo test lint dev clean infra-tools infra-check

setup: $(VENV)/.installed node_modules/.installed $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install a chromium browser at $(CHROMIUM) (the browser tests need it)"; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (Azure Functions runtime)"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(INFRA_TOOLS): requirements-infra.txt tools/setup_infra_tools.sh
	bash tools/setup_infra_tools.sh

infra-tools: $(INFRA_TOOLS)

# Offline IaC validation: checkov on infra/, generated files current, infra tests.
infra-check: setup $(INFRA_TOOLS)
	BC_SKIP_MAPPING=TRUE .tools/infra/bin/checkov -d infra --framework bicep --skip-download --compact --quiet
	$(PY) tools/gen_infra.py --check
	$(PY) -m pytest tests/test_infra*.py -q --noconftest

demo: setup
	$(VENV)/bin/responder demo

dev: setup
	$(VENV)/bin/responder dev

test: setup $(INFRA_TOOLS)
	$(PY) -m pytest -q

# ruff over the whole tree, mypy over shared/, functions/, function_app.py, localdev/ and the
# test helpers (pyproject.toml): both must report nothing.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) node_modules .localdev .tools
