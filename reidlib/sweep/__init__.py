"""The sweep side: spec -> controller -> runner -> bridge -> (ledger, W&B). It imports nothing above it
(what reads and reports a sweep: ``reidlib.analysis``, ``reidlib.report``, ``reidlib.workflow``); below, the
trial contract (``reidlib.trial``), the config and the datasets (a spec's and a holdout's checks), never torch."""
from reidlib.sweep.driver import run_sweep, stop_sweep
from reidlib.sweep.session import create_sweep
from reidlib.sweep.spec import Spec, load_spec

__all__ = ["Spec", "create_sweep", "load_spec", "run_sweep", "stop_sweep"]
