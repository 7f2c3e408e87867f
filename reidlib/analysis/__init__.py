"""Read a finished or running sweep through the surface of ``wandb.Api().sweep(...)``.

``open_sweep(ref)`` takes a local sweep id or ``runs/<id>`` directory (read from the ledger). Both
sides name things as ``wandb.Api`` does: ``sweep.runs``, ``sweep.best_run(order)``, ``sweep.config``,
``run.name/.id/.state/.config/.summary/.history()``; ours add ``run.notebook_path`` and
``run.checkpoint``.

Which value is a run's ``summary['val/mAP']``: the best over its evaluated epochs, as W&B keeps it
with ``define_metric(summary="max")`` (the last epoch's is ``summary['last/val/mAP']``). Only
finished runs can be the best run: stopped-early and failed ones never win.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reidlib.errors import SweepStateError
from reidlib.sweep.bridge import flat_summary
from reidlib.sweep.ledger import FINISHED, Ledger, Trial


@dataclass
class LocalRun:
    trial: Trial
    sweep_id: str

    @property
    def name(self) -> str:
        return self.trial.name

    @property
    def id(self) -> str:
        return self.trial.wandb_id or f"{self.sweep_id}-{self.trial.name}"

    @property
    def state(self) -> str:
        return self.trial.state

    @property
    def config(self) -> dict:
        return dict(self.trial.params)

    @property
    def summary(self) -> dict:
        return {**flat_summary(self.trial.summary), "state": self.trial.state}

    @property
    def exit_reason(self) -> str | None:
        return self.trial.exit_reason

    @property
    def notebook_path(self) -> Path | None:
        return Path(self.trial.notebook) if self.trial.notebook else None

    @property
    def checkpoint(self) -> Path | None:
        path = (self.trial.summary or {}).get("checkpoint")
        return Path(path) if path else None

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.trial.history)


class LocalSweep:
    def __init__(self, directory: Path):
        self.directory = directory
        ledger = Ledger.open(directory)
        try:
            info = ledger.sweep()
            self.id, self.name, self.config = info["id"], info["name"], info["spec"]
            self.runs = [LocalRun(t, self.id) for t in ledger.trials(with_history=True)]
        finally:
            ledger.close()

    @property
    def metric(self) -> tuple[str, str]:
        metric = self.config.get("metric") or {"name": "val/mAP", "goal": "maximize"}
        return metric["name"], metric.get("goal", "maximize")

    def best_run(self, order: str | None = None) -> LocalRun | None:
        """The finished run with the best metric; ``order`` as in wandb.Api (``"-summary_metrics.val/mAP"``
        = highest first; a leading ``+`` = lowest first)."""
        if order is None:
            name, goal = self.metric
        else:
            goal = "minimize" if order.startswith("+") else "maximize"
            name = order.lstrip("+-").removeprefix("summary_metrics.")
        ranked = [r for r in self.runs if r.state == FINISHED and isinstance(r.summary.get(name), (int, float))]
        if not ranked:
            return None
        pick = max if goal == "maximize" else min
        return pick(ranked, key=lambda r: r.summary[name])


def open_sweep(ref: str | Path, runs_dir: str | Path = "runs") -> LocalSweep:
    """A sweep by id (under ``runs_dir``) or by directory."""
    path = Path(ref)
    for candidate in (path, Path(runs_dir) / str(ref)):
        if (candidate / "sweep.db").is_file():
            return LocalSweep(candidate)
    raise SweepStateError(str(ref), f"no sweep found (looked for sweep.db in {path} and {Path(runs_dir) / str(ref)})")


def leaderboard(sweep: LocalSweep) -> pd.DataFrame:
    """One row per trial: state, parameters, best metrics, epochs run, wall time; best first,
    failures last with their reason."""
    name, goal = sweep.metric
    rows = []
    for run in sweep.runs:
        s = run.summary
        rows.append({"trial": run.name, "state": run.state, **run.config,
                     name: s.get(name), "val/rank1": s.get("val/rank1"), "epochs": s.get("epochs_run"),
                     "wall_s": round(s["wall_time_s"], 1) if "wall_time_s" in s else None,
                     "reason": run.exit_reason or ""})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_ok"] = frame["state"] == FINISHED
    frame = frame.sort_values(["_ok", name], ascending=[False, goal == "minimize"], na_position="last")
    return frame.drop(columns="_ok").set_index("trial")


def plot_curves(sweep: LocalSweep, metric: str = "val/mAP", top: int = 5):
    """``metric`` and training loss per epoch for the ``top`` runs, on shared axes."""
    import matplotlib.pyplot as plt

    board = leaderboard(sweep)
    names = list(board.index[:top])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3), dpi=72)
    for run in sweep.runs:
        if run.name not in names:
            continue
        hist = run.history()
        for ax, key in zip(axes, (metric, "train/loss")):
            if key in hist:
                rows = hist.dropna(subset=[key])
                ax.plot(rows["epoch"], rows[key], marker=".", label=run.name)
    for ax, key in zip(axes, (metric, "train/loss")):
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


class LiveLeaderboard:
    """A leaderboard that redraws itself in place in a notebook: pass ``update`` as
    ``run_sweep(on_trial_end=...)``."""

    def __init__(self):
        from IPython.display import display

        self._handle = display("the leaderboard appears when the first trial ends", display_id=True)
        self._lock = threading.Lock()  # workers finish trials concurrently

    def update(self, sweep_dir: Path) -> None:
        with self._lock:
            self._handle.update(leaderboard(open_sweep(sweep_dir)))


def trial_links(sweep: LocalSweep):
    """An HTML table: each trial's state and metric, linked to its executed notebook; best first."""
    import html

    from IPython.display import HTML

    name, _ = sweep.metric
    board = leaderboard(sweep)
    best = sweep.best_run()
    runs = {r.name: r for r in sweep.runs}
    rows = []
    for trial_name, row in board.iterrows():
        path = runs[trial_name].notebook_path
        link = f'<a href="{html.escape(str(path))}">{html.escape(path.name)}</a>' if path else ""
        value = row.get(name)
        mark = " (best)" if best and trial_name == best.name else ""
        rows.append(f"<tr><td>{html.escape(trial_name)}{mark}</td><td>{html.escape(row['state'])}</td>"
                    f"<td>{'' if value is None or value != value else f'{value:.4f}'}</td><td>{link}</td></tr>")
    return HTML(f"<table><tr><th>trial</th><th>state</th><th>{html.escape(name)}</th><th>notebook</th></tr>"
                f"{''.join(rows)}</table>")
