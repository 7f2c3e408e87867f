"""Feature extraction for evaluation."""
from __future__ import annotations

import torch


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader, device: torch.device):
    """``(features, pids, camids)`` for every image of ``loader``, in order; the features stay on
    ``device``, where the evaluation ranks them."""
    model.eval()
    feats, pids, camids = [], [], []
    for images, pid, camid in loader:
        feats.append(model(images.to(device, non_blocking=True)).float())
        pids.append(pid)
        camids.append(camid)
    return torch.cat(feats), torch.cat(pids).numpy(), torch.cat(camids).numpy()
