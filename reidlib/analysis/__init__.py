"""Read a finished or running sweep through the surface of ``wandb.Api().sweep(...)``.

``open_sweep(ref)`` takes a local sweep id or ``runs/<id>`` directory (read from the ledger), or a
W&B path ``entity/project/sweep_id`` (read through ``wandb.Api``, ``reidlib.analysis.wandb_sweep``).
Both sides name things as ``wandb.Api`` does: ``sweep.runs``, ``sweep.best_run(order)``,
``sweep.config``, ``run.name/.id/.state/.config/.summary/.history()``; ours add ``sweep.metric``,
``run.notebook_path``, ``run.checkpoint``, ``run.effective_config`` and ``run.exit_reason``.

Tables keep metrics as fractions, as stored; ``show(table)`` is how a notebook shows them (mAP and
rank-k in %, paths as links).

Which value is a run's ``summary['val/mAP']``: the best over its evaluated epochs, as W&B keeps it
with ``define_metric(summary="max")`` (the last epoch's is ``summary['last/val/mAP']``); the sweep's
metric, whatever it is (``train/loss`` minimized too), is its best for the sweep's goal. ``val/*`` is
the validation split (held-out training identities); ``summary['test/mAP']`` is query/gallery, once,
with the final weights: shown beside, never ranked on. Only finished runs can be the best run:
stopped-early and failed ones never win. A trial the ledger
still has running whose driver process is gone reads as 'crashed' (W&B's state for a run whose
heartbeat stopped); the next driver to open the sweep records it so.
"""
from __future__ import annotations

from reidlib.analysis.figures import plot_curves, plot_parameters
from reidlib.analysis.readers import LocalSweep, open_local_sweep, open_sweep
from reidlib.analysis.tables import (
    SELECTED_ON_TEST,
    best_config_diff,
    best_run_table,
    cost_table,
    evaluation_gain,
    final_run,
    finalized_best,
    hyperband_savings,
    leaderboard,
    numeric_parameters,
    overview,
    parameter_importance,
    selected_on_test,
    selection_check,
)
from reidlib.analysis.widgets import LiveLeaderboard, trial_links
from reidlib.report import show as show  # the notebook's analysis.show(table)

__all__ = [
    "SELECTED_ON_TEST", "LiveLeaderboard", "LocalSweep", "best_config_diff", "best_run_table", "cost_table",
    "evaluation_gain", "final_run", "finalized_best", "hyperband_savings", "leaderboard", "numeric_parameters", "open_local_sweep",
    "open_sweep", "overview", "parameter_importance", "plot_curves", "plot_parameters", "selected_on_test",
    "selection_check", "show", "trial_links",
]
