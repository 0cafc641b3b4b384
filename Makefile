# The two commands a user needs (both create or reuse .venv themselves):
#   make run    # run the whole workbook on the default profile, HTML reports under runs/<profile>/
#   make test   # lint + the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= auto
DATA_ROOT ?=
EXECUTOR ?= auto
STAMP  := $(VENV)/.installed

.PHONY: run test lint env clean-runs

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

env: $(STAMP)

run: $(STAMP)
	$(PY) -m lib run --profile $(PROFILE) --executor $(EXECUTOR) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

clean-runs:
	rm -rf runs
