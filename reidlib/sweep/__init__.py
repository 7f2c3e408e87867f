"""The sweep side: spec -> controller -> runner -> bridge -> (ledger, W&B). It imports nothing above it
(what reads and reports a sweep: ``reidlib.analysis``, ``reidlib.report``, ``reidlib.workflow``); below, the
trial contract (``reidlib.trial``), the config and the datasets (a spec's and a holdout's checks), never torch.

Its names are imported on first use: what only reads a sweep (the analysis kernel, ``reid-sweep report``)
imports the ledger without the driver and the search (W&B's ``sweeps``, scipy.stats: a second)."""
from importlib import import_module

_EXPORTS = {"Spec": "spec", "load_spec": "spec", "create_sweep": "session", "run_sweep": "driver",
            "stop_sweep": "driver"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
