# The two commands a user needs (both create or reuse .venv themselves):
#   make run    # run the whole workbook on the default profile, HTML reports under runs/<profile>/
#   make test   # lint + the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= auto
DATA_ROOT ?=
EXECUTOR ?= auto
PRECISION ?=
STAMP  := $(VENV)/.installed
# a new .venv takes 6.7 GB (the torch wheel carries CUDA libraries); no pip cache, so nothing twice
NEED_GB ?= 7
PIP_FLAGS := --quiet --disable-pip-version-check --no-cache-dir

.PHONY: run test lint env mutations clean-runs

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -c 'import shutil, sys; free = shutil.disk_usage(".").free / 2**30; \
	  sys.exit(0 if free >= $(NEED_GB) else f"make: a new $(VENV) needs about $(NEED_GB) GB free here, only {free:.1f} GB are (df -h .); free some space, or NEED_GB=0 to try anyway")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt
	$(PY) -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install $(PIP_FLAGS) --no-deps -e .
	@touch $(STAMP)

env: $(STAMP)

run: $(STAMP)
	$(PY) -m lib run --profile $(PROFILE) --executor $(EXECUTOR) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),) $(if $(PRECISION),--precision $(PRECISION),)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

mutations: $(STAMP)
	$(PY) tests/mutations.py

clean-runs:
	rm -rf runs
