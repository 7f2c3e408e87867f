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

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from reidlib import trial as contract
from reidlib.errors import SweepStateError
from reidlib.rates import is_rate, percent
from reidlib.report import (
    FONT,
    curve,
    epoch_axis,
    finish_figure,
    label_axes,
    new_figure,
    percent_axis,
)
from reidlib.report import show as show  # the notebook's analysis.show(table)
from reidlib.sweep import layout
from reidlib.sweep.finalize import finalize, read_final
from reidlib.sweep.lease import DRIVER_GONE, DriverLease
from reidlib.sweep.ledger import CRASHED, FINISHED, RUNNING, STOPPED, Ledger, Trial
from reidlib.sweep.selection import selected_trial
from reidlib.sweep.spec import leaves
from reidlib.wandb_run import flat_summary

TEST_METRIC = "test/mAP"
SELECTED_ON_TEST = ("selected on the test set: no training identities were held out (DATASETS.VAL_IDS 0), so val/* "
                    "is query/gallery and the best run's numbers overstate what it does on unseen people")


@dataclass
class LocalRun:
    trial: Trial
    sweep_id: str
    metric: dict = field(default_factory=lambda: dict(contract.DEFAULT_METRIC))  # the sweep's: its best is in the summary

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
        """As W&B's: a running trial's is what its epochs so far logged (each ``val/*`` and the sweep's
        metric at its best)."""
        if self.trial.state == RUNNING and self.trial.summary is None:
            history = self.trial.history
            so_far = {"best": contract.best_metrics(history), "epochs_run": len(history)}
            return {**(history[-1] if history else {}),
                    **flat_summary(contract.with_metric_best(so_far, history, self.metric)), "state": self.trial.state}
        # the sweep's metric's best recomputed: a ledger from before summaries held it reads the same
        summary = contract.with_metric_best(self.trial.summary, self.trial.history, self.metric)
        return {**flat_summary(summary), "state": self.trial.state}

    @property
    def exit_reason(self) -> str | None:
        return self.trial.exit_reason

    @property
    def effective_config(self) -> dict:
        """Every YACS key as the trial trained with it (flattened, dotted)."""
        return dict(self.trial.config or {})

    @property
    def notebook_path(self) -> Path | None:
        return Path(self.trial.notebook) if self.trial.notebook else None

    @property
    def checkpoint(self) -> Path | None:
        path = (self.trial.summary or {}).get("checkpoint")
        return Path(path) if path else None

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.trial.history)


class SweepReader:
    """What every sweep reader (``LocalSweep``, ``WandbSweep``) derives from its ``config`` and ``runs``:
    the metric and the best run."""

    config: dict
    runs: list

    @property
    def metric(self) -> tuple[str, str]:
        metric = self.config.get("metric") or contract.DEFAULT_METRIC
        return metric["name"], metric.get("goal", contract.MAXIMIZE)

    def best_run(self, order: str | None = None):
        """The finished run with the best metric (``selected_trial``); ``order`` as in wandb.Api
        (``"-summary_metrics.val/mAP"`` = highest first; a leading ``+`` = lowest first)."""
        if order is None:
            name, goal = self.metric
        else:
            goal = "minimize" if order.startswith("+") else "maximize"
            name = order.lstrip("+-").removeprefix("summary_metrics.")
        return selected_trial(self.runs, {"name": name, "goal": goal}, lambda run: run.summary.get(name))


class LocalSweep(SweepReader):
    def __init__(self, directory: Path):
        self.directory = directory
        ledger = Ledger.open(directory)
        try:
            info = ledger.sweep()
            self.id, self.name, self.config = info["id"], info["name"], info["spec"]
            trials = ledger.trials(with_history=True)
            orphans = {t.name for t in trials if t.state == RUNNING and not DriverLease.alive(directory, t.worker)}
            if orphans:  # a driver records its trials' ends before it lets go: one that just did is read again
                trials = ledger.trials(with_history=True)
        finally:
            ledger.close()
        metric = self.config.get("metric") or contract.DEFAULT_METRIC
        self.runs = [LocalRun(replace(t, state=CRASHED, exit_reason=DRIVER_GONE)
                              if t.name in orphans and t.state == RUNNING else t, self.id, metric) for t in trials]


