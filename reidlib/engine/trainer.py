"""A plain PyTorch training loop. It knows nothing of logging or sweeps: after every epoch it hands
a metrics dict to its callbacks, and any callback may ask it to stop.

Two evaluations: ``val/*`` every ``SOLVER.EVAL_PERIOD`` epochs on the held-out training identities
(``DATASETS.VAL_IDS``; query/gallery when none are held out, as upstream), and ``test/*`` on
query/gallery once, when training ends (finished or stopped early), of the final weights
(``TEST.EVAL_TEST_SET``).

The untrained network's ``val/*`` (``TEST.EVAL_BEFORE_TRAINING``) is one figure for every trial of a
sweep that starts from the same weights on the same validation split, so under a sweep driver it is
computed once: ``evaluate_untrained`` files it under a hash of everything it depends on, and a later
trial with the same hash reads it instead of evaluating again."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from reidlib.config import flat_keys
from reidlib.data.build import TEST, VAL
from reidlib.data.image_cache import split_key
from reidlib.devices import resolve_device
from reidlib.engine.inference import extract_features
from reidlib.errors import ConfigError
from reidlib.evaluation import evaluate_features, rerank_options
from reidlib.losses import make_loss
from reidlib.solver import make_optimizer, make_scheduler
from reidlib.trial import CHECKPOINT_FILE, EPOCH_CHECKPOINT, UNTRAINED_CACHE_ENV, TrialStatus

log = logging.getLogger(__name__)

AMP_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # SOLVER.AMP; CUDA only


class Callback(Protocol):
    def on_epoch_end(self, metrics: dict) -> bool:
        """Receives one epoch's metrics; returning True asks the loop to stop after this epoch."""

    def on_train_end(self, result: "TrainResult") -> None:
        """Receives the result once training ends, however it ends."""


