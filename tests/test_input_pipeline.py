"""The cached, batched input path gives what the per-sample PIL transforms give."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from reidlib.data import make_dataset
from reidlib.data.build import make_data_loaders
from reidlib.data.cached import BatchTransform, CachedLoader, decode_images
from reidlib.data.images import ImageFolderSamples
from reidlib.data.transforms import make_transforms
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


def test_random_erasing_blanks_one_rectangle_of_two_to_forty_percent(tiny_config):
    cfg = _config(tiny_config, PROB=0.0, RE_PROB=1.0, PADDING=0)
    x = torch.rand(500, 3, 64, 32) + 1  # never 0 before erasing
    out = BatchTransform(cfg, train=True, device=torch.device("cpu")).erase(x.clone())
    erased = out == 0
    assert torch.equal(erased[:, 0], erased[:, 1]) and torch.equal(erased[:, 0], erased[:, 2])  # all channels
    fractions = []
    for mask in erased[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if len(rows) == 0:
            continue
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert mask.sum() == h * w and len(rows) == h and len(cols) == w  # one solid rectangle
        fractions.append(float(mask.sum()) / mask.numel())
    assert len(fractions) > 450  # RE_PROB 1: nearly every image (a draw that never fits in 10 tries is left)
    assert 0.015 <= min(fractions) and max(fractions) <= 0.42
    half = _config(tiny_config, PROB=0.0, RE_PROB=0.5, PADDING=0)
    share = (BatchTransform(half, train=True, device=torch.device("cpu")).erase(x.clone()) == 0).flatten(1).any(1).float().mean()
    assert 0.4 < share < 0.6


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