def open_local_sweep(ref: str | Path, runs_dir: str | Path = layout.RUNS_DIR) -> LocalSweep:
    """A sweep of this machine, by id (under ``runs_dir``) or by directory."""
    return LocalSweep(layout.existing_sweep_dir(ref, runs_dir))


def open_sweep(ref: str | Path, runs_dir: str | Path = layout.RUNS_DIR) -> SweepReader:
    """A sweep by id (under ``runs_dir``), by directory, or by W&B path ``entity/project/sweep_id``
    (through ``wandb.Api``); a local sweep of that name wins."""
    try:
        return open_local_sweep(ref, runs_dir)
    except SweepStateError as err:
        if not (isinstance(ref, str) and len(parts := ref.split("/")) == 3 and all(parts)):
            raise SweepStateError(err.field, f"{err.message}; a W&B sweep is ENTITY/PROJECT/SWEEP_ID") from None
    from reidlib.analysis.wandb_sweep import open_wandb_sweep

    return open_wandb_sweep(ref)


def leaderboard(sweep: SweepReader) -> pd.DataFrame:
    """One row per trial: state, parameters, best metrics, epochs run, wall time; best first,
    failures last with their reason."""
    name, goal = sweep.metric
    rows = []
    for run in sweep.runs:
        s = run.summary
        rows.append({"trial": run.name, "state": run.state, **run.config,
                     name: s.get(name), "val/rank1": s.get("val/rank1"), TEST_METRIC: s.get(TEST_METRIC),
                     "epochs": s.get("epochs_run"),
                     "wall_s": round(s["wall_time_s"], 1) if "wall_time_s" in s else None,
                     "reason": run.exit_reason or ""})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_ok"] = frame["state"] == FINISHED
    frame = frame.sort_values(["_ok", name], ascending=[False, goal == "minimize"], na_position="last")
    return frame.drop(columns="_ok").set_index("trial")


def untrained_value(run, metric: str):
    """``metric`` of the run's network before training (``TEST.EVAL_BEFORE_TRAINING``), if evaluated."""
    return run.summary.get(f"untrained/{metric}", run.summary.get(f"initial/{metric}"))  # initial/: older runs


def plot_curves(sweep: SweepReader, metric: str = "val/mAP", top: int = 5):
    """``metric`` (from the untrained network's, at epoch 0, when it was evaluated) and training loss
    per epoch for the ``top`` runs, on shared axes."""
    names = list(leaderboard(sweep).index[:top])
    fig, axes = new_figure(2, width=5.0, height=3.4)
    for run in sweep.runs:
        if run.name not in names:
            continue
        hist = run.history()
        for ax, key in zip(axes, (metric, "train/loss")):
            untrained = untrained_value(run, key)
            epochs, values = curve(hist, key, {key: untrained} if untrained is not None else None)
            if epochs:
                ax.plot(epochs, values, marker=".", label=run.name)
    for ax, key in zip(axes, (metric, "train/loss")):
        label_axes(ax, key, "epoch")
        epoch_axis(ax)
        if ax.lines:
            ax.legend(fontsize=FONT["legend"])
    if is_rate(metric):
        percent_axis(axes[0])
    return finish_figure(fig)


class LiveLeaderboard:
    """The leaderboard with each trial's report link (``trial_links``), redrawn in place in a notebook:
    pass ``update`` as ``run_sweep(on_update=...)``. It appears at the first update, under the
    sweep's progress bars."""

    def __init__(self, link_base: str | Path | None = None):
        self.link_base = link_base
        self._handle = None

    def update(self, sweep_dir: Path) -> None:
        from IPython.display import display

        table = trial_links(open_sweep(sweep_dir), self.link_base)
        if self._handle is None:
            self._handle = display(table, display_id=True)
        else:
            self._handle.update(table)


