# The project's Jupyter server settings; `make lab` starts JupyterLab with them
# (`jupyter lab --config=jupyter_server_config.py`). c is the config object Jupyter passes in.

# Notebooks git tracks (notebooks/*.ipynb) are saved without outputs and execution counts, so that
# running them in place leaves no diff; executed trial notebooks under runs/ keep theirs.
c.ContentsManager.pre_save_hook = "reidlib.clean_notebooks.strip_committed_notebook"  # noqa: F821
# New notebooks start on the project's kernel (installed by the Makefile into .venv).
c.MultiKernelManager.default_kernel_name = "reid-sweep"  # noqa: F821
