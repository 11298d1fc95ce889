# The README's two commands: `make run` and `make test`. Each creates the environment on a fresh
# machine (Python 3.11 + pip only), installs tiers with pinned dependencies, then does its job.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench lint clean browser

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,plot]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tiers explore

# The whole suite: lint (ruff, numpy docstrings), types (mypy), the pipeline's layering
# (import-linter), then the tests.
test: $(STAMP) check browser
	$(BIN)/python -m pytest -q

# Headless Chromium for tests/test_browser.py (the HTML report in a real browser): Debian's
# chromium, installed when missing and we are root. Otherwise the test is skipped and the pytest
# summary says loudly that it did not run.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "WARNING: could not install chromium: the browser test will NOT run"; \
	  else echo "WARNING: chromium missing and not root: the browser test will NOT run"; fi; }

check: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV)
