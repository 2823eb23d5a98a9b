# PIWM course. Every target bootstraps .venv when it is missing.
#   make course   run every notebook headless (papermill, course profile) into runs/course/
#   make course PROFILE=course-merge   the same for another profile: the notebooks with a configs/PROFILE/NN.yaml
#   make test     unit tests + notebook tests (nbval) + browser tests (installs Debian's chromium + chromium-driver)
#   make pretrained  train (resuming) and export the shipped models of configs/pretrained.yaml into data/pretrained/
#   make recipe-comparison  train (resuming) and measure the recipe arms of configs/recipe_comparison.yaml
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= course
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

PRETRAINED ?=

.PHONY: pretrained recipe-comparison browser course test unit nbtest bench bench-collect bench-read bench-masks bench-train bench-sample nb-refresh clean-venv

$(STAMP): pyproject.toml
	@# A machine that already has torch >= 2.4 (e.g. a GPU box) keeps it: the venv then sees system packages.
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch, sys; v = tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); sys.exit(v < (2, 4))" 2>/dev/null; \
	  then $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	@# CPU machines: take the CPU build of torch first, so nothing pulls a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

course: $(STAMP)
	@mkdir -p runs/$(PROFILE)
	@for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); num=$${name%%_*}; cfg=configs/$(PROFILE)/$$num.yaml; \
	  if [ ! -f $$cfg ]; then echo "== $$nb: skipped (no $$cfg)"; continue; fi; args="-f $$cfg"; \
	  echo "== $$nb ($(PROFILE): $$cfg)"; \
	  $(VENV)/bin/papermill $$nb runs/$(PROFILE)/$$name.ipynb $$args -p RUN_NAME $(PROFILE) --cwd notebooks \
	    --no-progress-bar || exit 1; \
	done
	@echo "course done: executed notebooks in runs/$(PROFILE)/, outputs in runs/, ablation table in runs/06_ablations/$(PROFILE)/results.csv"

pretrained: $(STAMP)
	@# the deterministic course dataset first (notebook 01, course profile; resumes a killed collection)
	@[ -f data/course/index.json ] || $(VENV)/bin/papermill notebooks/01_collect_data.ipynb \
	  runs/course/01_collect_data.ipynb -f configs/course/01.yaml -p RUN_NAME course --cwd notebooks --no-progress-bar
	nice -n 10 $(PY) -m piwm_lib.pretrained build $(PRETRAINED)

recipe-comparison: $(STAMP)
	nice -n 10 $(PY) -m piwm_lib.recipe configs/recipe_comparison.yaml --csv data/pretrained/recipe_comparison.csv

browser:
	@# Debian's Chromium and ChromeDriver for the browser tests (tests/test_browser.py), installed once
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q chromium chromium-driver || \
	  { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest tests --nbval-lax --sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS) --durations=15

unit: $(STAMP) browser
	$(PY) -m pytest tests

nbtest: $(STAMP)
	$(PY) -m pytest --nbval-lax --sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS)

bench: bench-collect bench-read bench-masks bench-train bench-sample

bench-collect: $(STAMP)
	$(PY) benchmarks/bench_collect.py

bench-read: $(STAMP)
	$(PY) benchmarks/bench_read.py

bench-masks: $(STAMP)
	$(PY) benchmarks/bench_masks.py

bench-train: $(STAMP)
	$(PY) benchmarks/bench_train.py

bench-sample: $(STAMP)
	$(PY) benchmarks/bench_sample.py

# Re-execute the notebooks in place so that their stored outputs match the library (run before committing).
nb-refresh: $(STAMP)
	@for nb in $(NOTEBOOKS); do $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace $$nb || exit 1; done

clean-venv:
	rm -rf $(VENV)
