"""The cached, batched input path gives what the per-sample PIL transforms give."""
from __future__ import annotations

import math
import random

import pytest
import torch
from torch.utils.data import DataLoader

from reidlib.data import make_dataset
from reidlib.data.build import make_data_loaders
from reidlib.data.cached import BatchTransform, CachedLoader, decode_images
from reidlib.data.images import ImageFolderSamples
from reidlib.data.transforms import make_transforms, random_erasing
from reidlib.trial import build_config


@pytest.fixture(scope="module")
def data(tiny_config):
    cfg = build_config(str(tiny_config))
    return cfg, make_dataset(cfg)


def _config(tiny_config, **input_keys):
    return build_config(str(tiny_config), overrides={f"INPUT.{k}": v for k, v in input_keys.items()})


def test_test_batches_equal_the_pil_transforms(data):
    cfg, dataset = data
    pil = torch.stack([img for img, _, _ in ImageFolderSamples(dataset.query, make_transforms(cfg, is_train=False))])
    images = decode_images(dataset.query, cfg.INPUT.SIZE_TEST, num_threads=2)
    cached = CachedLoader(images, dataset.query, 5, BatchTransform(cfg, train=False, device=torch.device("cpu")))
    batches = list(cached)
    assert len(batches) == len(cached) == -(-len(dataset.query) // 5)
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), pil, atol=1e-6, rtol=0)
    assert torch.cat([b[1] for b in batches]).tolist() == [pid for _, pid, _ in dataset.query]


def test_training_augmentations_off_is_the_plain_image_and_flip_mirrors_it(tiny_config, data):
    _, dataset = data
    plain_cfg = _config(tiny_config, PROB=0.0, RE_PROB=0.0, PADDING=0)
    images = decode_images(dataset.train[:6], plain_cfg.INPUT.SIZE_TRAIN)
    expected = BatchTransform(plain_cfg, train=False, device=torch.device("cpu"))(images)
    torch.testing.assert_close(BatchTransform(plain_cfg, train=True, device=torch.device("cpu"))(images), expected)
    flip_cfg = _config(tiny_config, PROB=1.0, RE_PROB=0.0, PADDING=0)
    torch.testing.assert_close(BatchTransform(flip_cfg, train=True, device=torch.device("cpu"))(images), expected.flip(3))


