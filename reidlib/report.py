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
              (["val/mAP", "val/rank1"], "validation"), ("time/epoch_s", "seconds per epoch")]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 2.6), dpi=72)
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
    """A trial summary as one column: status, costs, then best, last and untrained metrics, and the test set's."""
    rows = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    for group in ("best", "last", "initial"):
        rows.update({f"{group} {k}": v for k, v in (summary.get(group) or {}).items()})
    rows.update(summary.get("test") or {})
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


EVALUATIONS = {"best": "val: best epoch", "last": "val: last evaluation", "initial": "val: untrained",
               "test": "test: final weights, once"}


def evaluation_table(summary: Mapping) -> pd.DataFrame:
    """mAP, mINP and rank-k: the validation split's at the best epoch, at the last evaluation and
    untrained, then the test set's (query/gallery, evaluated once at the end)."""
    columns = {label: {key.split("/", 1)[1]: value for key, value in (summary.get(group) or {}).items()}
               for group, label in EVALUATIONS.items()}
    frame = pd.DataFrame(columns)
    return frame.loc[[k for k in ("mAP", "mINP", "rank1", "rank5", "rank10") if k in frame.index]].round(4)


def selection_note(summary: Mapping):
    """What ``val/*`` measured, in words; a run without a validation split says that choosing on its
    ``val/*`` is choosing on the test set."""
    from IPython.display import Markdown

    held_out = summary.get("val_ids") or 0
    if held_out:
        return Markdown(f"`val/*` is measured on **{held_out} training identities held out** from training "
                        "(`DATASETS.VAL_IDS`): what a sweep selects on. `test/*` is query/gallery, evaluated once "
                        "at the end with the final weights, never selected on.")
    return Markdown("**Selected on the test set:** no training identities are held out (`DATASETS.VAL_IDS` 0), "
                    "so `val/*` is query/gallery. A configuration chosen on it was chosen on the test set, and its "
                    "numbers overstate what it does on unseen people.")


def plot_cmc(cmc: list[float], max_rank: int = 20):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.6), dpi=72)
    ranks = list(range(1, min(max_rank, len(cmc)) + 1))
    ax.plot(ranks, cmc[: len(ranks)], marker=".")
    ax.set_xlabel("rank", fontsize=8)
    ax.set_ylabel("matching rate", fontsize=8)
    ax.set_title("CMC (last evaluation)", fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


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


def environment_table(cfg) -> pd.DataFrame:
    """Library versions and the device the trial ran on."""
    import platform

    import torch
    import torchvision

    import reidlib
    from reidlib.engine import resolve_device

    device = resolve_device(cfg.MODEL.DEVICE)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return pd.DataFrame({"value": pd.Series({"python": platform.python_version(), "torch": torch.__version__,
                                             "torchvision": torchvision.__version__, "reidlib": reidlib.__version__,
                                             "device": name})})
