"""A W&B server sweep (``entity/project/sweep_id``) read through ``wandb.Api`` with the surface of
``LocalSweep``, so ``reidlib.analysis`` and ``notebooks/analysis.ipynb`` work on either.

What the driver records in each W&B run (``reidlib.sweep.bridge``) is what this reads back: the
sweep's parameters and the trial's effective YACS config in ``run.config``; our state, the best
metrics, the checkpoint and the notebook's path in ``run.summary``; one history row per epoch. Paths
are those of the machine that ran the trial (the notebook is also among the run's files).

Our summary ``state`` decides a run's state; a run that never wrote one (its driver died) gets its
W&B state, mapped to ours. The best run is computed here like a local sweep's (finished runs only),
not by ``wandb.Api().sweep().best_run()``, which ranks stopped and failed runs too.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from reidlib.analysis.readers import SweepReader
from reidlib.errors import SweepStateError
from reidlib.trial import TrialState


class WandbRun:
    """One ``wandb.apis.public.Run`` with ``LocalRun``'s surface."""

    def __init__(self, run, parameter_names: set[str], yacs_keys: set[str]):
        self._run, self._parameter_names, self._yacs_keys = run, parameter_names, yacs_keys

    @property
    def name(self) -> str:
        return self._run.name or self._run.id

    @property
    def id(self) -> str:
        return self._run.id

    @property
    def state(self) -> str:
        recorded = self._run.summary.get("state")
        return recorded or TrialState.of_wandb_run(self._run.state)

    @property
    def config(self) -> dict:
        """The sweep's parameters only (the run's config also holds every YACS key)."""
        return {k: v for k, v in self._run.config.items() if k in self._parameter_names}

    @property
    def effective_config(self) -> dict:
        return {k: v for k, v in self._run.config.items() if k in self._yacs_keys}

    @property
    def summary(self) -> dict:
        return {**dict(self._run.summary.items()), "state": self.state}

    @property
    def exit_reason(self) -> str | None:
        if self.state in (TrialState.FINISHED, TrialState.RUNNING):
            return None
        summary = self._run.summary
        return summary.get("error") or summary.get("status") or f"W&B state {self._run.state}"

    @property
    def notebook_path(self) -> Path | None:
        path = self._run.summary.get("notebook")
        return Path(path) if path else None

    @property
    def checkpoint(self) -> Path | None:
        path = self._run.summary.get("checkpoint")
        return Path(path) if path else None

    def history(self) -> pd.DataFrame:
        """One row per epoch: every logged row (``scan_history``, not ``history()``'s sample of 500),
        without W&B's own ``_step``/``_runtime``/``_timestamp``."""
        rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in self._run.scan_history()
                if "epoch" in row]
        frame = pd.DataFrame(rows)
        return frame.sort_values("epoch", ignore_index=True) if "epoch" in frame else frame


class WandbSweep(SweepReader):
    """One ``wandb.apis.public.Sweep`` with ``LocalSweep``'s surface (no ``directory``: nothing is local)."""

    def __init__(self, sweep):
        from reidlib.config import flat_keys, load_config

        server_config = sweep.config
        parameters = server_config.get("parameters") or {}
        # Our config_file travels as a constant parameter (reidlib.sweep.wandb_server); a local sweep
        # keeps it at the top, where best_config_diff looks.
        self.config = {**server_config, "config_file": (parameters.get("config_file") or {}).get("value")}
        self.id, self.name = sweep.id, sweep.name
        yacs_keys = set(dict(flat_keys(load_config())))
        self.runs = [WandbRun(run, set(parameters), yacs_keys) for run in sweep.runs]


def open_wandb_sweep(path: str) -> WandbSweep:
    """``wandb.Api().sweep(path)`` as a ``WandbSweep``; a sweep W&B cannot give is a SweepStateError
    naming the path (called by ``open_sweep`` once no local sweep has that name)."""
    import wandb

    try:
        sweep = wandb.Api().sweep(path)
    except Exception as err:  # wandb raises CommError, UsageError, ValueError, requests' errors alike
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SweepStateError(path, f"no local sweep of that name, and W&B could not open it ({reason})") from None
    return WandbSweep(sweep)
