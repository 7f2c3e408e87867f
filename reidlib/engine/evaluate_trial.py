"""An evaluation trial: a trained checkpoint (``TEST.WEIGHT``, as reid-strong-baseline's test.py, or one of
the epochs kept beside it, ``TEST.CHECKPOINT_EPOCH``) evaluated with the config's test-time options
(``TEST.RE_RANKING``, ``TEST.RERANK_*``, ``TEST.NECK_FEAT``, ``TEST.FEAT_NORM``), without training.

It keeps the trial contract of a training trial, so sweeps, the ledger and the analysis read it
unchanged: one "epoch" 1 carrying ``val/*`` (the held-out identities of the trained run's split, which
the trained run's own ``DATASETS.VAL_IDS``/``VAL_SEED`` rebuild), then ``test/*`` (query/gallery) once
unless ``TEST.EVAL_TEST_SET`` is 'no', as in an evaluation sweep's trials: they select on ``val/*``, and the
test split's distances (3,368 x 15,913 at Market size) would be most of each trial's time.

Features are cached beside the checkpoint (``<checkpoint>.features/``), one file per list of images,
keyed by what changes them: the checkpoint file (size and modification time: a checkpoint written
again is a new cache), the images (paths, ids, cameras), ``INPUT.SIZE_TEST``, the normalisation, the
architecture and ``TEST.NECK_FEAT``. Re-ranking and ``TEST.FEAT_NORM`` act on the cached features, so a
second trial with other values builds no model and reads no image. Entries are written atomically
(a temporary file renamed); those of an older checkpoint are removed when a new one is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from reidlib import trial as contract
from reidlib.data import make_dataset
from reidlib.data.build import TEST, VAL, make_evaluation_loader
from reidlib.devices import resolve_device
from reidlib.engine.inference import extract_features
from reidlib.engine.trainer import TrainResult, _peak_mem_mb
from reidlib.errors import ConfigError
from reidlib.evaluation import evaluate_features, rerank_options
from reidlib.trial import EPOCH_CHECKPOINT, TrialStatus, kept_epochs

FEATURE_KEYS = ("INPUT.SIZE_TEST", "INPUT.PIXEL_MEAN", "INPUT.PIXEL_STD", "MODEL.NAME", "MODEL.LAST_STRIDE",
                "MODEL.NECK", "MODEL.STEM_RELU", "TEST.NECK_FEAT")  # the config keys that change a feature


def checkpoint_path(cfg) -> Path:
    """``TEST.WEIGHT``, or its epoch ``TEST.CHECKPOINT_EPOCH``'s checkpoint kept beside it."""
    path = Path(cfg.TEST.WEIGHT).expanduser() if cfg.TEST.WEIGHT else None
    if path is None or not path.is_file():
        raise ConfigError("TEST.WEIGHT", f"expected a trained checkpoint.pth to evaluate, got {cfg.TEST.WEIGHT!r}")
    path = path.resolve()  # best/model.pth is a link: its features are cached beside the file it points at
    if cfg.TEST.CHECKPOINT_EPOCH:
        kept = kept_epochs(path)
        if cfg.TEST.CHECKPOINT_EPOCH not in kept:
            raise ConfigError("TEST.CHECKPOINT_EPOCH", f"expected 0 or an epoch kept beside {path} ({kept or 'none'}), "
                                                       f"got {cfg.TEST.CHECKPOINT_EPOCH}")
        path = path.with_name(EPOCH_CHECKPOINT.format(cfg.TEST.CHECKPOINT_EPOCH))
    return path


