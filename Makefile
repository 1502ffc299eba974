# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint format screenshot clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(STAMP)

run: $(STAMP)  ## Serve on http://127.0.0.1:8000 (SQLite + ./instance/results)
	$(BIN)/gunicorn --config gunicorn.conf.py

test: $(DEV_STAMP)  ## Lint, then the whole test suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

screenshot: $(DEV_STAMP)  ## Refresh docs/screenshot*.png (needs Debian chromium)
	SCREENSHOT_DIR=docs $(BIN)/python -m pytest -q tests/test_browser.py -k mid_generation

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