def test_pad_crop_takes_a_window_of_the_padded_image_at_every_offset(tiny_config):
    cfg = _config(tiny_config, PROB=0.0, RE_PROB=0.0, PADDING=2)
    x = torch.randint(0, 256, (400, 3, 8, 6), dtype=torch.uint8)
    out = BatchTransform(cfg, train=True, device=torch.device("cpu")).flip_pad_crop(x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        found = [(t, l) for t in range(5) for l in range(5) if torch.equal(out[i], padded[i, :, t:t + 8, l:l + 6])]
        assert found, f"crop {i} is not a window of its padded image"
        offsets.add(found[0])
    assert len(offsets) == 25  # every offset of the 5 x 5 range is drawn


def _upstream_box(h: int, w: int, rng: random.Random):
    """reid-strong-baseline's RandomErasing (probability 1): the rectangle it erases, or None."""
    for _ in range(100):
        target_area = rng.uniform(0.02, 0.4) * h * w
        aspect_ratio = rng.uniform(0.3, 1 / 0.3)
        eh, ew = int(round(math.sqrt(target_area * aspect_ratio))), int(round(math.sqrt(target_area / aspect_ratio)))
        if ew < w and eh < h:
            return eh, ew
    return None


def _boxes(out: torch.Tensor, fill) -> list[tuple[int, int]]:
    """Each image's erased rectangle (height, width), checked to be one solid box in every channel."""
    erased = out == torch.tensor(fill).view(1, 3, 1, 1)
    assert torch.equal(erased[:, 0], erased[:, 1]) and torch.equal(erased[:, 0], erased[:, 2])  # all channels
    boxes = []
    for mask in erased[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if len(rows):
            h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
            assert mask.sum() == h * w and len(rows) == h and len(cols) == w  # one solid rectangle
            boxes.append((h, w))
    return boxes


def test_random_erasing_draws_reid_strong_baselines_rectangles_filled_with_the_pixel_mean(tiny_config):
    """Size and shape as upstream's loop draws them: area 2-40 %, aspect ratio uniform in [0.3, 1/0.3]
    (so mostly tall boxes, unlike torchvision's log-uniform), filled with INPUT.PIXEL_MEAN."""
    cfg = _config(tiny_config, PROB=0.0, RE_PROB=1.0, PADDING=0)
    n, h, w = 4000, 64, 32
    generator = torch.Generator().manual_seed(0)
    out = random_erasing(torch.rand(n, 3, h, w, generator=generator) + 1, 1.0, cfg.INPUT.PIXEL_MEAN,
                         lambda *shape: torch.rand(shape, generator=generator))
    ours = _boxes(out, cfg.INPUT.PIXEL_MEAN)
    rng = random.Random(0)
    upstream = [box for box in (_upstream_box(h, w, rng) for _ in range(n)) if box]
    assert len(ours) / n == pytest.approx(len(upstream) / n, abs=0.01)
    for name, stat in (("area share", lambda b: b[0] * b[1] / (h * w)), ("tall", lambda b: float(b[0] > b[1])),
                       ("height share", lambda b: b[0] / h)):
        a, b = torch.tensor([stat(x) for x in ours]), torch.tensor([stat(x) for x in upstream])
        spread = 4 * math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < spread, f"{name}: ours {a.mean():.4f}, upstream {b.mean():.4f}"


@pytest.mark.parametrize("path", ["cached", "per-sample"])
def test_both_input_paths_erase_with_their_probability(tiny_config, path):
    cfg = _config(tiny_config, PROB=0.0, RE_PROB=0.5, PADDING=0)
    torch.manual_seed(0)  # every draw below is seeded: the share is one number, not a new draw each run
    if path == "cached":
        images = torch.randint(0, 256, (600, 3, 32, 16), dtype=torch.uint8)
        out = BatchTransform(cfg, train=True, device=torch.device("cpu"), seed=0)(images)
    else:
        eraser = make_transforms(cfg, is_train=True).transforms[-1]
        out = torch.stack([eraser(torch.rand(3, 32, 16) + 1) for _ in range(600)])
    share = len(_boxes(out, cfg.INPUT.PIXEL_MEAN)) / len(out)
    assert 0.43 < share < 0.57  # 0.5 +- 3.4 standard deviations of 600 draws: a seed far off would be a bug


def test_loaders_take_the_cache_when_it_fits_and_pil_otherwise(tiny_config):
    cached = make_data_loaders(_config(tiny_config))
    assert cached.cached == ["train", "query", "gallery"] and isinstance(cached.train, CachedLoader)
    pil = make_data_loaders(_config(tiny_config, CACHE_BUDGET_MB=0))
    assert pil.cached == [] and isinstance(pil.train, DataLoader)
    for loaders in (cached, pil):
        batches = list(loaders.train)
        assert len(batches) == len(loaders.train) > 0
        cfg = _config(tiny_config)
        k = cfg.DATALOADER.NUM_INSTANCE
        for images, pids, _ in batches:  # PK batches: P identities x K images each
            assert images.shape == (cfg.SOLVER.IMS_PER_BATCH, 3, *cfg.INPUT.SIZE_TRAIN)
            assert sorted(torch.bincount(pids)[torch.bincount(pids) > 0].tolist()) == [k] * (len(pids) // k)


def test_an_unreadable_image_is_named_when_the_cache_is_built(tmp_path, data):
    from reidlib.errors import DatasetError

    broken = tmp_path / "0001_c1s1_000001_00.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError) as err:
        decode_images([(str(broken), 0, 0)], [32, 16], num_threads=2)
    assert err.value.field == str(broken)
