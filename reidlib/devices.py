"""Which torch device a config trains and evaluates on."""
from __future__ import annotations

import torch

from reidlib.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``MODEL.DEVICE`` as a torch device: 'auto' is CUDA when one is visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("MODEL.DEVICE", "'cuda' asked for but no CUDA device is visible; use 'auto' or 'cpu'")
    return torch.device(name)
