# ftlab: every target sets itself up. The first run creates .venv/ from requirements.txt (exact
# pins) and installs ftlab into it, editable; it reinstalls whenever requirements.txt or
# pyproject.toml is newer than .venv/.stamp.
#
#   make test      unit tests and every lesson (run twice in one kernel), tiny profile, offline
#   make test-floors  unit tests against the oldest versions pyproject.toml allows (.venv-floors/)
#   make lessons   run every lesson headless -> build/lessons/ (HTML, executed notebooks, summary)
#   make rehearse  every lesson in the full profile on a simulated T4 and L4, offline -> build/rehearsal/
#   make rehearse-colab  Colab's set-up cell from scratch, then lessons 00 and 04 -> build/colab-rehearsal/
#   make lab       JupyterLab on notebooks/ (installs jupyterlab into .venv on first use)
#   make browser-test  lessons 07 and 02 in headless Chromium under JupyterLab: run all, move a slider -> build/browser/
#   make sync      pair NN_topic.ipynb <-> NN_topic.py (jupytext), strip outputs, then badges
#   make badges    rewrite Colab badges and the README lesson table from ftlab.REPO_URL
#   make clean     remove build outputs and caches (make distclean also removes .venv)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp
NOTEBOOKS ?= notebooks
# Seconds one notebook cell may run under `make test` before the test stops it: catches a hang,
# not a slow lesson (make lessons reports lessons over 60 s).
NB_CELL_TIMEOUT ?= 300
# `make test` runs in TEST_WORKERS pytest-xdist processes (0: one process, no xdist), one torch
# thread each: two torch threads per process on two shared cores spend their time waiting.
TEST_WORKERS ?= 2
# `make lab` installs this on first use; it is not in requirements.txt, to keep `make test` lean.
JUPYTERLAB ?= jupyterlab==4.6.6
# `make lessons PROFILE=full` runs the lessons at full scale (on a GPU machine with the hub).
PROFILE ?= tiny

# Tests run the micro-world on the CPU, draw plots off-screen and never touch the hub.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
TEST_ENV := FTLAB_PROFILE=tiny MPLBACKEND=Agg $(OFFLINE) PIP_NO_INPUT=1

.PHONY: help venv test test-unit test-notebooks test-floors lessons rehearse rehearse-colab lab browser-test sync badges clean distclean

help:
	@sed -n 's/^#   \(make .*\)/\1/p' Makefile

# pip's chatter goes to .venv/install.log, shown only if an install fails.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing requirements.txt into $(VENV) (the first time: a few minutes, torch is large)"
	@{ $(PY) -m pip install --progress-bar off --upgrade "pip>=24" \
	   && $(PY) -m pip install --progress-bar off -r requirements.txt \
	   && $(PY) -m pip install --no-deps --no-build-isolation -e . ; } > $(VENV)/install.log 2>&1 \
	  || { tail -n 60 $(VENV)/install.log; echo "pip install failed: see $(VENV)/install.log"; exit 1; }
	@$(PY) -m pip list --format=freeze 2>/dev/null \
	  | grep -iE '^(torch|torchvision|transformers|peft|trl|bitsandbytes|datasets|accelerate)==' \
	  | tr '\n' ' '; echo
	@touch $(STAMP)

venv: $(STAMP)

# One pytest session runs the unit tests and the lessons (tests/test_lessons_rerun.py: each lesson
# in a fresh kernel, then "Run all" again in that kernel, so it runs twice in all) on TEST_WORKERS
# processes; tests/conftest.py starts the long tests first and the short ones fill in. A failing
# lesson is named in pytest's summary (FAILED ...[NN_topic]) and the target fails.
# `pytest --nbmake notebooks` still runs the lessons once each, as they are.
TEST_RUN := $(TEST_ENV) OMP_NUM_THREADS=1 NB_CELL_TIMEOUT=$(NB_CELL_TIMEOUT) FTLAB_NOTEBOOKS=$(NOTEBOOKS) \
  $(PY) -m pytest -q -p no:cacheprovider $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --maxschedchunk 1)

test: $(STAMP)
	$(TEST_RUN) tests --continue-on-collection-errors -m "not standins" \
	  || { echo "make test: FAILED (see the summary above)"; exit 1; }

test-unit: $(STAMP)
	$(TEST_RUN) tests --continue-on-collection-errors -m "not standins and not lessons"