def trial_links(sweep: SweepReader, link_base: str | Path | None = None):
    """The leaderboard as an HTML table (``table.reid-leaderboard``), best first: each trial with
    its state, parameters and metrics (mAP and rank-k in %), its name linking to its executed notebook
    (``a.reid-report``), relative to ``link_base`` (``reidlib.report.relative_href``: JupyterLab resolves a
    relative link in an output against the notebook's directory and opens the file)."""
    import html

    from IPython.display import HTML

    from reidlib.report import cell_html, relative_href

    board = leaderboard(sweep)
    best = sweep.best_run()
    runs = {r.name: r for r in sweep.runs}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["trial", *board.columns])
    rows = []
    for trial_name, row in board.iterrows():
        path = runs[trial_name].notebook_path
        label = html.escape(trial_name) + (" (best)" if best and trial_name == best.name else "")
        link = f'<a class="reid-report" href="{html.escape(relative_href(path, link_base))}">{label}</a>' \
            if path else label
        cells = "".join(f"<td>{cell_html(key, value)}</td>" for key, value in row.items())
        rows.append(f'<tr class="reid-trial reid-{html.escape(row["state"])}"><td>{link}</td>{cells}</tr>')
    warning = f"<p><strong>{html.escape(SELECTED_ON_TEST)}</strong></p>" if selected_on_test(sweep) else ""
    empty = "" if rows else "<p>no trial yet</p>"
    return HTML(f'{warning}<table class="reid-leaderboard"><tr>{head}</tr>{"".join(rows)}</table>{empty}')


def numeric_parameters(sweep: SweepReader) -> list[str]:
    """The searched parameters whose values are numbers (what scatter plots and importances use)."""
    searched = [name for _, name, p in leaves(sweep.config.get("parameters", {})) if "value" not in p]
    return [name for name in searched
            if any(isinstance(r.config.get(name), (int, float)) and not isinstance(r.config.get(name), bool)
                   for r in sweep.runs)]


def log_parameters(sweep: SweepReader) -> set[str]:
    """The parameters the spec draws on a log scale (log_uniform_values, q_log_uniform, inv_log_uniform...)."""
    return {name for _, name, p in leaves(sweep.config.get("parameters", {})) if "log" in str(p.get("distribution", ""))}


def _scored(sweep: SweepReader) -> pd.DataFrame:
    """Finished and stopped runs with the metric: one row each, parameters flattened."""
    name, _ = sweep.metric
    rows = [{**r.config, name: r.summary.get(name), "trial": r.name} for r in sweep.runs
            if r.state in (FINISHED, STOPPED) and isinstance(r.summary.get(name), (int, float))]
    return pd.DataFrame(rows)


def varied_parameters(sweep: SweepReader, scored: pd.DataFrame) -> list[str]:
    """The numeric parameters that took at least two values among the ``scored`` runs: a constant
    one explains nothing (no correlation, no importance, a scatter in one column)."""
    return [p for p in numeric_parameters(sweep) if p in scored and scored[p].nunique() > 1]


def parameter_importance(sweep: SweepReader) -> pd.DataFrame | str:
    """As W&B's parameter-importance panel: each numeric parameter's correlation with the metric,
    and its random-forest importance (fitted on the parameters, predicting the metric). Parameters
    that did not vary are left out; a correlation with a metric that did not vary is n/a."""
    name, _ = sweep.metric
    frame = _scored(sweep)
    params = varied_parameters(sweep, frame)
    if len(frame) < 3 or not params:
        return (f"needs at least 3 scored trials and a numeric parameter that varied (have {len(frame)} trials, "
                f"{params or 'none'})")
    from sklearn.ensemble import RandomForestRegressor

    x, y = frame[params].astype(float), frame[name].astype(float)
    forest = RandomForestRegressor(n_estimators=200, random_state=0).fit(x, y)
    # Pearson's r divides by both spreads: a metric all trials tied on has none (numpy warns, the answer is n/a)
    correlation = [x[p].corr(y) if y.nunique() > 1 else float("nan") for p in params]
    return pd.DataFrame({"correlation": correlation, "importance": forest.feature_importances_},
                        index=pd.Index(params, name="parameter")).round(3).sort_values("importance", ascending=False)


