
import pytest

from reidlib.data.datasets.market1501 import Market1501
from reidlib.data.synthetic import SyntheticSpec, ensure_synthetic
from reidlib.errors import DatasetError

SMALL = SyntheticSpec(num_train_ids=6, num_test_ids=4, num_cameras=3, images_per_camera=2, num_distractors=5, num_junk=3)


def test_generator_is_deterministic_and_market_formatted(tmp_path):
    a, b = ensure_synthetic(tmp_path / "a", SMALL), ensure_synthetic(tmp_path / "b", SMALL)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a[:10])
    names = [f.name for f in files_a]
    assert any(n.startswith("-1_c") for n in names) and any(n.startswith("0000_c") for n in names)


def test_market_loader_reads_it_as_the_real_set(tmp_path):
    root = ensure_synthetic(tmp_path / "synthetic", SMALL)
    data = Market1501.load(root)
    assert data.num_train_pids == 6
    assert sorted({pid for _, pid, _ in data.train}) == list(range(6))  # relabelled
    assert all(pid != -1 for _, pid, _ in data.gallery)  # junk dropped
    assert any(pid == 0 for _, pid, _ in data.gallery)  # distractors kept
    assert {cam for _, _, cam in data.query + data.gallery} <= {0, 1, 2}  # 0-based cameras
    assert len(data.train) == 6 * 3 * 2


def test_dataset_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="bounding_box_train: directory not found"):
        Market1501.load(tmp_path / "missing")
    root = ensure_synthetic(tmp_path / "s", SMALL)
    (root / "query" / "garbage.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="garbage.jpg: file name does not follow"):
        Market1501.load(root)


def test_existing_dataset_with_another_spec_is_refused(tmp_path):
    ensure_synthetic(tmp_path / "s", SMALL)
    with pytest.raises(DatasetError, match="delete it or choose another"):
        ensure_synthetic(tmp_path / "s", SyntheticSpec(seed=1))