# pytest exits 5 when it collects nothing; with no notebooks yet that is not a failure.
test-notebooks: $(STAMP)
	@if ! ls $(NOTEBOOKS)/*.ipynb >/dev/null 2>&1; then \
	  echo "no notebooks in $(NOTEBOOKS)/ (only .py twins? run make sync): nothing to execute"; exit 0; fi; \
	$(TEST_RUN) tests/test_lessons_rerun.py; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no notebook collected"; rc=0; fi; \
	exit $$rc

# The same code against the floors: .venv-floors/ holds the lower bound of every range in
# pyproject.toml (its dependencies and the quant extra), as scripts/floors.py reads them, except
# FLOORS_PINNED, kept at requirements.txt's pins (torch and torchvision: the only builds pip can
# install here; pytest and setuptools: the runner and ftlab's editable install). It is rebuilt
# from scratch whenever pyproject.toml, requirements.txt or scripts/floors.py is newer than its
# stamp. `make test-floors FLOORS_TESTS=tests` runs every unit test there.
FLOORS_VENV := .venv-floors
FLOORS_PY := $(FLOORS_VENV)/bin/python
FLOORS_STAMP := $(FLOORS_VENV)/.stamp
FLOORS_PINNED := torch torchvision pytest setuptools
FLOORS_TESTS ?= tests/test_floors.py tests/test_lora.py tests/test_quant.py tests/test_sft.py tests/test_dpo.py \
  tests/test_drills.py tests/test_train.py tests/test_run.py tests/test_qlora_cpu.py tests/test_adapters.py \
  tests/test_forgetting.py tests/test_widgets.py tests/test_runtime.py tests/test_memory_models.py \
  tests/test_memory_sharding.py tests/test_simulated_gpu.py tests/test_language_world.py tests/test_probe.py \
  tests/test_vision_world.py tests/test_text_world.py tests/test_ddp.py tests/test_widgets_raise.py

$(FLOORS_STAMP): requirements.txt pyproject.toml scripts/floors.py
	@rm -rf $(FLOORS_VENV) && $(PYTHON) -m venv $(FLOORS_VENV)
	@$(PYTHON) scripts/floors.py --extra quant --pinned $(FLOORS_PINNED) > $(FLOORS_VENV)/floors.txt
	@echo "installing the floors into $(FLOORS_VENV): $$(tr '\n' ' ' < $(FLOORS_VENV)/floors.txt)"
	@{ $(FLOORS_PY) -m pip install --progress-bar off --upgrade "pip>=24" \
	   && $(FLOORS_PY) -m pip install --progress-bar off -r $(FLOORS_VENV)/floors.txt \
	   && $(FLOORS_PY) -m pip install --no-deps --no-build-isolation -e . ; } > $(FLOORS_VENV)/install.log 2>&1 \
	  || { tail -n 60 $(FLOORS_VENV)/install.log; echo "pip install failed: see $(FLOORS_VENV)/install.log"; exit 1; }
	@touch $(FLOORS_STAMP)

test-floors: $(FLOORS_STAMP)
	$(TEST_ENV) FTLAB_TEST_FLOORS="$(FLOORS_PINNED)" $(FLOORS_PY) -m pytest $(FLOORS_TESTS) -q -p no:cacheprovider

lessons: $(STAMP)
	FTLAB_PROFILE=$(PROFILE) $(if $(filter tiny,$(PROFILE)),$(OFFLINE)) \
	  $(PY) scripts/run_lessons.py

# The Colab path offline: stand-ins of the hub models and datasets (built on first use into
# build/standins/), FTLAB_PROFILE=full, FTLAB_SIMULATE_GPU=t4 then l4, short runs.
rehearse: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest tests -q -m standins -p no:cacheprovider
	MPLBACKEND=Agg PIP_NO_INPUT=1 $(PY) scripts/rehearse.py

# The set-up cell as on a fresh Colab runtime: a new build/colab-venv/ holding Colab's preinstalled
# set (scripts/colab_preinstalled.txt) and a stand-in google.colab; FTLAB_INSTALL points the cell's
# install line at a wheel of this checkout; lessons 00 and 04 run in the full profile on a
# simulated T4 (stand-ins, 2 steps). COLAB_LESSONS / COLAB_ARGS change what runs.
COLAB_LESSONS ?= 00 04
rehearse-colab: $(STAMP)
	PIP_NO_INPUT=1 $(PY) scripts/colab_rehearsal.py $(COLAB_LESSONS) $(COLAB_ARGS)

lab: $(STAMP)
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install --progress-bar off "$(JUPYTERLAB)"
	$(VENV)/bin/jupyter lab --notebook-dir=$(NOTEBOOKS)

# What a student does, in a browser (scripts/browser_test.py): JupyterLab on a copy of lessons 07
# and 02, Run All Cells in headless Chromium, move one explorer's slider, check that its output
# changed and that no cell or widget shows an error; screenshots in build/browser/. Then the canary
# (tests/browser/): it must pass a healthy explorer and fail one that breaks when its slider moves.
# Needs Debian's chromium and chromium-driver; installs BROWSER_PKGS into .venv on first use (like
# make lab: make test does not need them).
BROWSER_PKGS ?= $(JUPYTERLAB) selenium==4.51.0
browser-test: $(STAMP)
	@$(PY) -c "import sys, importlib.metadata as m; \
	  sys.exit(any(m.version(p.split('==')[0]) != p.split('==')[1] for p in sys.argv[1:]))" $(BROWSER_PKGS) 2>/dev/null \
	  || $(PY) -m pip install --progress-bar off $(BROWSER_PKGS) > $(VENV)/browser-install.log 2>&1 \
	  || { tail -n 30 $(VENV)/browser-install.log; echo "pip install $(BROWSER_PKGS) failed"; exit 1; }
	$(TEST_ENV) OMP_NUM_THREADS=1 $(PY) scripts/browser_test.py
	$(TEST_ENV) OMP_NUM_THREADS=1 FTLAB_BROWSER_TESTS=1 $(PY) -m pytest tests/browser -q -p no:cacheprovider

# A new .ipynb also needs its Colab badge in the README table, so sync ends with badges.
sync: $(STAMP)
	$(PY) scripts/sync_notebooks.py
	$(PY) scripts/badges.py

badges: $(STAMP)
	$(PY) scripts/badges.py

clean:
	rm -rf build dist .pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
