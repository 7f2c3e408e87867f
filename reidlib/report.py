"""What the notebooks show: small tables and figures built from configs, histories and summaries.
Kept here (not in cells) so it is tested, and kept small so executed notebooks stay small.

How a researcher reads them: mAP, mINP and rank-k in % with one decimal (stored as fractions, as
reid-strong-baseline and W&B keep them; ``show`` formats, it never changes the data), missing
figures as "n/a", paths whole and as links, figures at a legible size (``FONT``) with whole epochs.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from reidlib.config import config_diff, get_defaults
from reidlib.rates import NOT_AVAILABLE, is_rate, missing, percent

FONT = {"title": 12, "label": 11, "tick": 10, "legend": 9}  # points; figures are drawn at DPI
DPI = 100


def relative_href(path: str | Path, base: str | Path | None = None) -> str:
    """An href for ``path`` relative to ``base``, by default the notebook's directory (where JupyterLab
    and an HTML export resolve relative links; an absolute file path would be read as a URL of the server)."""
    from urllib.parse import quote

    from reidlib.trial import notebook_dir

    base = Path(base).resolve() if base is not None else notebook_dir()
    return quote(Path(os.path.relpath(Path(path).resolve(), base)).as_posix())


def display_path(path: str | Path) -> str:
    """``path`` as a reader finds it: from the working directory when under it, else whole."""
    path = Path(path).resolve()
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def link(path: str | Path) -> str:
    """An HTML link to ``path`` (``relative_href``), its text the whole path from the working directory."""
    return f'<a href="{html.escape(relative_href(path))}">{html.escape(display_path(path))}</a>'


def _cell(rate: bool, as_html: bool = True):
    def format_value(value) -> str:
        if isinstance(value, Path):
            return link(value) if as_html else display_path(value)
        if missing(value):
            return NOT_AVAILABLE
        if isinstance(value, float):
            return percent(value) if rate else f"{value:.4g}"
        return html.escape(str(value)) if as_html else str(value)
    return format_value


def cell_html(label, value) -> str:
    """One table cell as ``show`` writes it, ``label`` its row or column name."""
    return _cell(is_rate(label))(value)


def show(frame):
    """``frame`` as a table to read (a pandas Styler over the same data): a cell whose row or column
    names a ranking metric in % with one decimal, other numbers to 4 significant digits, missing
    values "n/a", paths as links. Anything but a DataFrame (the analysis functions' sentences when
    there is nothing to show) is returned as it is."""
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        return frame
    styler = frame.style.format(_cell(rate=False))
    rate_rows = [label for label in frame.index if is_rate(label)]
    rate_columns = [label for label in frame.columns if is_rate(label)]
    if rate_rows:
        styler = styler.format(_cell(rate=True), subset=pd.IndexSlice[rate_rows, :])
    if rate_columns:
        styler = styler.format(_cell(rate=True), subset=pd.IndexSlice[:, rate_columns])
    return styler


def as_text(frame, **to_string) -> str:
    """``frame`` formatted as ``show`` formats it, as plain text for a terminal (``reid-sweep status``)."""
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        return frame.to_string(**to_string) if isinstance(frame, pd.DataFrame) else str(frame)
    cells = [[_cell(is_rate(row) or is_rate(column), as_html=False)(frame.iat[i, j])
              for j, column in enumerate(frame.columns)] for i, row in enumerate(frame.index)]
    return pd.DataFrame(cells, index=frame.index, columns=frame.columns).to_string(**to_string)


def metric_text(name: str, value) -> str:
    """One metric's value as the tables show it (a ranking metric in %)."""
    return _cell(is_rate(name), as_html=False)(value)


