"""The sweep's figures: learning curves of the best runs, and each parameter against the metric."""
from __future__ import annotations

from reidlib.analysis.readers import SweepReader, untrained_value
from reidlib.analysis.tables import leaderboard, scored_runs, varied_parameters
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
from reidlib.sweep.spec import leaves


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


def log_parameters(sweep: SweepReader) -> set[str]:
    """The parameters the spec draws on a log scale (log_uniform_values, q_log_uniform, inv_log_uniform...)."""
    return {name for _, name, p in leaves(sweep.config.get("parameters", {})) if "log" in str(p.get("distribution", ""))}


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
    frame = scored_runs(sweep)
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
