# The two commands of the README: `make demo` (the main job) and `make test`. Each creates .venv/
# with the project installed (editable, with dev extras) when it is missing, and reuses it otherwise.
# `make lab` starts JupyterLab on the project's kernel (installing it into .venv if missing).
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

# JupyterLab (a dev dependency) with the repo root as its root and the project's server settings
# (jupyter_server_config.py: committed notebooks are saved without outputs); as root (a container),
# Jupyter wants --allow-root.
lab: $(INSTALLED)
	$(VENV)/bin/jupyter-lab --config=jupyter_server_config.py $(if $(filter 0,$(shell id -u)),--allow-root)

# The browser tests (the HTML report; sweep.ipynb in JupyterLab) drive Debian's headless Chromium
# (about 20 s to install, as root).
BROWSER_DRIVER := /usr/bin/chromedriver
$(BROWSER_DRIVER):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

test: $(INSTALLED) $(BROWSER_DRIVER)
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
