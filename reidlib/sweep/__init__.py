"""The sweep side: spec -> controller -> runner -> bridge -> (ledger, W&B). It never imports the
training code; it shares only ``reidlib.trial`` (the trial contract) and ``reidlib.config``."""
from reidlib.sweep.driver import create_sweep, run_analysis, run_sweep, stop_sweep
from reidlib.sweep.spec import Spec, load_spec

__all__ = ["Spec", "create_sweep", "load_spec", "run_analysis", "run_sweep", "stop_sweep"]