def short_number(value: float) -> str:
    """A parameter value as a tick or axis label: ``5e-4``, ``1.5e-5``, ``0.3``, ``64``."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def log_axis(ax, axis: str = "x") -> None:
    """A log axis labelled at its decades when two or more are in view, else at 1, 2 and 5 times a
    power of ten, else at a few plain steps; never at every minor tick (2e-5, 3e-5, ... collide)."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    getattr(ax, f"set_{axis}scale")("log")
    scale = getattr(ax, f"{axis}axis")
    low, high = sorted(getattr(ax, f"get_{axis}lim")())
    powers = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    decades = [10.0 ** p for p in powers if low <= 10.0 ** p <= high]
    ones_twos_fives = [m * 10.0 ** p for p in powers for m in (1, 2, 5) if low <= m * 10.0 ** p <= high]
    if len(decades) >= 2:
        scale.set_major_locator(LogLocator(base=10, subs=(1.0,)))
    elif len(ones_twos_fives) >= 2:
        scale.set_major_locator(FixedLocator(ones_twos_fives))
    else:
        scale.set_major_locator(MaxNLocator(nbins=3))
    scale.set_major_formatter(FuncFormatter(lambda value, _: short_number(value)))
    scale.set_minor_formatter(NullFormatter())


def plot_parameters(sweep: SweepReader):
    """Parallel coordinates (parameters -> metric, coloured by the metric, each axis labelled with its
    range) and one scatter per parameter that varied (log axis for log-distributed ones)."""
    import matplotlib.pyplot as plt
    import numpy as np

    name, _ = sweep.metric
    frame = _scored(sweep)
    params = varied_parameters(sweep, frame)
    if frame.empty or not params:
        return "no scored trial with a numeric parameter that varied yet"
    log_scale = log_parameters(sweep)
    fig, axes = new_figure(len(params) + 1, width=4.2, height=3.4)
    columns = params + [name]
    values = frame[columns].astype(float)

    def shown(column, value):
        return percent(value) if is_rate(column) else short_number(value)

    scaled = values.copy()
    for column in columns:
        position = np.log10(values[column]) if column in log_scale else values[column]
        span = position.max() - position.min()
        scaled[column] = (position - position.min()) / span if span else 0.5
    colours = plt.cm.viridis(scaled[name].to_numpy())
    for row, colour in zip(scaled.to_numpy(), colours):
        axes[0].plot(range(len(columns)), row, color=colour, alpha=0.8)
    for i, column in enumerate(columns):  # each vertical axis: its lowest value below, its highest above
        axes[0].axvline(i, color="0.7", linewidth=0.8, zorder=0)
        axes[0].text(i, -0.06, shown(column, values[column].min()), ha="center", va="top", fontsize=FONT["legend"])
        axes[0].text(i, 1.06, shown(column, values[column].max()), ha="center", va="bottom", fontsize=FONT["legend"])
    axes[0].set_xticks(range(len(columns)), columns, rotation=15)
    axes[0].set_ylim(-0.25, 1.25)
    axes[0].set_yticks([])
    axes[0].set_title("parallel coordinates", fontsize=FONT["title"], pad=14)
    for ax, param in zip(axes[1:], params):
        ax.scatter(frame[param], frame[name], c=colours, s=30)
        if param in log_scale:
            log_axis(ax)
        if is_rate(name):
            percent_axis(ax)
        label_axes(ax, "", param, name)
    return finish_figure(fig)


def cost_table(sweep: SweepReader) -> pd.DataFrame:
    """Per trial: device, its peak memory (GPU; none on a CPU), device seconds, epochs run of the
    budget, time to its best epoch."""
    name, goal = sweep.metric
    rows = []
    for run in sweep.runs:
        s, hist = run.summary, run.history()
        seconds = s.get("wall_time_s")
        to_best = None
        best_epoch = contract.best_row(hist.to_dict("records"), name, goal)
        if best_epoch is not None:
            to_best = float(hist.loc[hist["epoch"] <= best_epoch["epoch"], "time/epoch_s"].sum())
        rows.append({"trial": run.name, "state": run.state, "device": "GPU" if s.get("peak_mem_mb") else "CPU",
                     "peak_mem_mb": s.get("peak_mem_mb") or None,  # a CPU has no peak (older trials wrote 0.0)
                     "device_s": round(seconds, 1) if seconds else None, "epochs_run": s.get("epochs_run"),
                     "epochs_budget": s.get("max_epochs"), "s_to_best": round(to_best, 1) if to_best else None})
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


def hyperband_savings(sweep: SweepReader) -> str:
    runs = [r.summary for r in sweep.runs if r.summary.get("max_epochs")]
    run, budget = sum(s.get("epochs_run", 0) for s in runs), sum(s["max_epochs"] for s in runs)
    if not budget:
        return "no trial has reported its epochs yet"
    return f"{run} epochs trained of a full budget of {budget} ({100 * (1 - run / budget):.0f}% saved by early stopping)"


