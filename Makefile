# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test bench profile wrk lint format screenshot screenshot-console rehearse clean

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

bench: $(DEV_STAMP) | wrk  ## Benchmarks vs a floor, into docs/performance.md (BENCH_ARGS="--repeat 1")
	$(BIN)/python -m bench.run $(BENCH_ARGS)

profile: $(DEV_STAMP) | wrk  ## py-spy profiles of submit, dispatch, drain per backend (PROFILE_ARGS="--only postgres")
	$(BIN)/python -m bench.profile $(PROFILE_ARGS)

# The load generator is a Debian package; install it when we can (root), else say how.
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench needs wrk: sudo apt-get install wrk" >&2; exit 1; }

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

screenshot: $(DEV_STAMP)  ## Refresh docs/screenshot*.png (needs Debian chromium)
	SCREENSHOT_DIR=docs $(BIN)/python -m pytest -q tests/test_browser.py -k mid_generation

rehearse: $(DEV_STAMP)  ## Build the image with podman and run it as Fly would (root; a few minutes)
	@command -v podman >/dev/null && command -v debootstrap >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap; }
	$(BIN)/python -m tests.rehearse

screenshot-console: $(DEV_STAMP)  ## Refresh docs/console.png from a few minutes of real jobs
	$(BIN)/python -m tests.console_demo --minutes 6 --out docs/console.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