@dataclass
class TrainResult:
    status: TrialStatus
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    peak_mem_mb: float | None = None  # CUDA's peak allocation; None on a CPU, which has no such figure
    checkpoint: str | None = None
    error: str | None = None
    untrained: dict = field(default_factory=dict)  # val/* of the untrained model (TEST.EVAL_BEFORE_TRAINING)
    test: dict = field(default_factory=dict)  # test/* (query/gallery) of the final weights, once at the end
    val_ids: int = 0  # identities in the validation split val/* is measured on; 0: val/* is query/gallery
    cmc: list[float] = field(default_factory=list)  # CMC curve of the last evaluation (rank 1..50)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _peak_mem_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def do_train(cfg, model: torch.nn.Module, loaders, callbacks: Sequence[Callback] = (),
             resume: str | None = None) -> TrainResult:
    """Train ``model`` for ``SOLVER.MAX_EPOCHS`` epochs, evaluating every ``SOLVER.EVAL_PERIOD``
    epochs and at the last one. A non-finite loss ends training at once (status 'diverged').
    ``resume`` continues from a checkpoint of ``save_checkpoint`` (model, optimiser, schedule, epoch)."""
    device = resolve_device(cfg.MODEL.DEVICE)
    model.to(device)
    amp_dtype = AMP_DTYPES[cfg.SOLVER.AMP] if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.DETERMINISTIC  # fixed input size: pick the fastest kernels once
        if cfg.MODEL.CHANNELS_LAST == "yes":
            model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)  # fp16 gradients underflow
    # training batches have one shape, so a compiled model is compiled once; evaluation stays eager
    train_model = torch.compile(model) if device.type == "cuda" and cfg.SOLVER.COMPILE == "yes" else model
    loss_fn = make_loss(cfg, loaders.num_classes, getattr(model, "in_planes", 0)).to(device)
    optimizer = make_optimizer(cfg, model)
    center_optimizer = torch.optim.SGD(loss_fn.center.parameters(), lr=cfg.SOLVER.CENTER_LR) if loss_fn.center else None
    scheduler = make_scheduler(cfg, optimizer)
    checkpoint = Path(cfg.OUTPUT_DIR) / CHECKPOINT_FILE if cfg.OUTPUT_DIR else None
    first_epoch = load_checkpoint(resume, model, optimizer, scheduler, device, loss_fn, center_optimizer) + 1 if resume else 1
    result = TrainResult(status=TrialStatus.FINISHED, val_ids=len({pid for _, pid, _ in loaders.dataset.val_query}))
    start = time.perf_counter()
    max_epochs = cfg.SOLVER.MAX_EPOCHS
    try:
        if cfg.TEST.EVAL_BEFORE_TRAINING == "yes" and not resume:
            result.untrained = evaluate_untrained(cfg, model, loaders, device)
        for epoch in range(first_epoch, max_epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            scheduler.step()  # when the epoch starts, as upstream's ignite trainer: epoch e trains at last_epoch e
            lr = optimizer.param_groups[0]["lr"]  # the lr this epoch trains with (weights' group)
            totals, seen = torch.zeros(2, device=device), 0  # loss sum, correct: read once per epoch
            for images, pids, _ in loaders.train:
                images, pids = images.to(device, non_blocking=True), pids.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    scores, feats = train_model(images)
                scores, feats = scores.float(), feats.float()  # the losses (distances, softmax) in float32
                loss = loss_fn(scores, feats, pids)
                if not torch.isfinite(loss):  # waits for the GPU, costing a launch's latency once it is busy
                    result.status = TrialStatus.DIVERGED
                    break
                optimizer.zero_grad(set_to_none=True)
                if center_optimizer:
                    center_optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                if center_optimizer:
                    # undo the loss weight on the centers' gradient: CENTER_LR alone sets their step (upstream)
                    for param in loss_fn.center.parameters():
                        param.grad.mul_(1.0 / cfg.SOLVER.CENTER_LOSS_WEIGHT)
                    scaler.step(center_optimizer)
                scaler.update()
                totals += torch.stack([loss.detach() * len(pids), (scores.argmax(1) == pids).sum()])
                seen += len(pids)
            loss_sum, correct = totals.tolist()
            metrics = {"epoch": epoch,
                       "train/loss": loss_sum / seen if seen else float("nan"),
                       "train/acc": correct / seen if seen else 0.0,
                       "train/lr": lr}
            if result.status == TrialStatus.DIVERGED:
                metrics["train/loss"] = float("nan")
            elif epoch % cfg.SOLVER.EVAL_PERIOD == 0 or epoch == max_epochs:
                val, cmc = evaluate(cfg, model, loaders, device, VAL)
                metrics.update(val)
                result.cmc = [float(c) for c in cmc]
            metrics["time/epoch_s"] = time.perf_counter() - epoch_start
            metrics["gpu/peak_mem_mb"] = _peak_mem_mb(device)
            result.history.append(metrics)
            stop = [cb.on_epoch_end(metrics) for cb in callbacks]
            if result.status == TrialStatus.DIVERGED:
                break
            if checkpoint and (epoch % cfg.SOLVER.CHECKPOINT_PERIOD == 0 or epoch == max_epochs or any(stop)):
                save_checkpoint(checkpoint, model, optimizer, scheduler, epoch, loss_fn, center_optimizer)
                result.checkpoint = str(checkpoint)
            if any(stop) and epoch < max_epochs:  # a stop at the last epoch cuts nothing short
                result.status = TrialStatus.STOPPED_EARLY
                break
        if result.status != TrialStatus.DIVERGED and result.history and cfg.TEST.EVAL_TEST_SET == "yes":
            result.test = evaluate_test(cfg, model, loaders, device, result.history[-1])
    except torch.cuda.OutOfMemoryError as err:
        result.status, result.error = TrialStatus.OOM, str(err).splitlines()[0]
        raise
    except BaseException as err:  # recorded in the summary, then the notebook shows the traceback
        result.status, result.error = TrialStatus.FAILED, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise
    finally:
        result.wall_time_s = time.perf_counter() - start
        result.peak_mem_mb = _peak_mem_mb(device)
        for cb in callbacks:
            cb.on_train_end(result)
    return result


def evaluate(cfg, model, loaders, device, split: str = VAL):
    """``(<split>/* metrics, CMC curve)`` of ``model`` on ``split``'s query and gallery
    (``DataLoaders.evaluation_pair``)."""
    query, gallery = loaders.evaluation_pair(split)
    q_feats, q_pids, q_camids = extract_features(model, query, device)
    g_feats, g_pids, g_camids = extract_features(model, gallery, device)
    return evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, split=split,
                             feat_norm=cfg.TEST.FEAT_NORM == "yes", rerank=rerank_options(cfg.TEST, device))


