"""Training and test transforms: resize, flip, pad + random crop, normalise, random erasing
(filled with the pixel mean, i.e. 0 after normalisation), as the Bag of Tricks."""
from __future__ import annotations

from torchvision import transforms as T


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
        T.RandomErasing(p=cfg.INPUT.RE_PROB, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3), value=0),
    ])
