"""The fast input path: a split decoded once into a uint8 tensor, augmented a batch at a time.

Per-sample PIL transforms cost a JPEG decode, a resize and five small tensor ops per image per epoch,
on CPU workers. When a split's images, resized once to the input size, fit ``INPUT.CACHE_BUDGET_MB``,
they are decoded once (by ``DATALOADER.NUM_WORKERS`` threads) into one ``N x 3 x H x W`` uint8 tensor kept on
the training device; each batch is indexed out of it and augmented as a whole there. The batch
augmentations draw from the same distributions as ``transforms.make_transforms``: flip with
``INPUT.PROB``; zero padding of ``INPUT.PADDING`` then a random crop back to the input size; ImageNet
normalisation; random erasing with ``INPUT.RE_PROB`` (``transforms.random_erasing``, the same function).

The decoded split is kept on disk too (``reidlib.data.image_cache``): the first trial of a sweep decodes,
every later one memory-maps the file (on the CPU the batches are indexed straight out of the map).
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torchvision import transforms as T

from reidlib.data import image_cache
from reidlib.data.images import ImageFolderSamples
from reidlib.data.transforms import random_erasing

log = logging.getLogger(__name__)


def cache_bytes(num_images: int, size) -> int:
    """Memory of ``num_images`` decoded at ``size`` ([height, width]) as uint8 RGB."""
    return num_images * 3 * size[0] * size[1]


def decode_images(samples, size, num_threads: int = 1) -> torch.Tensor:
    """Every image of ``samples`` resized to ``size``, as one uint8 ``N x 3 x H x W`` tensor. PIL
    releases the GIL while it decodes and resizes, so threads decode in parallel (and an unreadable
    image's ``DatasetError`` reaches the caller as itself, not wrapped by a worker process)."""
    reader = ImageFolderSamples(samples, T.Compose([T.Resize(list(size)), T.PILToTensor()]))
    images = torch.empty((len(samples), 3, *size), dtype=torch.uint8)

    def decode(index: int) -> None:
        images[index] = reader[index][0]

    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        list(pool.map(decode, range(len(samples))))
    return images


def split_images(name: str, samples, size, num_threads: int = 1) -> torch.Tensor:
    """``decode_images`` through the disk cache (``name``: dataset and split, e.g. 'market1501-train');
    decoded in memory when the cache is off or cannot be written (with a warning)."""
    directory = image_cache.images_dir()
    if directory is not None:
        try:
            return torch.from_numpy(image_cache.load_or_decode(
                directory, name, samples, size, lambda: decode_images(samples, size, num_threads).numpy()))
        except OSError as err:
            log.warning("image cache unavailable (%s): decoding in memory", err)
    return decode_images(samples, size, num_threads)


class BatchTransform:
    """uint8 batch -> normalised float batch, with the training augmentations when ``train``."""

    def __init__(self, cfg, train: bool, device: torch.device, seed: int = 0):
        i = cfg.INPUT
        self.train, self.flip_prob, self.padding, self.erase_prob = train, i.PROB, i.PADDING, i.RE_PROB
        # as upstream, erasing writes the pixel mean's values after normalisation (made here once, on the device)
        self.erase_fill = torch.tensor(i.PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        # normalisation on the 0-255 scale: (x / 255 - mean) / std in two in-place ops
        self.mean = 255 * self.erase_fill
        self.std = 255 * torch.tensor(i.PIXEL_STD, device=device).view(1, 3, 1, 1)
        # distinct seeds: on the CPU equal seeds would give the erasing draws the crop draws' numbers
        self.generator = torch.Generator(device=device).manual_seed(seed + 1)
        self.cpu_generator = torch.Generator().manual_seed(seed + 2)

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.mean.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.train:
            images = self.flip_pad_crop(images)  # on uint8: a quarter of the bytes to move
        x = images.float().sub_(self.mean).div_(self.std)
        if self.train and self.erase_prob > 0:
            x = random_erasing(x, self.erase_prob, self.erase_fill, self._rand)
        return x

    def flip_pad_crop(self, images: torch.Tensor) -> torch.Tensor:
        """Zero-pad every side by ``INPUT.PADDING``, crop an ``H x W`` window at a uniform offset and
        mirror it with ``INPUT.PROB`` (a crop of the mirrored image, at the mirrored offset, is the
        same draw). A slice per image: cheaper than a batched gather on the CPU, two launches each on a GPU."""
        b, _, h, w = images.shape
        p = self.padding
        padded = F.pad(images, (p, p, p, p)) if p else images
        # drawn on the CPU: reading them back from a GPU would wait for the previous step to finish
        draws = torch.rand((3, b), generator=self.cpu_generator)
        tops = (draws[0] * (2 * p + 1)).long().tolist()
        lefts = (draws[1] * (2 * p + 1)).long().tolist()
        flips = (draws[2] < self.flip_prob).tolist()
        out = torch.empty_like(images)
        for i, (top, left, flip) in enumerate(zip(tops, lefts, flips)):
            window = padded[i, :, top:top + h, left:left + w]
            out[i] = window.flip(-1) if flip else window
        return out


class CachedLoader:
    """Batches ``(images, pids, camids)`` from a decoded split, in the order of ``sampler`` (the PK
    sampler), a seeded shuffle, or the split's order; images come out on the cache's device."""

    def __init__(self, images: torch.Tensor, samples, batch_size: int, transform: BatchTransform,
                 sampler=None, shuffle: bool = False, drop_last: bool = False, seed: int = 0):
        self.images, self.batch_size, self.transform = images, batch_size, transform
        self.pids = torch.tensor([pid for _, pid, _ in samples])
        self.camids = torch.tensor([camid for _, _, camid in samples])
        self.sampler, self.shuffle, self.drop_last = sampler, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def _order(self) -> torch.Tensor:
        if self.sampler is not None:
            return torch.tensor(list(self.sampler), dtype=torch.long)
        if self.shuffle:
            return torch.randperm(len(self.pids), generator=self.generator)
        return torch.arange(len(self.pids))

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.pids)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        order = self._order()
        end = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, end, self.batch_size):
            index = order[start:start + self.batch_size]
            images = self.images[index.to(self.images.device)]
            yield self.transform(images), self.pids[index], self.camids[index]


__all__ = ["BatchTransform", "CachedLoader", "cache_bytes", "decode_images", "split_images"]