# what an evaluation of given weights depends on besides them and the images (SOLVER.* and the training
# augmentations do not enter it)
EVALUATION_KEYS = ("MODEL.", "TEST.", "DATASETS.", "INPUT.SIZE_TEST", "INPUT.PIXEL_MEAN", "INPUT.PIXEL_STD",
                   "DETERMINISTIC")


def untrained_key(cfg, model, loaders, device) -> str:
    """SHA-256 of the model's weights, the validation split's images (paths, sizes, mtimes), the config
    keys an evaluation reads, the device type and torch's version."""
    digest = hashlib.sha256(json.dumps([torch.__version__, device.type, [
        (k, v) for k, v in flat_keys(cfg) if k.startswith(EVALUATION_KEYS)]], default=str).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(flat.view(torch.uint8).numpy().data)
    d = loaders.dataset
    evaluated = d.val_query + d.val_gallery if loaders.has_val_split else d.query + d.gallery
    digest.update(split_key(evaluated, cfg.INPUT.SIZE_TEST))
    return digest.hexdigest()


def evaluate_untrained(cfg, model, loaders, device) -> dict:
    """``val/*`` of the untrained ``model``: read from ``$REID_SWEEP_UNTRAINED_CACHE/<untrained_key>.json``
    when an earlier trial of the sweep wrote it, else evaluated (and written there when that is set:
    a temporary file renamed, so a reader sees all of it or nothing)."""
    directory = os.environ.get(UNTRAINED_CACHE_ENV)
    if not directory:
        return evaluate(cfg, model, loaders, device, VAL)[0]
    path = Path(directory) / f"{untrained_key(cfg, model, loaders, device)}.json"
    try:
        metrics = json.loads(path.read_text())
        log.info("untrained val/* from %s (an earlier trial of this sweep evaluated the same weights)", path)
        return metrics
    except (OSError, ValueError):  # none yet, or unreadable: evaluate
        pass
    metrics = evaluate(cfg, model, loaders, device, VAL)[0]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(metrics))
        tmp.replace(path)
    except OSError as err:  # the next trial evaluates again; this one has its figure
        log.warning("could not keep the untrained evaluation in %s: %s", path, err)
        tmp.unlink(missing_ok=True)
    return metrics


def evaluate_test(cfg, model, loaders, device, last_epoch: dict) -> dict:
    """``test/*`` of the final weights. Without a validation split ``val/*`` already is query/gallery:
    the last epoch's evaluation is reused when it was of these weights."""
    if not loaders.has_val_split and "val/mAP" in last_epoch:
        return {f"{TEST}/{key.split('/', 1)[1]}": value for key, value in last_epoch.items() if key.startswith(f"{VAL}/")}
    return evaluate(cfg, model, loaders, device, TEST)[0]



def save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, criterion=None, center_optimizer=None) -> None:
    """Write to a new temporary file then rename: a crash never leaves a half-written checkpoint, a full
    disk leaves no partial file, and a symlink planted at either name is never followed. The epoch's
    checkpoint stays beside it as ``EPOCH_CHECKPOINT`` (an evaluation sweep may pick the epoch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch}
    if center_optimizer is not None:
        state.update(center=criterion.center.state_dict(), center_optimizer=center_optimizer.state_dict())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.unlink(missing_ok=True)  # a crashed save's leftover, or a planted link: O_EXCL then never follows
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as out:
            torch.save(state, out)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # the epoch's own name for the same file (a hard link: no copy); the next save replaces ``path`` only
    kept = path.with_name(EPOCH_CHECKPOINT.format(epoch))
    try:
        os.link(path, tmp)
    except OSError:  # a filesystem without hard links: a copy
        shutil.copyfile(path, tmp)
    os.replace(tmp, kept)


def load_checkpoint(path: str, model, optimizer, scheduler, device, criterion=None, center_optimizer=None) -> int:
    """Restore a ``save_checkpoint`` file; returns the epoch it was saved after."""
    if not Path(path).is_file():
        raise ConfigError("resume", f"checkpoint not found: {path}")
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    if len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):
        raise ConfigError("resume", f"{path} was saved with one optimiser group per parameter (before reid-sweep "
                                    "grouped weights and biases); train again from the start or load its model only")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if center_optimizer is not None and "center" in state:
        criterion.center.load_state_dict(state["center"])
        center_optimizer.load_state_dict(state["center_optimizer"])
    return int(state["epoch"])
