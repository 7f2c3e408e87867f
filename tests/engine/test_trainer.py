"""The training loop's contract with its callbacks: metrics per epoch, stop, divergence, OOM, resume."""
from __future__ import annotations

import math

import pytest
import torch

from reidlib.data.build import make_data_loaders
from reidlib.engine import do_train, seed_everything
from reidlib.modeling import make_model
from reidlib.trial import EPOCH_KEYS, VAL_KEYS, build_config, make_summary


class Recorder:
    def __init__(self, stop_after: int | None = None):
        self.epochs, self.result, self.stop_after = [], None, stop_after

    def on_epoch_end(self, metrics):
        self.epochs.append(metrics)
        return self.stop_after is not None and metrics["epoch"] >= self.stop_after

    def on_train_end(self, result):
        self.result = result


def setup(tiny_config, tmp_path, **aliases):
    cfg = build_config(str(tiny_config), output_dir=str(tmp_path), **aliases)
    seed_everything(cfg.SEED)
    loaders = make_data_loaders(cfg)
    return cfg, loaders, make_model(cfg, loaders.num_classes)


def test_every_epoch_reaches_the_callbacks_and_stop_is_honoured(tiny_config, tmp_path):
    cfg, loaders, model = setup(tiny_config, tmp_path, max_epochs=4)
    rec = Recorder(stop_after=2)
    result = do_train(cfg, model, loaders, [rec])
    assert [m["epoch"] for m in rec.epochs] == [1, 2]
    assert set(EPOCH_KEYS) | set(VAL_KEYS) <= set(rec.epochs[0])
    assert result.status == "stopped_early" and rec.result is result
    assert (tmp_path / "checkpoint.pth").is_file()  # a stopped trial keeps what it learned


def test_non_finite_loss_ends_training_at_once(tiny_config, tmp_path):
    cfg, loaders, model = setup(tiny_config, tmp_path, max_epochs=5, optimizer="SGD", base_lr=1e30)
    rec = Recorder()
    result = do_train(cfg, model, loaders, [rec])
    assert result.status == "diverged"
    assert result.epochs_run < 5 and math.isnan(rec.epochs[-1]["train/loss"])
    assert make_summary(result, 5)["status"] == "diverged"


