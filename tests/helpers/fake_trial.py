"""Fake trial notebooks for driver tests: the real trial contract (parameters, config/epoch/summary
scraps, STOP file) with a made-up metric instead of training, so a sweep of them takes seconds."""
from __future__ import annotations

from pathlib import Path

import nbformat

PARAMETERS = '''config_file = None
overrides = {}
base_lr = None
ims_per_batch = None
max_epochs = None
output_dir = None
seed = None'''

HEADER = '''import math, os, time
from reidlib import trial
cfg = trial.build_config(config_file, overrides, **trial.aliases_from(globals()))
trial.glue(trial.CONFIG, {"SOLVER.IMS_PER_BATCH": cfg.SOLVER.IMS_PER_BATCH, "DATALOADER.NUM_INSTANCE": cfg.DATALOADER.NUM_INSTANCE,
                          "DATALOADER.SAMPLER": cfg.DATALOADER.SAMPLER})
lr = cfg.SOLVER.BASE_LR
status, history = "finished", []'''

# val/mAP rises with epochs, fastest for lr near 1e-3: a deterministic landscape for the search.
EPOCHS = '''for epoch in range(1, cfg.SOLVER.MAX_EPOCHS + 1):
    time.sleep(EPOCH_SECONDS)
    quality = math.exp(-abs(math.log10(lr) + 3))
    row = {"epoch": epoch, "train/loss": 1 / epoch, "train/acc": 0.5, "train/lr": lr, "time/epoch_s": EPOCH_SECONDS,
           "gpu/peak_mem_mb": 0.0, "val/mAP": quality * epoch / cfg.SOLVER.MAX_EPOCHS, "val/mINP": 0.1,
           "val/rank1": 0.5, "val/rank5": 0.6, "val/rank10": 0.7}
    EXTRA
    history.append(row)
    trial.glue(trial.epoch_scrap_name(epoch), row)
    trial.await_verdict(cfg.OUTPUT_DIR, epoch)
    if trial.stop_requested(cfg.OUTPUT_DIR):
        status = "stopped_early"
        break
best = max(r["val/mAP"] for r in history)
trial.glue(trial.SUMMARY, {"status": status, "epochs_run": len(history), "max_epochs": cfg.SOLVER.MAX_EPOCHS,
                           "best": {"val/mAP": best}, "last": {"val/mAP": history[-1]["val/mAP"]}, "wall_time_s": 0.1})'''


def write_fake_trial(path: Path, extra: str = "pass", epoch_seconds: float = 0.05, prelude: str = "") -> Path:
    """A trial notebook; ``extra`` runs inside each epoch (``row``, ``epoch``, ``cfg`` in scope),
    ``prelude`` before training."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "reid-sweep", "display_name": "reid-sweep", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    body = EPOCHS.replace("EPOCH_SECONDS", repr(epoch_seconds)).replace("EXTRA", extra)
    nb.cells = [params, nbformat.v4.new_code_cell(HEADER + "\n" + prelude), nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# The sweep's directory from inside a trial (its output directory is <sweep>/<dir>/<trial name>).
_SWEEP_DIR = "__import__('pathlib').Path(cfg.OUTPUT_DIR).parents[1]"


def barrier(parties: int, timeout: float = 60) -> str:
    """``extra`` code: at its first epoch each trial signs in under its sweep's directory and waits
    until ``parties`` trials have, so that many trials provably run at once; a trial still alone
    after ``timeout`` seconds fails (AssertionError: ran alone)."""
    return (f"if epoch == 1:\n"
            f"        _signed = {_SWEEP_DIR} / 'barrier'\n"
            f"        _signed.mkdir(exist_ok=True)\n"
            f"        (_signed / os.path.basename(cfg.OUTPUT_DIR)).touch()\n"
            f"        _until = time.time() + {timeout}\n"
            f"        while len(os.listdir(_signed)) < {parties}:\n"
            f"            assert time.time() < _until, 'ran alone'\n"
            f"            time.sleep(0.02)")


def wait_for_file(name: str, epoch: int, timeout: float = 60) -> str:
    """``extra`` code: at ``epoch`` a trial waits until ``name`` exists in its sweep's directory
    (something outside has happened); after ``timeout`` seconds it fails (AssertionError: no <name>)."""
    return (f"if epoch == {epoch}:\n"
            f"        _until = time.time() + {timeout}\n"
            f"        while not ({_SWEEP_DIR} / {name!r}).exists():\n"
            f"            assert time.time() < _until, 'no {name}'\n"
            f"            time.sleep(0.02)")
