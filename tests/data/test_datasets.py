"""The dataset loaders on tiny fake trees (empty files: loaders only read names and list files):
what each parses, how it relabels, and that every mistake is one line naming the file or folder."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from reidlib.config import load_config
from reidlib.data.datasets import DATASET_REGISTRY, check_dataset, make_dataset
from reidlib.errors import DatasetError


def _files(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return folder


def _cfg(root: Path, name: str, **datasets):
    return load_config(overrides={"DATASETS.NAMES": name, "DATASETS.ROOT_DIR": str(root),
                                  **{f"DATASETS.{k}": v for k, v in datasets.items()}})


def _rows(rows):
    """``(file name, pid, camid)``, sorted: what a user checks a split by."""
    return sorted((Path(path).name, pid, cam) for path, pid, cam in rows)


def _duke(root: Path) -> Path:
    base = root / "dukemtmc-reid" / "DukeMTMC-reID"
    _files(base / "bounding_box_train", "0005_c1_f0000001.jpg", "0005_c8_f0000002.jpg", "0009_c3_f0000003.jpg")
    _files(base / "query", "0011_c2_f0000004.jpg")
    _files(base / "bounding_box_test", "0011_c5_f0000005.jpg", "0000_c6_f0000006.jpg")
    return base


def _msmt(root: Path, release="MSMT17_V1", folders=("train", "test"), **lists: str) -> Path:
    base = root / "msmt17" / release
    _files(base / folders[0])
    _files(base / folders[1])
    content = {"train": "0000/0000_000_01_0303morning_0008_0.jpg 0\n0001/0001_005_15_0303noon_0100_1.jpg 1\n",
               "val": "0001/0001_009_07_0303noon_0200_0.jpg 1\n0002/0002_001_03_0303noon_0300_0.jpg 2\n",
               "query": "0000/0000_000_04_0113morning_0001_0.jpg 0\n",
               "gallery": "0000/0000_002_12_0113noon_0005_0.jpg 0\n\n0003/0003_001_09_0113noon_0009_0.jpg 3\n"}
    for split, text in {**content, **lists}.items():
        (base / f"list_{split}.txt").write_text(text)
    return base


def test_dukemtmc_reads_the_reid_strong_baseline_layout(tmp_path):
    base = _duke(tmp_path)
    data = make_dataset(_cfg(tmp_path, "dukemtmc"))
    assert _rows(data.train) == [("0005_c1_f0000001.jpg", 0, 0), ("0005_c8_f0000002.jpg", 0, 7),
                                 ("0009_c3_f0000003.jpg", 1, 2)]  # relabelled 0..N-1, cameras 0-based
    assert _rows(data.query) == [("0011_c2_f0000004.jpg", 11, 1)]  # test ids kept as they are
    assert _rows(data.gallery) == [("0000_c6_f0000006.jpg", 0, 5), ("0011_c5_f0000005.jpg", 11, 4)]
    assert data.train[0][0].startswith(str(base / "bounding_box_train"))


def test_dukemtmc_refuses_a_camera_outside_1_to_8(tmp_path):
    base = _duke(tmp_path)
    _files(base / "query", "0011_c9_f0000007.jpg")
    with pytest.raises(DatasetError, match=r"0011_c9_f0000007\.jpg: file name does not follow DukeMTMCreID's pattern"):
        make_dataset(_cfg(tmp_path, "dukemtmc"))


def test_aihub_kaist_reads_two_digit_cameras_from_the_configured_folders(tmp_path):
    base = tmp_path / "aihub_kaist"
    _files(base / "bounding_box_train_2", "0000_c07s32_005875.jpg", "0074_c14s32_001450.jpg", "-1_c01s1_000001.jpg")
    _files(base / "query", "1099_c09s43_006800.jpg")
    _files(base / "bounding_box_test", "1099_c16s43_006900.jpg", "-1_c02s1_000002.jpg")
    data = make_dataset(_cfg(tmp_path, "aihub_kaist", TRAIN_FOLDER="bounding_box_train_2"))
    # pid 0 is a person in this dataset (kept, relabelled like any other)
    assert _rows(data.train) == [("0000_c07s32_005875.jpg", 0, 6), ("0074_c14s32_001450.jpg", 1, 13)]
    assert _rows(data.query) == [("1099_c09s43_006800.jpg", 1099, 8)]
    assert _rows(data.gallery) == [("1099_c16s43_006900.jpg", 1099, 15)]  # junk (-1) dropped


@pytest.mark.parametrize("name", ["0001_c1s1_000123.jpg", "0001_c12s1_000123_01.jpg", "0001_c12_000123.jpg",
                                  "x0001_c12s1_000123.jpg"])
def test_aihub_kaist_refuses_any_name_off_its_pattern(tmp_path, name):
    base = tmp_path / "aihub_kaist"
    _files(base / "bounding_box_train", "0001_c12s1_000123.jpg")
    _files(base / "query", "0001_c03s1_000124.jpg", name)
    _files(base / "bounding_box_test", "0001_c04s1_000125.jpg")
    with pytest.raises(DatasetError) as err:
        make_dataset(_cfg(tmp_path, "aihub_kaist"))
    assert str(err.value) == (f"{base / 'query' / name}: file name does not follow AIHubKAIST's pattern "
                              "{pid}_c{camera, 2 digits}s{seq}_{frame}.jpg, e.g. 0001_c12s1_000123.jpg")


def test_msmt17_trains_on_list_train_alone_as_upstream(tmp_path):
    base = _msmt(tmp_path)
    data = make_dataset(_cfg(tmp_path, "msmt17"))
    assert _rows(data.train) == [("0000_000_01_0303morning_0008_0.jpg", 0, 0),  # list_train
                                 ("0001_005_15_0303noon_0100_1.jpg", 1, 14)]  # list_val is not read
    assert data.num_train_pids == 2
    assert _rows(data.query) == [("0000_000_04_0113morning_0001_0.jpg", 0, 3)]
    assert [pid for _, pid, _ in data.gallery] == [0, 3]  # the blank line is skipped
    assert data.train[0][0] == str(base / "train" / "0000" / "0000_000_01_0303morning_0008_0.jpg")
    assert data.query[0][0].startswith(str(base / "test" / "0000"))


def test_msmt17_reads_the_v2_release_reid_strong_baseline_uses(tmp_path):
    base = _msmt(tmp_path, "MSMT17_V2", ("mask_train_v2", "mask_test_v2"))
    data = make_dataset(_cfg(tmp_path, "msmt17"))
    assert data.train[0][0].startswith(str(base / "mask_train_v2"))
    assert data.gallery[0][0].startswith(str(base / "mask_test_v2"))


@pytest.mark.parametrize("line", ["0000/0000_000_01_0303morning_0008_0.jpg",  # no pid
                                  "0000/0000_000_01_0303morning_0008_0.jpg x",  # pid not a number
                                  "0000/0000_0303morning.jpg 0",  # no camera field
                                  "0000/0000_000_01_a.jpg 0 extra"])
def test_msmt17_malformed_line_names_the_list_file_and_line(tmp_path, line):
    base = _msmt(tmp_path, gallery=f"0000/0000_002_12_0113noon_0005_0.jpg 0\n{line}\n")
    with pytest.raises(DatasetError) as err:
        make_dataset(_cfg(tmp_path, "msmt17"))
    message = str(err.value)
    assert message.startswith(f"{base / 'list_gallery.txt'}: line 2: expected '<folder>/<name> <pid>'")
    assert "\n" not in message


@pytest.mark.parametrize("name, missing", [("market1501", "market1501/bounding_box_train"),
                                           ("dukemtmc", "dukemtmc-reid/DukeMTMC-reID/bounding_box_train"),
                                           ("aihub_kaist", "aihub_kaist/bounding_box_train"),
                                           ("msmt17", "msmt17/MSMT17_V1")])
def test_a_missing_dataset_names_the_path_and_the_dataset(tmp_path, name, missing):
    with pytest.raises(DatasetError) as err:
        check_dataset(_cfg(tmp_path, name))
    message, cls = str(err.value), DATASET_REGISTRY[name].__name__
    assert message.startswith(f"{tmp_path / missing}: directory") and f"({cls} expects it under" in message


def test_a_missing_msmt17_list_file_is_named(tmp_path):
    base = _msmt(tmp_path)
    (base / "list_query.txt").unlink()
    with pytest.raises(DatasetError, match=r"list_query\.txt: list file not found \(MSMT17 expects it under"):
        check_dataset(_cfg(tmp_path, "msmt17"))


def test_an_empty_split_names_its_folder_or_list_file(tmp_path):
    base = _duke(tmp_path)
    for path in (base / "query").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match=r"DukeMTMC-reID/query: no images with a person id \(expected names "):
        make_dataset(_cfg(tmp_path, "dukemtmc"))
    _msmt(tmp_path, query="\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt: no images with a person id \(expected lines like "):
        make_dataset(_cfg(tmp_path, "msmt17"))


def test_the_aihub_kaist_config_loads_and_points_at_its_folders(tmp_path):
    cfg = load_config(REPO / "configs" / "aihub_kaist.yml", {"DATASETS.ROOT_DIR": str(tmp_path)})
    assert (cfg.DATASETS.NAMES, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == ("aihub_kaist", 64, 1e-4)
    for folder in ("bounding_box_train_1", "query", "bounding_box_test"):
        _files(tmp_path / "aihub_kaist" / folder, "0001_c01s1_000001.jpg")
    assert make_dataset(cfg).describe()["train"] == {"ids": 1, "images": 1, "cameras": 1}
