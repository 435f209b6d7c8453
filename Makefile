# Baton: `make run` serves, `make test` checks everything. Both work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest system-packages clean

run: $(STAMP)
	$(BIN)/baton db upgrade
	$(BIN)/baton serve

test: system-packages $(STAMP)
	$(BIN)/ruff check bot webhooks tests benchmarks
	$(BIN)/ruff format --check bot webhooks tests benchmarks
	$(BIN)/mypy bot webhooks
	$(BIN)/pytest

# Tests use real git, bubblewrap and slirp4netns (the setup command's network, which cannot
# reach this host's loopback); install them when missing (root on CI, sudo elsewhere).
# The page tests drive Debian's chromium through Playwright, which downloads no browser.
system-packages:
	@missing=""; for tool in git bwrap slirp4netns; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update && $$sudo apt-get install -y git bubblewrap slirp4netns chromium; \
	fi

# A .venv made by a Python older than 3.11 is made again rather than left broken.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Baton needs Python 3.11 or newer: make $(MAKECMDGOALS) PYTHON=python3.11"; exit 1; }
	@[ ! -x $(BIN)/python ] || $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "rebuilding $(VENV): it was made with an older Python"; rm -rf $(VENV); }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
