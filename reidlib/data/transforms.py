"""Training and test transforms: resize, flip, pad + random crop, normalise, random erasing, as the
Bag of Tricks (reid-strong-baseline's ``build_transforms``)."""
from __future__ import annotations

from typing import Callable

import torch
from torchvision import transforms as T

ERASE_AREA = (0.02, 0.4)  # sl, sh: the erased share of the image
ERASE_MIN_ASPECT = 0.3  # r1: the aspect ratio (height / width) is uniform in [r1, 1 / r1]
ERASE_TRIES = 100  # draws until one fits; an image with none that fits is left whole


def random_erasing(x: torch.Tensor, prob: float, fill, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
    """reid-strong-baseline's random erasing (Zhong et al.) of a normalised ``B x C x H x W`` batch,
    in place: with ``prob``, each image gets one rectangle of ``ERASE_AREA`` of it, its aspect ratio
    uniform in [0.3, 1/0.3], the first of ``ERASE_TRIES`` draws that fits, at a uniform position,
    channel c filled with ``fill[c]``. Upstream fills with ``INPUT.PIXEL_MEAN`` after normalisation,
    and so do we. ``rand(*shape)``: uniform [0, 1) draws on ``x``'s device."""
    b, _, h, w = x.shape
    area = h * w * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * rand(b, ERASE_TRIES))
    aspect = ERASE_MIN_ASPECT + (1 / ERASE_MIN_ASPECT - ERASE_MIN_ASPECT) * rand(b, ERASE_TRIES)
    eh, ew = torch.sqrt(area * aspect).round().long(), torch.sqrt(area / aspect).round().long()
    fits = (eh < h) & (ew < w)
    first = fits.float().argmax(1, keepdim=True)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    erased = fits.any(1) & (rand(b) < prob)
    top = (rand(b) * (h - eh + 1)).long()
    left = (rand(b) * (w - ew + 1)).long()
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (ys[None] >= top[:, None]) & (ys[None] < (top + eh)[:, None])
    in_cols = (xs[None] >= left[:, None]) & (xs[None] < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & erased[:, None, None]).unsqueeze(1)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return torch.where(mask, fill, x, out=x)


class RandomErasing:
    """``random_erasing`` of one image (the per-sample path). It draws from torch's global generator,
    which DataLoader seeds differently in each worker."""

    def __init__(self, prob: float, fill):
        self.prob, self.fill = prob, tuple(fill)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return random_erasing(image[None], self.prob, self.fill, lambda *shape: torch.rand(shape))[0]


def make_transforms(cfg, is_train: bool) -> T.Compose:
    normalize = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if not is_train:
        return T.Compose([T.Resize(cfg.INPUT.SIZE_TEST), T.ToTensor(), normalize])
    return T.Compose([
        T.Resize(cfg.INPUT.SIZE_TRAIN),
        T.RandomHorizontalFlip(p=cfg.INPUT.PROB),
        T.Pad(cfg.INPUT.PADDING),
        T.RandomCrop(cfg.INPUT.SIZE_TRAIN),
        T.ToTensor(),
        normalize,
        RandomErasing(cfg.INPUT.RE_PROB, cfg.INPUT.PIXEL_MEAN),
    ])