class FeatureCache:
    """Features of a checkpoint under ``cfg``'s test-time options, computed once per list of images.

    The model is built (from the checkpoint) only when an entry is missing."""

    def __init__(self, cfg, device: torch.device | None = None):
        self.cfg = cfg
        self.checkpoint = checkpoint_path(cfg)
        self.device = device or resolve_device(cfg.MODEL.DEVICE)
        self.directory = self.checkpoint.with_name(f"{self.checkpoint.name}.features")
        stat = self.checkpoint.stat()
        self.stamp = f"{stat.st_size}-{stat.st_mtime_ns}"  # changes whenever the checkpoint is written again
        self._model = None
        self.extracted = 0  # lists of images run through the model by this cache (the rest were read)

    def path(self, samples) -> Path:
        from reidlib.config import flat_keys

        config = dict(flat_keys(self.cfg))
        key = json.dumps({"samples": samples, **{k: config[k] for k in FEATURE_KEYS}}, default=list, sort_keys=True)
        return self.directory / f"{self.stamp}-{hashlib.sha1(key.encode()).hexdigest()[:20]}.pt"

    def features(self, samples):
        """``(features, pids, camids)`` of ``samples`` (features on the device, as ``extract_features``)."""
        path = self.path(samples)
        if path.is_file():
            entry = torch.load(path, map_location=self.device, weights_only=True)
            return entry["feats"], entry["pids"].numpy(), entry["camids"].numpy()
        feats, pids, camids = extract_features(self.model(), make_evaluation_loader(self.cfg, samples), self.device)
        self.extracted += 1
        self._write(path, {"feats": feats.cpu(), "pids": torch.from_numpy(pids), "camids": torch.from_numpy(camids)})
        return feats, pids, camids

    def _write(self, path: Path, entry: dict) -> None:
        self.directory.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parallel trials never share a temporary file
        torch.save(entry, tmp)
        tmp.replace(path)
        for old in self.directory.glob("*.pt"):  # an earlier checkpoint's features
            if not old.name.startswith(f"{self.stamp}-"):
                old.unlink(missing_ok=True)

    def model(self) -> torch.nn.Module:
        if self._model is None:
            from reidlib.modeling import make_model

            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            state = state.get("model", state)
            cfg = self.cfg.clone()
            cfg.defrost()
            cfg.MODEL.PRETRAIN_CHOICE = "none"  # the checkpoint holds every weight
            self._model = make_model(cfg, num_classes=state["classifier.weight"].shape[0])
            self._model.load_state_dict(state)
            self._model.to(self.device)
        return self._model


def evaluate_split(cfg, cache: FeatureCache, query, gallery, split: str):
    """``(<split>/* metrics, CMC curve)`` of the cached features of ``query`` against ``gallery``."""
    q_feats, q_pids, q_camids = cache.features(query)
    g_feats, g_pids, g_camids = cache.features(gallery)
    return evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, split=split,
                             feat_norm=cfg.TEST.FEAT_NORM == "yes", rerank=rerank_options(cfg.TEST, cache.device))


def evaluate_checkpoint(cfg, callbacks=()) -> TrainResult:
    """Evaluate ``TEST.WEIGHT`` under ``cfg``: epoch 1 is ``val/*``, then ``test/*`` once (``TEST.EVAL_TEST_SET``). A ``STOP`` file in
    ``OUTPUT_DIR`` before it starts ends it at once (status 'stopped_early', nothing evaluated)."""
    cache = FeatureCache(cfg)
    dataset = make_dataset(cfg)  # lists the files and rebuilds the trained run's validation split
    held_out = bool(dataset.val_query)
    result = TrainResult(status=TrialStatus.FINISHED, checkpoint=str(cache.checkpoint),
                         val_ids=len({pid for _, pid, _ in dataset.val_query}))
    start = time.perf_counter()
    try:
        if contract.stop_requested(cfg.OUTPUT_DIR):
            result.status = TrialStatus.STOPPED_EARLY
        else:
            val_pair = (dataset.val_query, dataset.val_gallery) if held_out else (dataset.query, dataset.gallery)
            val, cmc = evaluate_split(cfg, cache, *val_pair, VAL)
            result.cmc = [float(c) for c in cmc]
            result.history.append({"epoch": 1, **val, "time/epoch_s": time.perf_counter() - start,
                                   "gpu/peak_mem_mb": _peak_mem_mb(cache.device)})
            for cb in callbacks:
                cb.on_epoch_end(result.history[-1])  # a stop now cuts nothing short: epoch 1 is the last
            if cfg.TEST.EVAL_TEST_SET == "yes" and held_out:
                result.test = evaluate_split(cfg, cache, dataset.query, dataset.gallery, TEST)[0]
            elif cfg.TEST.EVAL_TEST_SET == "yes":  # val/* already is query/gallery (as a training trial without a split)
                result.test = {f"{TEST}/{k.split('/', 1)[1]}": v for k, v in val.items()}
    except torch.cuda.OutOfMemoryError as err:
        result.status, result.error = TrialStatus.OOM, str(err).splitlines()[0]
        raise
    except BaseException as err:
        result.status, result.error = TrialStatus.FAILED, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise
    finally:
        result.wall_time_s = time.perf_counter() - start
        result.peak_mem_mb = _peak_mem_mb(cache.device)
        for cb in callbacks:
            cb.on_train_end(result)
    return result