def best_config_diff(sweep: SweepReader) -> pd.DataFrame | str:
    """The best run's effective config against the sweep's base config file: what the search changed."""
    from reidlib.config import flat_keys, load_config

    best = sweep.best_run()
    if best is None or not best.effective_config:
        return "no finished trial yet"
    base = dict(flat_keys(load_config(sweep.config.get("config_file"))))
    changed = {k: (base.get(k), v) for k, v in best.effective_config.items()
               if k not in ("OUTPUT_DIR", "WANDB.ENABLE") and _normal(base.get(k)) != _normal(v)}
    return pd.DataFrame([(k, repr(a), repr(b)) for k, (a, b) in sorted(changed.items())],
                        columns=["key", "base", "best"]).set_index("key")


def _normal(value):
    return list(value) if isinstance(value, tuple) else value


def selected_on_test(sweep: SweepReader) -> bool:
    """Whether the sweep's ``val/*`` was query/gallery: its trials held out no identities."""
    held_out = [r.summary["val_ids"] for r in sweep.runs if r.summary.get("val_ids") is not None]
    return bool(held_out) and not any(held_out)


def selection_check(sweep: SweepReader) -> pd.DataFrame | str:
    """Can the validation split be trusted: the selected run's ``val/*`` and ``test/mAP`` (and the
    finalized model's), Kendall's tau between ``val`` and ``test`` over finished runs, and which run a
    search on the test set would have picked."""
    name, _ = sweep.metric
    best = sweep.best_run()
    if best is None:
        return "no finished trial yet"
    scored = pd.DataFrame([{"trial": r.name, "val": r.summary.get(name), "test": r.summary.get(TEST_METRIC)}
                           for r in sweep.runs if r.state == FINISHED]).dropna()
    rows = {"selection": "test set (DATASETS.VAL_IDS 0)" if selected_on_test(sweep)
            else f"{best.summary.get('val_ids', '?')} held-out training identities",
            f"selected run (best {name})": best.name, name: best.summary.get(name),
            f"its {TEST_METRIC}": best.summary.get(TEST_METRIC)}
    final = read_final(sweep.directory) if isinstance(sweep, LocalSweep) else None
    if final and final.get("trial") == best.name:
        rows[f"finalized model's {TEST_METRIC}"] = final["test"].get(TEST_METRIC)  # retrained on every identity
    if len(scored) >= 3:
        tau = scored["val"].astype(float).corr(scored["test"].astype(float), method="kendall")
        rows[f"Kendall's tau, {name} vs {TEST_METRIC} ({len(scored)} finished runs)"] = round(float(tau), 3)
    pick = selected_trial(sweep.runs, {"name": TEST_METRIC, "goal": contract.MAXIMIZE},
                          lambda run: run.summary.get(TEST_METRIC))
    if pick is not None:
        rows["chosen on the test set instead"] = f"{pick.name} ({TEST_METRIC} {percent(pick.summary[TEST_METRIC])})"
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def final_run(sweep: SweepReader, train: bool = False) -> pd.DataFrame | str:
    """The sweep's final model (``reid-sweep finalize``): the best run's configuration retrained on
    every training identity and tested once. ``train`` runs the finalize when there is none yet."""
    if not isinstance(sweep, LocalSweep):
        return "finalize runs on the machine that holds the sweep: reid-sweep finalize <sweep id>"
    best = sweep.best_run()
    final = read_final(sweep.directory)
    if best is not None and train and (final is None or final.get("trial") != best.name):
        final = finalize(sweep.directory, best.name)
    if final is None:
        return (f"not finalized yet: 'reid-sweep finalize {sweep.id}' (or finalize = True above) trains the best "
                "configuration again on every training identity and tests it once")
    rows = {"trained from": final["trial"], **final["test"], "epochs": final.get("epochs_run"),
            "notebook": Path(final["notebook"]), "checkpoint": Path(final["checkpoint"]) if final.get("checkpoint") else None}
    stale = best is not None and final["trial"] != best.name
    if stale:
        rows["note"] = f"the best run is now {best.name}: finalize again"
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def overview(sweep: SweepReader) -> str:
    """One paragraph: trials by state, the best run, and what to look at when nothing finished."""
    from collections import Counter

    name, goal = sweep.metric
    states = Counter(r.state for r in sweep.runs)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no trials yet"
    text = f"sweep {sweep.id} ({sweep.name}): {len(sweep.runs)} trials ({counts}); metric {name} ({goal})"
    if selected_on_test(sweep):
        text += f"\n{SELECTED_ON_TEST}"
    best = sweep.best_run()
    if best is not None:
        test = best.summary.get(TEST_METRIC)
        return f"{text}\nbest run: {best.name}, {name} {percent(best.summary[name])}" + \
            (f" ({TEST_METRIC} {percent(test)})" if test is not None else "")
    if states.get(RUNNING):
        return f"{text}\nno trial has finished yet: the sweep is still running"
    reasons = Counter(r.exit_reason or r.state for r in sweep.runs)
    listed = "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(3))
    return f"{text}\nno trial finished: {listed}" if sweep.runs else text


