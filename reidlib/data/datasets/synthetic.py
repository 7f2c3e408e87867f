"""The generated dataset (``reidlib.data.synthetic``), read by the Market-1501 loader; it is written
under ``DATASETS.ROOT_DIR/synthetic`` on first use."""
from __future__ import annotations

from pathlib import Path

from reidlib.data.datasets.market1501 import Market1501
from reidlib.data.synthetic import SyntheticSpec, ensure_synthetic


class SyntheticReID(Market1501):
    dataset_dir = "synthetic"

    @classmethod
    def check(cls, cfg) -> None:
        """Nothing to check: the dataset is generated on first use."""

    @classmethod
    def from_config(cls, cfg) -> SyntheticReID:
        s = cfg.DATASETS.SYNTHETIC
        spec = SyntheticSpec(num_train_ids=s.NUM_TRAIN_IDS, num_test_ids=s.NUM_TEST_IDS, num_cameras=s.NUM_CAMERAS,
                             images_per_camera=s.IMAGES_PER_CAMERA, image_size=tuple(s.IMAGE_SIZE), seed=s.SEED)
        ensure_synthetic(Path(cfg.DATASETS.ROOT_DIR) / cls.dataset_dir, spec)
        return super().from_config(cfg)
