"""Honest model selection: a validation split carved from the training identities (``val/*``), the
test set evaluated once (``test/*``), sweeps that hold out by default, and ``finalize``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from reidlib.config import load_config
from reidlib.data import make_dataset
from reidlib.data.datasets.base import ImageDataset
from reidlib.errors import ConfigError, SpecError
from reidlib.sweep.ledger import FINISHED, STOPPED, Ledger
from reidlib.trial import TEST_KEYS, VAL_KEYS


def _views(samples):
    return {(pid, cam) for _, pid, cam in samples}


def _dataset(tiny_config, **overrides):
    return make_dataset(load_config(tiny_config, overrides))


# --- the split ----------------------------------------------------------------------------------

def test_split_is_disjoint_from_training_and_from_query_gallery(tiny_config):
    whole = _dataset(tiny_config)
    split = _dataset(tiny_config, **{"DATASETS.VAL_IDS": 3})
    val = split.val_query + split.val_gallery
    train_paths = {path for path, _, _ in split.train}
    assert len({pid for _, pid, _ in val}) == 3
    assert not train_paths & {path for path, _, _ in val}
    assert not {path for path, _, _ in split.query + split.gallery} & {path for path, _, _ in val}
    assert sorted(train_paths | {path for path, _, _ in val}) == sorted(path for path, _, _ in whole.train)
    # training labels stay 0..N-1 for the classifier
    assert sorted({pid for _, pid, _ in split.train}) == list(range(split.num_train_pids)) and split.num_train_pids == 5


def test_one_query_per_identity_and_camera_the_rest_gallery(tiny_config):
    split = _dataset(tiny_config, **{"DATASETS.VAL_IDS": 3})
    views = _views(split.val_query)
    assert len(split.val_query) == len(views)  # one query per (identity, camera)
    assert views == _views(split.val_gallery)  # every query has its camera's other image in the gallery...
    cams = {}
    for _, pid, cam in split.val_gallery:
        cams.setdefault(pid, set()).add(cam)
    assert all(len(c) >= 2 for c in cams.values())  # ...and matches from another camera (the protocol's)


def test_split_does_not_depend_on_the_trial_seed_but_on_val_seed(tiny_config):
    def held(**keys):
        d = _dataset(tiny_config, **{"DATASETS.VAL_IDS": 2, **keys})
        return sorted(d.val_query), sorted(d.val_gallery)

    assert held(SEED=0) == held(SEED=7) == held(SEED=123)
    by_seed = [held(**{"DATASETS.VAL_SEED": seed}) for seed in range(6)]
    assert by_seed[1] == held(**{"DATASETS.VAL_SEED": 1})  # a seed is one split, every time
    assert len({json.dumps(split) for split in by_seed}) >= 3  # 15 possible pairs of 6 identities


def test_identities_seen_by_one_camera_are_never_drawn():
    train = [(f"{pid}_{cam}_{i}.jpg", pid, cam) for pid in range(6) for cam in ((0,) if pid < 3 else (0, 1))
             for i in range(2)]
    data = ImageDataset(train=train, query=[], gallery=[], name="custom")
    assert data.holdout_candidates() == [3, 4, 5]
    for seed in range(20):
        assert {pid for _, pid, _ in data.hold_out(2, seed).val_query} <= {3, 4, 5}
    with pytest.raises(ConfigError, match=r"^DATASETS.VAL_IDS: expected at most 3 for custom"):
        data.hold_out(4, 0)


@pytest.mark.parametrize("value, message", [(-1, "expected a number of identities >= 0"), (7, "expected at most 6")])
def test_a_bad_val_ids_is_one_line_naming_the_key_before_any_image_is_read(tiny_config, monkeypatch, value, message):
    import PIL.Image

    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("an image was read"))
    with pytest.raises(ConfigError, match=rf"^DATASETS.VAL_IDS: {message}"):
        _dataset(tiny_config, **{"DATASETS.VAL_IDS": value})


# --- val/* every evaluation, test/* once ----------------------------------------------------------

def test_val_is_the_held_out_split_every_epoch_and_test_is_evaluated_once(tiny_config, monkeypatch):
    from reidlib.data.build import TEST, VAL, make_data_loaders
    from reidlib.engine import do_train, evaluate, seed_everything
    from reidlib.modeling import make_model

    cfg = load_config(tiny_config, {"DATASETS.VAL_IDS": 2, "SOLVER.MAX_EPOCHS": 2, "OUTPUT_DIR": ""})
    seed_everything(cfg.SEED)
    loaders = make_data_loaders(cfg)
    model = make_model(cfg, loaders.num_classes)
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[4] if len(args) > 4 else kwargs.get("split", VAL))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr("reidlib.engine.trainer.evaluate", counting)
    result = do_train(cfg, model, loaders)
    assert calls == [VAL, VAL, TEST]  # each epoch on the validation split, the test set once at the end
    assert all(set(VAL_KEYS) <= set(row) and not set(TEST_KEYS) & set(row) for row in result.history)
    assert set(result.test) == set(TEST_KEYS) and result.val_ids == 2
    device = torch.device("cpu")
    assert result.history[-1]["val/mAP"] == pytest.approx(evaluate(cfg, model, loaders, device, VAL)[0]["val/mAP"])
    assert result.test["test/mAP"] == pytest.approx(evaluate(cfg, model, loaders, device, TEST)[0]["test/mAP"])
    assert result.history[-1]["val/mAP"] != pytest.approx(result.test["test/mAP"])  # two different sets of people


def test_without_a_split_val_is_query_gallery_and_test_reuses_the_last_evaluation(tiny_config):
    from reidlib.data.build import make_data_loaders
    from reidlib.engine import do_train, seed_everything
    from reidlib.modeling import make_model

    cfg = load_config(tiny_config, {"SOLVER.MAX_EPOCHS": 1, "OUTPUT_DIR": ""})
    seed_everything(cfg.SEED)
    loaders = make_data_loaders(cfg)
    result = do_train(cfg, make_model(cfg, loaders.num_classes), loaders)
    assert result.val_ids == 0 and not loaders.has_val_split
    assert result.test == {k.replace("val/", "test/"): v for k, v in result.history[-1].items() if k.startswith("val/")}


# --- specs --------------------------------------------------------------------------------------

def test_a_test_metric_in_a_spec_is_refused(write_spec):
    from reidlib.sweep.spec import load_spec

    path = write_spec({"method": "grid", "metric": {"name": "test/mAP"}, "parameters": {"base_lr": [0.001]}})
    with pytest.raises(SpecError, match=r"metric.name: expected a val/\* metric, got 'test/mAP'"):
        load_spec(path)


def test_the_cli_refuses_a_test_metric_in_one_line_and_writes_nothing(write_spec, tmp_path):
    path = write_spec({"method": "grid", "parameters": {"base_lr": [0.001]}})
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "reidlib.cli", "run", str(path), "--metric", "test/mAP",
                           "--runs-dir", str(runs)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "metric.name" in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_a_sweep_holds_out_a_default_share_unless_the_spec_says(write_spec, tiny_config, tmp_path):
    from reidlib.sweep.holdout import VAL_IDS, resolve_holdout
    from reidlib.sweep.spec import load_spec

    grid = {"method": "grid", "parameters": {"base_lr": [0.001]}}
    assert resolve_holdout(load_spec(write_spec(grid))).defaults == {VAL_IDS: 2}  # 8 ids: 6 may be drawn, 2 kept
    zero = resolve_holdout(load_spec(write_spec({**grid, "defaults": {VAL_IDS: 0}})))
    assert zero.defaults == {VAL_IDS: 0}
    constant = {"method": "grid", "parameters": {"base_lr": [0.001], VAL_IDS: {"value": 4}}}
    assert resolve_holdout(load_spec(write_spec(constant))).defaults == {}
    own = tmp_path / "own.yml"
    config = yaml.safe_load(tiny_config.read_text())
    config["DATASETS"]["VAL_IDS"] = 3
    own.write_text(yaml.safe_dump(config))
    assert resolve_holdout(load_spec(write_spec({**grid, "config_file": str(own)}))).defaults == {}


def test_a_searched_or_too_large_split_is_refused(write_spec):
    from reidlib.sweep.holdout import resolve_holdout
    from reidlib.sweep.spec import load_spec

    searched = {"method": "grid", "parameters": {"base_lr": [0.001], "DATASETS.VAL_SEED": [0, 1]}}
    with pytest.raises(SpecError, match=r"parameters.DATASETS.VAL_SEED: the validation split must be the same"):
        resolve_holdout(load_spec(write_spec(searched)))
    too_many = {"method": "grid", "parameters": {"base_lr": [0.001]}, "defaults": {"DATASETS.VAL_IDS": 7}}
    with pytest.raises(SpecError, match=r"^DATASETS.VAL_IDS: expected at most 6"):
        resolve_holdout(load_spec(write_spec(too_many)))


# --- what the analysis says -----------------------------------------------------------------------

def _ledger_sweep(directory: Path, rows: list[tuple[str, float, float]], val_ids: int = 2):
    """A sweep whose finished trials have the given ``(name, val/mAP, test/mAP)``."""
    from reidlib.analysis import open_sweep

    ledger = Ledger.create(directory, "s1", "selection", {"method": "grid", "parameters": {"base_lr": {"values": [1]}},
                                                          "metric": {"name": "val/mAP", "goal": "maximize"}})
    for seq, (name, val, test) in enumerate(rows):
        ledger.insert_trial(name, seq, "running", {"base_lr": seq})
        ledger.add_epoch(name, {"epoch": 1, "val/mAP": val})
        state = STOPPED if name.startswith("stopped") else FINISHED
        ledger.end_trial(name, state, {"status": "finished", "epochs_run": 1, "max_epochs": 1, "val_ids": val_ids,
                                       "best": {"val/mAP": val}, "test": {"test/mAP": test}})
    ledger.close()
    return open_sweep(directory)


def test_leaderboard_and_selection_check_show_val_beside_test_with_kendalls_tau(tmp_path):
    from reidlib.analysis import leaderboard, selection_check

    sweep = _ledger_sweep(tmp_path, [("a", 0.1, 0.10), ("b", 0.2, 0.30), ("c", 0.3, 0.20), ("d", 0.4, 0.40),
                                     ("stopped", 0.9, 0.9)])
    board = leaderboard(sweep)
    assert list(board.index[:4]) == ["d", "c", "b", "a"]  # ranked on val, never on test
    assert board.loc["b", "test/mAP"] == 0.3
    check = selection_check(sweep)["value"]
    assert check["selected run (best val/mAP)"] == "d" and check["its test/mAP"] == 0.4
    assert check["Kendall's tau, val/mAP vs test/mAP (4 finished runs)"] == pytest.approx(4 / 6, abs=1e-3)
    assert check["selection"] == "2 held-out training identities"


def test_a_sweep_without_a_split_says_it_was_selected_on_the_test_set(tmp_path):
    from reidlib.analysis import overview, selection_check
    from reidlib.analysis.export import export_best

    sweep = _ledger_sweep(tmp_path, [("a", 0.1, 0.1), ("b", 0.2, 0.2)], val_ids=0)
    assert "selected on the test set" in overview(sweep)
    assert selection_check(sweep)["value"]["selection"] == "test set (DATASETS.VAL_IDS 0)"
    sweep.runs[1].trial.config = {"SOLVER.BASE_LR": 1.0}
    export_best(sweep)
    assert json.loads((tmp_path / "best" / "summary.json").read_text())["selection"].startswith("selected on the test set")


# --- finalize -------------------------------------------------------------------------------------

def test_finalize_retrains_the_best_on_every_identity_and_tests_once(sweep, monkeypatch, tmp_path, capsys):
    import shutil

    from reidlib.analysis import final_run, open_sweep
    from reidlib.analysis.export import export_best
    from reidlib.cli import _report
    from reidlib.sweep.finalize import finalize, read_final
    from reidlib.sweep.layout import FINAL_DIR

    shared, _ = sweep
    directory = tmp_path / shared.sweep_id  # a copy: the other tests of the shared sweep see no final/
    shutil.copytree(shared.directory, directory, symlinks=True)
    monkeypatch.chdir(REPO)
    best = open_sweep(directory).best_run()
    assert best.summary["val_ids"] == 2 and "test/mAP" in best.summary  # the sweep held out by default
    hint = f"the final model: 'reid-sweep finalize {shared.sweep_id}' trains {best.name}'s configuration"
    _report(directory, outputs={})
    assert hint in capsys.readouterr().out
    final = finalize(directory, best.name, wandb="offline")
    out = directory / FINAL_DIR
    assert final == read_final(directory) and final["trial"] == best.name
    assert set(final["test"]) == set(TEST_KEYS) and Path(final["checkpoint"]).is_file()
    from reidlib.trial import read_trial_notebook

    params, epochs, summary = read_trial_notebook(out / "train.ipynb")
    assert params["overrides"]["DATASETS.VAL_IDS"] == 0 and summary["val_ids"] == 0  # held-out ids back in
    assert [e["epoch"] for e in epochs if "val/mAP" in e] == [summary["max_epochs"]]  # evaluated once, at the end
    assert summary["test"] == final["test"]
    assert list((directory / "wandb").glob(f"offline-run-*-{shared.sweep_id}-final"))
    mtime = (out / "summary.json").stat().st_mtime
    assert finalize(directory, best.name) == final and (out / "summary.json").stat().st_mtime == mtime
    export_best(open_sweep(directory))
    best_summary = json.loads((directory / "best" / "summary.json").read_text())
    assert best_summary["final"]["test"] == final["test"]
    assert (directory / "best" / "model.pth").resolve() == Path(final["checkpoint"]).resolve()
    assert final_run(open_sweep(directory))["value"]["test/mAP"] == final["test"]["test/mAP"]
    capsys.readouterr()
    _report(directory, outputs={})  # what reid-sweep run --finalize and report print: done, no hint to do it
    printed = capsys.readouterr().out
    assert "finalized model's test/mAP" in printed and "reid-sweep finalize" not in printed
