"""What the notebooks show: small tables and figures built from configs, histories and summaries.
Kept here (not in cells) so it is tested, and kept small so executed notebooks stay small."""
from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd

from reidlib.config import config_diff, get_defaults


def config_table(cfg) -> pd.DataFrame:
    """The keys where ``cfg`` differs from reidlib's defaults."""
    diff = config_diff(cfg, get_defaults())
    return pd.DataFrame([(k, repr(a), repr(b)) for k, (a, b) in sorted(diff.items())],
                        columns=["key", "default", "value"]).set_index("key")


def history_table(history: Iterable[Mapping]) -> pd.DataFrame:
    frame = pd.DataFrame(list(history))
    return frame.set_index("epoch").round(4) if not frame.empty else frame


def plot_history(history: Iterable[Mapping], title: str = ""):
    """Loss, accuracy, learning rate and validation metrics per epoch, one row of small panels."""
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(list(history))
    panels = [("train/loss", "loss"), ("train/acc", "train accuracy"), ("train/lr", "learning rate"),
              (["val/mAP", "val/rank1"], "validation")]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 2.6), dpi=72)
    for ax, (keys, label) in zip(axes, panels):
        for key in [keys] if isinstance(keys, str) else keys:
            if key in frame:
                rows = frame.dropna(subset=[key])
                ax.plot(rows["epoch"], rows[key], marker=".", label=key)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if not isinstance(keys, str):
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)  # shown once by the cell's return value, not twice
    return fig


def summary_table(summary: Mapping) -> pd.DataFrame:
    """A trial summary as one column: status, costs, then best, last and untrained metrics."""
    rows = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    for group in ("best", "last", "initial"):
        rows.update({f"{group} {k}": v for k, v in (summary.get(group) or {}).items()})
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})
