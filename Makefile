# The two commands of the README: `make demo` (the main job) and `make test`. Each creates .venv/
# with the project installed (editable, with dev extras) when it is missing, and reuses it otherwise.
# `make lab` starts JupyterLab on the project's kernel (installing it into .venv-lab if missing).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test lab bench clean-runs

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name reid-sweep --display-name "reid-sweep (.venv)"
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/reid-sweep run sweeps/demo.yaml --finalize

# JupyterLab lives in its own environment: its server's packages stay out of the one the trial kernels
# run in (jsonschema's optional format checkers it brings take ~6 s to import, in every kernel that
# imports nbformat). It finds the project's kernel through JUPYTER_PATH and the settings' pre-save hook
# (reidlib.clean_notebooks, standard library only) through PYTHONPATH.
LAB_VENV ?= .venv-lab
LAB_INSTALLED := $(LAB_VENV)/.installed
LAB_REQUIREMENT := jupyterlab>=4,<5
export REID_SWEEP_LAB_PYTHON := $(abspath $(LAB_VENV))/bin/python

$(LAB_INSTALLED):
	test -x $(LAB_VENV)/bin/python || $(PYTHON) -m venv $(LAB_VENV)
	$(LAB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '$(LAB_REQUIREMENT)'
	touch $(LAB_INSTALLED)

# The repo root as its root and the project's server settings (jupyter_server_config.py: committed
# notebooks are saved without outputs); as root (a container), Jupyter wants --allow-root.
lab: $(INSTALLED) $(LAB_INSTALLED)
	JUPYTER_PATH=$(abspath $(VENV))/share/jupyter PYTHONPATH=$(CURDIR) $(LAB_VENV)/bin/jupyter-lab \
		--config=jupyter_server_config.py $(if $(filter 0,$(shell id -u)),--allow-root)

# The browser tests (the HTML report; sweep.ipynb in JupyterLab) drive Debian's headless Chromium
# (about 20 s to install, as root).
BROWSER_DRIVER := /usr/bin/chromedriver
$(BROWSER_DRIVER):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

test: $(INSTALLED) $(LAB_INSTALLED) $(BROWSER_DRIVER)
	$(PY) -m ruff check .
	$(PY) -m pytest tests --nbval-lax notebooks/train.ipynb

clean-runs:
	rm -rf runs/*/

bench: $(INSTALLED)
	$(PY) benchmarks/orchestration.py
	$(PY) benchmarks/ranking.py
	$(PY) benchmarks/reranking.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/gpu_memory.py
	$(PY) benchmarks/hyperband.py
	$(PY) benchmarks/search_quality.py
