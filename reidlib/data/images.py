"""Reading a split's images: ``(image, pid, camid)`` per ``(path, pid, camid)`` row."""
from __future__ import annotations

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from reidlib.errors import DatasetError


class ImageFolderSamples(Dataset):
    """``(transform(image), pid, camid)`` from ``(path, pid, camid)`` rows; an unreadable image is a
    ``DatasetError`` naming the file."""

    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        path, pid, camid = self.samples[index]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise DatasetError(path, f"unreadable image ({err.__class__.__name__})") from None
        return self.transform(image), pid, camid
