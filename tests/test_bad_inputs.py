"""The bad-input corpus (tests/bad_inputs/): every malformed input gives one line naming the field or
file and what was expected; the CLI exits 2 and leaves no runs/<id>; the API raises a typed error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidlib.errors import ConfigError, DatasetError, ReidSweepError
from reidlib.trial import build_config

CORPUS = Path(__file__).parent / "bad_inputs"
SPECS = sorted((CORPUS / "specs").glob("*.yaml"))
PARAMS = sorted((CORPUS / "params").glob("*.json"))


def test_the_corpus_is_large():
    assert len(SPECS) + len(PARAMS) >= 30


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_bad_spec_is_one_line_exit_2_and_leaves_nothing(spec, tmp_path, run_cli):
    expect = spec.read_text().splitlines()[0].removeprefix("# expect: ")
    runs = tmp_path / "runs"
    for command in (["validate", str(spec)], ["run", str(spec), "--runs-dir", str(runs), "--wandb", "disabled"]):
        code, _, stderr = run_cli(*command)
        lines = stderr.strip().splitlines()
        assert code == 2, stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], stderr
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize("case", PARAMS, ids=lambda p: p.stem)
def test_bad_trial_parameters_raise_a_typed_one_line_error(case, tiny_config):
    data = json.loads(case.read_text())
    params = dict(data["parameters"])
    overrides = params.pop("overrides", {})
    with pytest.raises(ConfigError) as err:
        build_config(str(tiny_config), overrides, **params)
    assert data["expect"] in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def dataset(tmp_path):
    from reidlib.data.synthetic import SyntheticSpec, ensure_synthetic

    return ensure_synthetic(tmp_path / "market1501", SyntheticSpec(num_train_ids=4, num_test_ids=3, num_cameras=2,
                                                                   num_distractors=2, num_junk=1))


def _load(root):
    from reidlib.data.datasets.market1501 import Market1501

    return Market1501.load(root)


@pytest.mark.parametrize("damage, expect", [
    (lambda root: __import__("shutil").rmtree(root / "bounding_box_train"), "bounding_box_train: directory not found"),
    (lambda root: [p.unlink() for p in (root / "query").glob("*.jpg")], "query: no images with a person id"),
    (lambda root: (root / "query" / "IMG_0001.jpg").write_bytes(b""), "IMG_0001.jpg: file name does not follow"),
])
def test_bad_dataset_directories(dataset, damage, expect):
    damage(dataset)
    with pytest.raises(DatasetError) as err:
        _load(dataset)
    assert expect in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a jpeg at all"], ids=["zero-byte", "corrupt"])
def test_unreadable_images_name_the_file(dataset, content):
    from reidlib.config import load_config
    from reidlib.data.build import ImageFolderSamples
    from reidlib.data.transforms import make_transforms

    victim = sorted((dataset / "bounding_box_train").glob("*.jpg"))[0]
    victim.write_bytes(content)
    data = _load(dataset)
    index = [p for p, _, _ in data.train].index(str(victim))
    samples = ImageFolderSamples(data.train, make_transforms(load_config(), is_train=False))
    with pytest.raises(DatasetError) as err:
        samples[index]
    assert str(victim) in str(err.value) and "unreadable image" in str(err.value)
    assert isinstance(err.value, ReidSweepError)