def best_run_table(sweep: SweepReader) -> pd.DataFrame | str:
    """The best run's parameters, metrics, and where its notebook and checkpoint are."""
    best = sweep.best_run()
    if best is None:
        return "no finished trial yet"
    keys = ("val/mAP", "val/rank1", "val/rank5", "val/mINP", "last/val/mAP", "untrained/val/mAP", "val_ids",
            TEST_METRIC, "test/rank1", "epochs_run", "wall_time_s")
    metrics = {k: untrained_value(best, "val/mAP") if k == "untrained/val/mAP" else best.summary.get(k) for k in keys}
    rows = {**{f"param {k}": v for k, v in best.config.items()}, **metrics,
            "notebook": best.notebook_path, "checkpoint": best.checkpoint}
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def evaluation_gain(sweep: SweepReader) -> pd.DataFrame | str:
    """An evaluation sweep (``from:``) against the trained run it evaluates, same weights in each row: the
    test-time options the trained run used and those selected (the best run's); ``val/*`` of the trained
    run's checkpoint under each (its last evaluation, the best run's); ``test/*`` under each, from the
    trials when they measured it (``TEST.EVAL_TEST_SET``), else from the two finalized models (the
    trained sweep's final model under its own options, and under the selected ones); and the gain."""
    from reidlib.errors import SpecError
    from reidlib.sweep.evaluation_spec import EVALUATION_KEYS, find_trained_run

    source = sweep.config.get("from")
    if not source:
        return "a training sweep: an evaluation sweep (from: <sweep-id>) tunes re-ranking and test features on its model"
    best = sweep.best_run()
    if best is None:
        return "no finished trial yet"
    try:
        trained = find_trained_run(source)
    except SpecError as err:
        return f"the trained run is gone: {err}"
    rows = [(key, trained.config.get(key), best.effective_config.get(key), None) for key in EVALUATION_KEYS]

    def compare(label: str, was, now) -> None:
        rows.append((label, was, now, now - was if isinstance(was, float) and isinstance(now, float) else None))

    for metric in ("val/mAP", "val/rank1"):
        compare(metric, (trained.summary.get("last") or {}).get(metric, trained.summary.get(metric)),
                best.summary.get(f"last/{metric}", best.summary.get(metric)))
    chosen_final = read_final(sweep.directory) if isinstance(sweep, LocalSweep) else None
    trained_final = read_final(trained.sweep_dir)
    if best.summary.get(TEST_METRIC) is not None:  # the trials measured test/* on the trained run's checkpoint
        for metric in (TEST_METRIC, "test/rank1"):
            compare(metric, (trained.summary.get("test") or {}).get(metric), best.summary.get(metric))
    elif chosen_final and chosen_final.get("trial") == best.name and trained_final:
        for metric in (TEST_METRIC, "test/rank1"):
            compare(f"{metric} (final models)", trained_final["test"].get(metric), chosen_final["test"].get(metric))
    else:
        rows.append(("test/*", None, f"not measured per trial: reid-sweep finalize {sweep.id} tests the selected "
                     "options once, on the trained sweep's final model", None))
    return pd.DataFrame(rows, columns=["", f"trained run ({trained.trial})", f"selected ({best.name})", "gain"]).set_index("")