def new_figure(ncols: int = 1, width: float = 4.5, height: float = 3.2):
    """A row of ``ncols`` axes sized to be read in a notebook: ``FONT``'s sizes at ``DPI``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), dpi=DPI, squeeze=False)
    for ax in axes[0]:
        ax.tick_params(labelsize=FONT["tick"])
    return fig, list(axes[0])


def label_axes(ax, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    ax.set_title(title, fontsize=FONT["title"])
    ax.set_xlabel(xlabel, fontsize=FONT["label"])
    ax.set_ylabel(ylabel, fontsize=FONT["label"])


def epoch_axis(ax) -> None:
    """Whole epochs on the x axis (an epoch is never 1.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def percent_axis(ax, axis: str = "y") -> None:
    """A ranking metric's axis in %, one decimal."""
    from matplotlib.ticker import PercentFormatter

    getattr(ax, f"{axis}axis").set_major_formatter(PercentFormatter(xmax=1, decimals=1))


def finish_figure(fig):
    fig.tight_layout()
    import matplotlib.pyplot as plt

    plt.close(fig)  # shown once by the cell's return value, not twice
    return fig


def config_table(cfg) -> pd.DataFrame:
    """The keys where ``cfg`` differs from reidlib's defaults."""
    diff = config_diff(cfg, get_defaults())
    return pd.DataFrame([(k, repr(a), repr(b)) for k, (a, b) in sorted(diff.items())],
                        columns=["key", "default", "value"]).set_index("key")


def history_table(history: Iterable[Mapping]):
    frame = pd.DataFrame(list(history))
    return show(frame.set_index("epoch")) if not frame.empty else frame


def curve(history: pd.DataFrame, key: str, untrained: Mapping | None = None) -> tuple[list, list]:
    """Epochs and values of ``key`` where it was measured, starting with the untrained evaluation
    at epoch 0 when there is one."""
    epochs, values = ([0], [untrained[key]]) if untrained and untrained.get(key) is not None else ([], [])
    if key in history:
        rows = history.dropna(subset=[key])
        epochs, values = epochs + rows["epoch"].tolist(), values + rows[key].tolist()
    return epochs, values


def plot_history(history: Iterable[Mapping], title: str = "", untrained: Mapping | None = None):
    """Loss, accuracy, learning rate and validation metrics (from the ``untrained`` evaluation at
    epoch 0 when given) per epoch, one row of panels."""
    frame = pd.DataFrame(list(history))
    panels = [("train/loss", "loss"), ("train/acc", "train accuracy"), ("train/lr", "learning rate"),
              (["val/mAP", "val/rank1"], "validation"), ("time/epoch_s", "seconds per epoch")]
    fig, axes = new_figure(len(panels), width=3.4, height=3.0)
    for ax, (keys, label) in zip(axes, panels):
        for key in [keys] if isinstance(keys, str) else keys:
            epochs, values = curve(frame, key, untrained)
            if epochs:
                ax.plot(epochs, values, marker=".", label=key)
        label_axes(ax, label, "epoch")
        epoch_axis(ax)
        if not isinstance(keys, str):
            percent_axis(ax)
            ax.legend(fontsize=FONT["legend"])
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    return finish_figure(fig)


def _untrained(summary: Mapping) -> dict:
    return summary.get("untrained") or summary.get("initial") or {}  # "initial": its name in older summaries


def summary_table(summary: Mapping):
    """A trial summary as one column: status, costs, then best, last and untrained metrics, and the test set's."""
    rows = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    rows["peak_mem_mb"] = summary.get("peak_mem_mb") or None  # a CPU has no peak (older trials wrote 0.0)
    for group in ("best", "last"):
        rows.update({f"{group} {k}": v for k, v in (summary.get(group) or {}).items()})
    rows.update({f"untrained {k}": v for k, v in _untrained(summary).items()})
    rows.update(summary.get("test") or {})
    return show(pd.DataFrame({"value": pd.Series(rows, dtype=object)}))


EVALUATIONS = {"best": "val: best epoch", "last": "val: last evaluation", "untrained": "val: untrained",
               "test": "test: final weights, once"}


def evaluation_table(summary: Mapping):
    """mAP, mINP and rank-k: the validation split's at the best epoch, at the last evaluation and
    untrained, then the test set's (query/gallery, evaluated once at the end)."""
    groups = {**summary, "untrained": _untrained(summary)}
    columns = {label: {key.split("/", 1)[1]: value for key, value in (groups.get(group) or {}).items()}
               for group, label in EVALUATIONS.items()}
    frame = pd.DataFrame(columns)
    return show(frame.loc[[k for k in ("mAP", "mINP", "rank1", "rank5", "rank10") if k in frame.index]])


def selection_note(summary: Mapping):
    """What ``val/*`` measured, in words; a run without a validation split says that choosing on its
    ``val/*`` is choosing on the test set."""
    from IPython.display import Markdown

    held_out = summary.get("val_ids") or 0
    test = ("`test/*` is query/gallery, evaluated once at the end with the final weights, never selected on."
            if summary.get("test") else "`test/*` (query/gallery) was not evaluated in this run "
            "(`TEST.EVAL_TEST_SET`): `reid-sweep finalize` tests the setting a sweep selects, once.")
    if held_out:
        return Markdown(f"`val/*` is measured on **{held_out} training identities held out** from training "
                        f"(`DATASETS.VAL_IDS`): what a sweep selects on. {test}")
    return Markdown("**Selected on the test set:** no training identities are held out (`DATASETS.VAL_IDS` 0), "
                    "so `val/*` is query/gallery. A configuration chosen on it was chosen on the test set, and its "
                    "numbers overstate what it does on unseen people.")


def plot_cmc(cmc: list[float], max_rank: int = 20):
    fig, (ax,) = new_figure()
    ranks = list(range(1, min(max_rank, len(cmc)) + 1))
    ax.plot(ranks, cmc[: len(ranks)], marker=".")
    label_axes(ax, "CMC (last evaluation)", "rank", "matching rate")
    ax.set_ylim(0, 1.02)
    epoch_axis(ax)  # ranks are whole numbers too
    percent_axis(ax)
    return finish_figure(fig)


def ranked_gallery(cfg, model, loaders, num_queries: int = 4, top: int = 10, border: int = 3):
    """For a few queries, the query image then its top-``top`` gallery images under the protocol
    (same id and camera removed), correct matches framed green and wrong ones red.

    One composed JPEG at the images' own resolution: a few tens of KB in the executed notebook.
    """
    import io

    import numpy as np
    from IPython.display import Image as JpegImage
    from PIL import Image, ImageOps

    from reidlib.engine import extract_features
    from reidlib.evaluation import feature_distances, rerank_options

    device = next(model.parameters()).device
    q_feats, q_pids, q_camids = extract_features(model, loaders.query, device)
    g_feats, g_pids, g_camids = extract_features(model, loaders.gallery, device)
    distmat = feature_distances(q_feats, g_feats, cfg.TEST.FEAT_NORM == "yes", rerank=rerank_options(cfg.TEST, device)).cpu().numpy()
    height, width = cfg.INPUT.SIZE_TEST
    cell_w, cell_h = width + 2 * border, height + 2 * border
    picks = np.linspace(0, len(q_pids) - 1, num=min(num_queries, len(q_pids))).astype(int)
    sheet = Image.new("RGB", ((top + 1) * cell_w + border * 2, len(picks) * cell_h), "white")
    for row, q in enumerate(picks):
        order = np.argsort(distmat[q], kind="stable")
        order = order[~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))][:top]
        shown = [(loaders.dataset.query[q][0], "black")]
        shown += [(loaders.dataset.gallery[g][0], "green" if g_pids[g] == q_pids[q] else "red") for g in order]
        for col, (path, colour) in enumerate(shown):
            with Image.open(path) as img:
                tile = ImageOps.expand(img.convert("RGB").resize((width, height)), border=border, fill=colour)
            sheet.paste(tile, (col * cell_w + (border * 2 if col else 0), row * cell_h))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=85)
    return JpegImage(data=buffer.getvalue(), format="jpeg")


def run_metadata(cfg) -> dict:
    """What reproduces this run: the code's git commit, the date (UTC), the seed, the host and the
    device, then library versions."""
    import platform
    import socket
    from datetime import datetime, timezone

    import torch
    import torchvision

    import reidlib
    from reidlib.engine import resolve_device

    device = resolve_device(cfg.MODEL.DEVICE)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    return {"commit": git_commit(Path(reidlib.__file__).resolve().parents[1]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": cfg.SEED,
            "host": socket.gethostname(), "device": f"{device} ({name})", "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "reidlib": reidlib.__version__}


def git_commit(directory: Path) -> str:
    """The commit checked out in ``directory``, marked when tracked files have uncommitted changes."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{commit} (with uncommitted changes)" if changed else commit


def environment_table(cfg):
    """``run_metadata`` as a table."""
    return show(pd.DataFrame({"value": pd.Series(run_metadata(cfg), dtype=object)}))
