"""Evaluation sweeps: test-time options (re-ranking, test features) tuned on a trained model without
retraining, its features cached beside the checkpoint."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from reidlib.config import load_config
from reidlib.errors import SpecError
from reidlib.trial import TEST_KEYS, VAL_KEYS


@pytest.fixture(scope="module")
def trained(tiny_config, tmp_path_factory):
    """A tiny model trained one epoch with 2 held-out identities: ``(checkpoint, its TrainResult)``."""
    from reidlib.data.build import make_data_loaders
    from reidlib.engine import do_train, seed_everything
    from reidlib.modeling import make_model

    out = tmp_path_factory.mktemp("trained")
    cfg = load_config(tiny_config, {"DATASETS.VAL_IDS": 2, "SOLVER.MAX_EPOCHS": 1, "OUTPUT_DIR": str(out)})
    seed_everything(cfg.SEED)
    loaders = make_data_loaders(cfg)
    result = do_train(cfg, make_model(cfg, loaders.num_classes), loaders)
    return Path(result.checkpoint), result


def _evaluate(tiny_config, checkpoint, **keys):
    from reidlib.engine.evaluate_trial import evaluate_checkpoint

    return evaluate_checkpoint(load_config(tiny_config, {"DATASETS.VAL_IDS": 2, "SOLVER.MAX_EPOCHS": 1, "OUTPUT_DIR": "",
                                                         "TEST.WEIGHT": str(checkpoint), **keys}))


def test_features_are_cached_beside_the_checkpoint_and_rebuilt_when_it_changes(trained, tiny_config, tmp_path,
                                                                                 monkeypatch):
    import PIL.Image

    checkpoint = tmp_path / "checkpoint.pth"
    shutil.copy2(trained[0], checkpoint)
    first = _evaluate(tiny_config, checkpoint)
    # the trained run's own evaluation of these weights, reproduced
    assert first.history[0]["val/mAP"] == pytest.approx(trained[1].history[-1]["val/mAP"])
    assert first.test == pytest.approx(trained[1].test) and first.val_ids == 2
    cache = checkpoint.with_name("checkpoint.pth.features")
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 4  # validation query and gallery, test query and gallery

    with monkeypatch.context() as patched:  # other re-ranking values: no model, no image
        patched.setattr("reidlib.modeling.make_model", lambda *a, **k: pytest.fail("a model was built"))
        patched.setattr("reidlib.engine.evaluate_trial.make_evaluation_loader", lambda *a: pytest.fail("images read"))
        patched.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("an image was read"))
        reranked = _evaluate(tiny_config, checkpoint, **{"TEST.RE_RANKING": "yes", "TEST.RERANK_K1": 3,
                                                        "TEST.RERANK_K2": 1, "TEST.RERANK_LAMBDA": 0.5})
        assert set(VAL_KEYS) <= set(reranked.history[0]) and set(reranked.test) == set(TEST_KEYS)
        assert sorted(cache.glob("*.pt")) == entries

    state = torch.load(checkpoint, weights_only=True)
    state["model"] = {k: v * 0.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, checkpoint)  # trained again: other weights
    changed = _evaluate(tiny_config, checkpoint)
    assert changed.history[0]["val/mAP"] != pytest.approx(first.history[0]["val/mAP"]) or \
        changed.test != pytest.approx(first.test)
    assert len(list(cache.glob("*.pt"))) == 4 and not set(cache.glob("*.pt")) & set(entries)  # the old ones went


def test_each_saved_epoch_keeps_its_checkpoint_and_an_evaluation_picks_one(tiny_config, tmp_path):
    from reidlib.data.build import make_data_loaders
    from reidlib.engine import do_train, seed_everything
    from reidlib.errors import ConfigError
    from reidlib.modeling import make_model
    from reidlib.trial import kept_epochs

    cfg = load_config(tiny_config, {"DATASETS.VAL_IDS": 2, "SOLVER.MAX_EPOCHS": 2, "SOLVER.CHECKPOINT_PERIOD": 1,
                                    "SOLVER.EVAL_PERIOD": 1, "OUTPUT_DIR": str(tmp_path)})
    seed_everything(cfg.SEED)
    loaders = make_data_loaders(cfg)
    trained = do_train(cfg, make_model(cfg, loaders.num_classes), loaders)
    checkpoint = Path(trained.checkpoint)
    assert kept_epochs(checkpoint) == [1, 2]
    assert checkpoint.with_name("checkpoint_epoch2.pth").samefile(checkpoint)  # the last: the same file, no copy
    assert torch.load(checkpoint.with_name("checkpoint_epoch1.pth"), weights_only=True)["epoch"] == 1

    first = _evaluate(tiny_config, checkpoint, **{"TEST.CHECKPOINT_EPOCH": 1, "TEST.EVAL_TEST_SET": "no"})
    assert first.history[0]["val/mAP"] == pytest.approx(trained.history[0]["val/mAP"])  # epoch 1's weights
    assert first.checkpoint == str(checkpoint.with_name("checkpoint_epoch1.pth"))
    assert len(list(checkpoint.with_name("checkpoint_epoch1.pth.features").glob("*.pt"))) == 2  # its own cache
    with pytest.raises(ConfigError, match=re.escape("TEST.CHECKPOINT_EPOCH: expected 0 or an epoch kept beside") +
                       ".*" + re.escape("([1, 2]), got 3")):
        _evaluate(tiny_config, checkpoint, **{"TEST.CHECKPOINT_EPOCH": 3})


def test_an_evaluation_trial_without_the_test_set_reads_no_test_image(trained, tiny_config, tmp_path):
    checkpoint = tmp_path / "checkpoint.pth"
    shutil.copy2(trained[0], checkpoint)
    result = _evaluate(tiny_config, checkpoint, **{"TEST.EVAL_TEST_SET": "no"})
    assert result.history[0]["val/mAP"] == pytest.approx(trained[1].history[-1]["val/mAP"]) and result.test == {}
    assert len(list(checkpoint.with_name("checkpoint.pth.features").glob("*.pt"))) == 2  # validation query, gallery


def test_a_stop_file_ends_an_evaluation_trial_before_it_starts(trained, tiny_config, tmp_path):
    from reidlib.engine.evaluate_trial import evaluate_checkpoint
    from reidlib.trial import request_stop

    request_stop(tmp_path)
    result = evaluate_checkpoint(load_config(tiny_config, {"DATASETS.VAL_IDS": 2, "OUTPUT_DIR": str(tmp_path),
                                                           "TEST.WEIGHT": str(trained[0])}))
    assert result.status == "stopped_early" and not result.history and not result.test


# --- specs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, field", [
    ({"parameters": {"TEST.RERANK_K1": [10, 20], "base_lr": [0.001]}}, "parameters.base_lr"),
    ({"parameters": {"overrides": {"values": [{"TEST.RERANK_K1": 10, "SOLVER.MARGIN": 0.5}]}}},
     "parameters.overrides.values[0].SOLVER.MARGIN"),
    ({"parameters": {"TEST.RERANK_K1": [10]}, "defaults": {"max_epochs": 3}}, "defaults.max_epochs"),
])
def test_an_evaluation_spec_refuses_a_training_key_naming_it(tmp_path, spec, field):
    from reidlib.sweep.evaluation_spec import resolve_evaluation
    from reidlib.sweep.spec import normalise

    spec = normalise({"from": "nowhere", "method": "grid", **spec})
    assert spec.notebook == "notebooks/evaluate.ipynb"
    with pytest.raises(SpecError, match="^" + re.escape(field) + ": .* is not a test-time key"):
        resolve_evaluation(spec, tmp_path)


@pytest.mark.parametrize("spec, field, got", [
    ({"parameters": {"TEST.CHECKPOINT_EPOCH": {"min": 1, "max": 5}}}, "parameters.TEST.CHECKPOINT_EPOCH", "a range"),
    ({"parameters": {"overrides": {"values": [{"TEST.CHECKPOINT_EPOCH": 2}, {"TEST.CHECKPOINT_EPOCH": 3,
                                                                            "TEST.RE_RANKING": "yes"}]}}},
     "parameters.overrides.values[1].TEST.CHECKPOINT_EPOCH", "[3]"),
    ({"parameters": {"TEST.RERANK_K1": [10]}, "defaults": {"TEST.CHECKPOINT_EPOCH": 4}},
     "defaults.TEST.CHECKPOINT_EPOCH", "[4]"),
    ({"parameters": {"TEST.CHECKPOINT_EPOCH": [0, 2]}, "defaults": {"TEST.CHECKPOINT_EPOCH": 2}}, None, None),
])
def test_an_evaluation_spec_hands_out_only_kept_epochs(tmp_path, spec, field, got):
    from reidlib.sweep.evaluation_spec import TrainedRun, check_epochs
    from reidlib.sweep.spec import normalise
    from reidlib.trial import EPOCH_CHECKPOINT

    checkpoint = tmp_path / "checkpoint.pth"
    for epoch in (2, 12):
        (tmp_path / EPOCH_CHECKPOINT.format(epoch)).touch()
    trained = TrainedRun(tmp_path, "trial-001", tmp_path / "train.ipynb", {}, {"checkpoint": str(checkpoint)})
    spec = normalise({"from": "nowhere", "method": "random", **spec})
    if field is None:
        check_epochs(spec, trained)
        return
    with pytest.raises(SpecError, match="^" + re.escape(f"{field}: expected values among 0") +
                                        r" .*\(\[2, 12\]\), got " + re.escape(got) + "$"):
        check_epochs(spec, trained)


def test_the_cli_refuses_a_mixed_spec_in_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({"from": "any", "method": "grid",
                                    "parameters": {"TEST.RERANK_K1": [10], "weight_decay": [0.001]}}))
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "reidlib.cli", "run", str(path), "--runs-dir", str(runs)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "parameters.weight_decay: SOLVER.WEIGHT_DECAY is not a test-time key" in proc.stderr
    assert not runs.exists()
    # --from replaces the preset's from:
    proc = subprocess.run([sys.executable, "-m", "reidlib.cli", "validate", "sweeps/rerank.yaml", "--from", "nowhere"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: from: no sweep 'nowhere'")


# --- an evaluation sweep of a trained sweep -----------------------------------------------------

def test_an_evaluation_sweep_selects_on_the_held_out_identities_and_tests_once(write_spec, tmp_path, monkeypatch):
    from reidlib.analysis import evaluation_gain, open_sweep
    from reidlib.analysis.export import export_best
    from reidlib.sweep import run_sweep
    from reidlib.trial import read_trial_notebook

    monkeypatch.chdir(REPO)
    runs = tmp_path / "runs"
    training = run_sweep(write_spec({"name": "tiny", "method": "grid", "parameters": {"base_lr": [0.003], "max_epochs": 1}},
                                    "train.yaml"), runs_dir=runs, project_dir=REPO, wandb="disabled", progress=False)
    trained = open_sweep(training.directory).best_run()

    spec = tmp_path / "rerank.yaml"
    spec.write_text(yaml.safe_dump({"name": "rerank", "from": training.sweep_id, "method": "grid",
                                    "parameters": {"TEST.RE_RANKING": ["no", "yes"], "TEST.RERANK_K1": [3],
                                                   "TEST.RERANK_K2": [1]}}))
    result = run_sweep(spec, runs_dir=runs, project_dir=REPO, wandb="disabled", progress=False)
    assert [t.state for t in result.trials] == ["finished", "finished"]
    for t in result.trials:
        params, epochs, summary = read_trial_notebook(t.notebook)
        assert [e["epoch"] for e in epochs] == [1] and set(VAL_KEYS) <= set(epochs[0])  # val/* once, as epoch 1
        assert not set(TEST_KEYS) & set(epochs[0]) and not summary.get("test")  # selected on val/*: test/* at finalize
        assert summary["val_ids"] == trained.summary["val_ids"] == 2  # the trained run's held-out identities
        assert summary["max_epochs"] == summary["epochs_run"] == 1
        assert params["overrides"]["TEST.WEIGHT"] == str(trained.checkpoint)
    plain = next(t for t in result.trials if t.params["TEST.RE_RANKING"] == "no")
    # the trained run's own options on its own weights: its numbers again, from no training
    assert plain.summary["last"]["val/mAP"] == pytest.approx(trained.summary["last/val/mAP"])
    assert len(list(Path(str(trained.checkpoint) + ".features").glob("*.pt"))) == 2  # the second trial read them

    evaluation = open_sweep(result.directory)
    assert evaluation.config["from"] == f"{training.directory.resolve()}/{trained.name}"
    gain = evaluation_gain(evaluation)
    best = evaluation.best_run()
    assert gain.loc["TEST.RE_RANKING"].iloc[1] == best.effective_config["TEST.RE_RANKING"]
    assert gain.loc["val/mAP", "gain"] == pytest.approx(best.summary["last/val/mAP"] - trained.summary["last/val/mAP"])
    assert "finalize" in gain.loc["test/*"].iloc[1]  # not measured yet
    from reidlib.sweep.evaluation_spec import resolve_evaluation
    from reidlib.sweep.spec import load_spec

    spec.write_text(yaml.safe_dump({"from": training.sweep_id, "method": "grid",
                                    "parameters": {"TEST.CHECKPOINT_EPOCH": [0, 1, 5]}}))
    with pytest.raises(SpecError, match=r"^parameters\.TEST\.CHECKPOINT_EPOCH: expected values among 0 .* \(\[1\]\), "
                                        r"got \[0, 1, 5\]$"):
        resolve_evaluation(load_spec(spec), runs)  # the trained run kept epoch 1 only
    paths = export_best(evaluation)
    chosen = yaml.safe_load(paths["config"].read_text())
    assert chosen["TEST"]["RE_RANKING"] == best.effective_config["TEST.RE_RANKING"]
    assert chosen["TEST"]["WEIGHT"] == str(trained.checkpoint) and chosen["SOLVER"]["BASE_LR"] == trained.config["base_lr"]

    # final/: the trained sweep's final model (finalized on the way), tested once with the chosen keys
    from reidlib.sweep.finalize import finalize, read_final

    final = finalize(result.directory, best.name, wandb="disabled")
    source_final = read_final(training.directory)
    assert source_final["trial"] == trained.name and final["checkpoint"] == str(Path(source_final["checkpoint"]).resolve())
    params, epochs, summary = read_trial_notebook(final["notebook"])
    assert Path(final["notebook"]).name == "evaluate.ipynb" and set(final["test"]) == set(TEST_KEYS)
    assert params["overrides"]["TEST.RE_RANKING"] == best.effective_config["TEST.RE_RANKING"]
    assert summary["val_ids"] == 0 and summary["test"] == final["test"]
    gain = evaluation_gain(evaluation)  # test/* once each way, on the trained sweep's final model
    assert gain.loc["test/mAP (final models)"].iloc[:2].tolist() == [source_final["test"]["test/mAP"],
                                                                     final["test"]["test/mAP"]]
    assert "test/*" not in gain.index
    from reidlib.sweep.evaluation_spec import find_trained_run

    finalized = find_trained_run(f"{training.sweep_id}/final", runs)  # what from: <sweep-id>/final evaluates
    assert finalized.checkpoint == Path(source_final["checkpoint"]) and finalized.config["DATASETS.VAL_IDS"] == 0