def test_cuda_oom_is_recorded_then_raised(tiny_config, tmp_path):
    cfg, loaders, _ = setup(tiny_config, tmp_path)

    class OutOfMemory(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    rec = Recorder()
    with pytest.raises(torch.cuda.OutOfMemoryError):
        do_train(cfg, OutOfMemory(), loaders, [rec])
    assert rec.result.status == "oom"
    assert rec.result.error == "CUDA out of memory. Tried to allocate 20.00 GiB"


def test_resume_continues_after_the_checkpoint(tiny_config, tmp_path):
    cfg, loaders, model = setup(tiny_config, tmp_path, max_epochs=2)
    do_train(cfg, model, loaders)
    cfg3, loaders3, model3 = setup(tiny_config, tmp_path, max_epochs=3)
    rec = Recorder()
    do_train(cfg3, model3, loaders3, [rec], resume=str(tmp_path / "checkpoint.pth"))
    assert [m["epoch"] for m in rec.epochs] == [3]
    assert rec.epochs[0]["train/lr"] == pytest.approx(cfg3.SOLVER.BASE_LR)  # the schedule resumed too


def test_each_saved_epoch_is_kept_by_a_copy_where_hard_links_fail(tmp_path, monkeypatch):
    import os

    from reidlib.engine.trainer import save_checkpoint
    from reidlib.trial import kept_epochs

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    checkpoint = tmp_path / "checkpoint.pth"
    save_checkpoint(checkpoint, model, optimizer, scheduler, 1)

    def no_links(*args):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    save_checkpoint(checkpoint, model, optimizer, scheduler, 2)
    assert kept_epochs(checkpoint) == [1, 2] and sorted(p.name for p in tmp_path.iterdir()) == \
        ["checkpoint.pth", "checkpoint_epoch1.pth", "checkpoint_epoch2.pth"]  # no temporary file left
    assert [torch.load(checkpoint.with_name(f"checkpoint_epoch{e}.pth"), weights_only=True)["epoch"] for e in (1, 2)] == [1, 2]
    assert not checkpoint.with_name("checkpoint_epoch2.pth").samefile(checkpoint)  # a copy


def test_a_checkpoint_with_one_optimiser_group_per_parameter_is_refused_by_name(tiny_config, tmp_path):
    from reidlib.errors import ConfigError

    cfg, loaders, model = setup(tiny_config, tmp_path, max_epochs=1)
    old = torch.optim.Adam([{"params": [p]} for p in model.parameters()], lr=1e-3)  # the layout upstream saves
    torch.save({"model": model.state_dict(), "optimizer": old.state_dict(), "scheduler": {}, "epoch": 1},
               tmp_path / "old.pth")
    with pytest.raises(ConfigError, match="resume: .*old.pth was saved with one optimiser group per parameter"):
        do_train(cfg, model, loaders, resume=str(tmp_path / "old.pth"))


def test_center_loss_trains_and_checkpoints_its_centers_stepped_at_center_lr(tiny_config, tmp_path):
    cfg, loaders, model = setup(tiny_config, tmp_path, max_epochs=1)
    cfg = build_config(str(tiny_config), {"MODEL.IF_WITH_CENTER": "yes", "MODEL.METRIC_LOSS_TYPE": "triplet_center",
                                          "SOLVER.CENTER_LR": 0.37}, output_dir=str(tmp_path), max_epochs=1)
    result = do_train(cfg, model, loaders)
    assert result.status == "finished"
    saved = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert "center" in saved
    # the centers have their own SGD at SOLVER.CENTER_LR (upstream's optimizer_center), not the model's lr
    assert [group["lr"] for group in saved["center_optimizer"]["param_groups"]] == [0.37] != [cfg.SOLVER.BASE_LR]


def test_any_other_error_is_recorded_as_failed_then_raised(tiny_config, tmp_path):
    cfg, loaders, model = setup(tiny_config, tmp_path, max_epochs=3)

    class Boom:
        def on_epoch_end(self, metrics):
            if metrics["epoch"] == 2:
                raise RuntimeError("disk full")
            return False

        def on_train_end(self, result):
            self.result = result

    boom, rec = Boom(), Recorder()
    with pytest.raises(RuntimeError, match="disk full"):
        do_train(cfg, model, loaders, [rec, boom])
    assert boom.result.status == "failed" and boom.result.error == "RuntimeError: disk full"
    assert [m["epoch"] for m in rec.epochs] == [1, 2]  # what was done before stays recorded


def test_a_standalone_run_logs_to_wandb_when_asked(tiny_config, tmp_path, monkeypatch):
    import wandb

    from reidlib.trial import callbacks

    class Run:
        logged, summary, finished = [], {}, None

        def define_metric(self, *args, **kwargs):
            pass

        def log(self, row):
            self.logged.append(row)

        def finish(self, exit_code=0):
            self.finished = exit_code

    inits = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: inits.append(kwargs) or Run())
    cfg = build_config(str(tiny_config), {"WANDB.NAME": "lr-probe", "WANDB.TAGS": ["bot", "cpu"]},
                       output_dir=str(tmp_path), max_epochs=2, wandb_project="my-reid")
    seed_everything(cfg.SEED)
    loaders = make_data_loaders(cfg)
    model = make_model(cfg, loaders.num_classes)
    monkeypatch.setattr("reidlib.trial.glue", lambda name, data: None)  # no notebook here to glue into
    [_, recorder] = callbacks(cfg)
    do_train(cfg, model, loaders, [recorder])
    assert inits[0]["project"] == "my-reid" and inits[0]["config"]["SOLVER.MAX_EPOCHS"] == 2
    assert inits[0]["name"] == "lr-probe" and inits[0]["tags"] == ["bot", "cpu"]  # WANDB.NAME and WANDB.TAGS reach W&B
    assert [row["epoch"] for row in recorder.run.logged] == [1, 2]
    assert recorder.run.summary["status"] == "finished" and recorder.run.finished == 0
    driven = build_config(str(tiny_config), {"WANDB.ENABLE": False})
    assert [type(cb).__name__ for cb in callbacks(driven)] == ["ScrapRecorder"]  # under the driver: no wandb.init
